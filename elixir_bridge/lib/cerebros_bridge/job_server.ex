defmodule CerebrosBridge.JobServer do
  @moduledoc false
  # One submitted search, from its submit to its end. It is the pid Python sends the
  # job's messages to: it forwards events to the caller's `notify` pid and the result
  # to the owner (the process that started the job) as `{ref, result}`, then stops.
  # If the owner dies, the job is cancelled. When the application stops, running jobs
  # are cancelled and their cancelled results awaited (bounded), so the VM ends with no
  # search left running.

  use GenServer, restart: :temporary, shutdown: 10_000

  require Logger

  alias CerebrosBridge.{Error, Job}

  @cancel_wait_ms 8_000

  @spec start(module(), map(), CerebrosBridge.Config.t()) :: {:ok, Job.t()} | {:error, Error.t()}
  def start(transport, request, config) do
    case DynamicSupervisor.start_child(
           CerebrosBridge.JobSupervisor,
           {__MODULE__, {self(), transport, config}}
         ) do
      {:ok, pid} ->
        case GenServer.call(pid, {:submit, request}, :infinity) do
          # An exception in the submit (a term Pythonx cannot encode) is the caller's.
          {:raise, exception, stacktrace} -> reraise(exception, stacktrace)
          reply -> reply
        end

      {:error, reason} ->
        {:error, Error.new(:unavailable, "cannot start a job: #{inspect(reason)}")}
    end
  end

  def start_link(args), do: GenServer.start_link(__MODULE__, args)

  @impl true
  def init({owner, transport, config}) do
    Process.flag(:trap_exit, true)

    {:ok,
     %{
       owner: owner,
       watch: Process.monitor(owner),
       transport: transport,
       config: config,
       job: nil,
       host: nil
     }}
  end

  @impl true
  def handle_call({:submit, request}, _from, state) do
    # The Python process running the job (subprocess invoker): its end is the job's.
    host =
      with {:ok, pid} when is_pid(pid) <- state.transport.host(state.config),
           do: Process.monitor(pid),
           else: (_ -> nil)

    state = %{state | host: host}

    case state.transport.request(state.config, request, self()) do
      {:ok, %{"status" => "queued", "job_id" => id} = ack} ->
        job = %Job{id: id, run_id: ack["run_id"], pid: self(), ref: make_ref()}
        {:reply, {:ok, job}, %{state | job: job}}

      {:ok, answer} ->
        {:stop, :normal, CerebrosBridge.to_result(answer), state}

      {:error, error} ->
        {:stop, :normal, {:error, error}, state}
    end
  rescue
    exception -> {:stop, :normal, {:raise, exception, __STACKTRACE__}, state}
  end

  def handle_call(op, _from, state) when op in [:cancel, :status],
    do: {:reply, python(state, op), state}

  @impl true
  def handle_info({:cerebros_job, payload}, state) do
    case state.transport.decode_message(payload) do
      {:ok, %{"done" => result}} ->
        send(state.owner, {state.job.ref, CerebrosBridge.to_result(result)})
        {:stop, :normal, %{state | job: nil}}

      {:ok, %{"event" => event}} ->
        if state.config.notify, do: send(state.config.notify, {:cerebros_event, event})
        {:noreply, state}

      other ->
        Logger.warning("cerebros_bridge: job message dropped: #{inspect(other, limit: 10)}")
        {:noreply, state}
    end
  end

  def handle_info({:DOWN, ref, :process, _, _}, %{watch: ref} = state) do
    python(state, :cancel)
    {:stop, :normal, %{state | job: nil}}
  end

  def handle_info({:DOWN, ref, :process, _, reason}, %{host: ref} = state) do
    error =
      case reason do
        {:shutdown, %Error{} = error} ->
          error

        other ->
          Error.new(
            :worker_crashed,
            "the Python process running the job stopped: #{inspect(other)}"
          )
      end

    send(state.owner, {state.job.ref, {:error, error}})
    {:stop, :normal, %{state | job: nil}}
  end

  def handle_info(_message, state), do: {:noreply, state}

  @impl true
  def terminate(reason, %{job: %Job{}} = state)
      when reason == :shutdown or (is_tuple(reason) and elem(reason, 0) == :shutdown) do
    python(state, :cancel)
    wait_done(state, System.monotonic_time(:millisecond) + @cancel_wait_ms)
  end

  def terminate(_reason, _state), do: :ok

  defp wait_done(state, deadline) do
    receive do
      {:cerebros_job, _} = message ->
        with {:noreply, state} <- handle_info(message, state), do: wait_done(state, deadline)
    after
      max(deadline - System.monotonic_time(:millisecond), 0) -> :ok
    end
  end

  defp python(%{job: nil}, _op),
    do: {:error, Error.new(:not_running, "the job has already ended")}

  defp python(state, op) do
    request = %{"op" => Atom.to_string(op), "job_id" => state.job.id}

    with {:ok, answer} <- state.transport.request(state.config, request),
         do: CerebrosBridge.to_result(answer)
  end
end
