defmodule CerebrosBridge.Subprocess.Worker do
  @moduledoc false
  # One warm `python -m cerebros_service serve` process behind a Port, running
  # one request at a time for the pool. Request lines carry an id; the worker
  # answers zero or more `{"id", "event"}` lines, then one `{"id", "result"}`
  # line. Events go straight to the `notify` pid; the outcome goes to the pool
  # as `{:worker_done, worker, job_id, result, keep?}`. After a timeout or a
  # crash the worker kills its OS process group and stops (keep? = false); the
  # pool starts a fresh one when it next needs one.

  use GenServer, restart: :temporary

  alias CerebrosBridge.{Error, JSON}
  alias CerebrosBridge.Subprocess.Python

  @ops %{run_nas: "run", validate: "validate", ping: "ping"}

  @doc false
  @spec start_link({CerebrosBridge.Config.t(), pid()}) :: GenServer.on_start()
  def start_link({config, pool}), do: GenServer.start_link(__MODULE__, {config, pool})

  @doc false
  # Starts a request with `timeout` ms left of the caller's `timeout_ms`; the
  # outcome is sent to the pool.
  @spec run(pid(), reference(), atom(), map(), pid() | nil, timeout(), timeout()) :: :ok
  def run(worker, job_id, op, payload, notify, timeout, timeout_ms),
    do: GenServer.cast(worker, {:run, job_id, op, payload, notify, timeout, timeout_ms})

  @doc false
  # Kills the process (its caller is gone) and stops; nothing is sent back.
  @spec abort(pid()) :: :ok
  def abort(worker), do: GenServer.cast(worker, :abort)

  # stderr goes to a temporary file that the worker keeps open for reading;
  # its path is removed once Python has answered (the shell opened it for
  # appending long before), so no file outlives the worker, even when the VM
  # halts without stopping it.
  @impl true
  def init({config, pool}) do
    Process.flag(:trap_exit, true)
    path = Python.tmp_file("serve-stderr.log")
    File.write!(path, "")
    {:ok, stderr} = File.open(path, [:read, :binary])

    case Python.open(config, ["serve"], path) do
      {:ok, port, os_pid} ->
        {:ok,
         %{
           pool: pool,
           port: port,
           os_pid: os_pid,
           path: path,
           stderr: stderr,
           offset: 0,
           acc: [],
           job: nil,
           next_id: 1
         }}

      {:error, error} ->
        File.rm(path)
        {:stop, {:shutdown, error}}
    end
  end

  @impl true
  def handle_cast({:run, job_id, op, payload, notify, timeout, timeout_ms}, state) do
    id = state.next_id

    line =
      JSON.encode!(
        Map.merge(payload, %{"id" => id, "op" => Map.fetch!(@ops, op), "events" => notify != nil})
      )

    timer = timeout != :infinity && Process.send_after(self(), {:job_timeout, id}, timeout)
    job = %{id: id, job_id: job_id, notify: notify, timer: timer, timeout_ms: timeout_ms}
    state = %{state | job: job, next_id: id + 1}

    try do
      Port.command(state.port, [line, ?\n])
      {:noreply, state}
    rescue
      ArgumentError -> crashed(nil, state)
    end
  end

  def handle_cast(:abort, state) do
    kill(state)
    {:stop, :normal, %{state | port: nil}}
  end

  @impl true
  def handle_info({port, {:data, data}}, %{port: port} = state) do
    case Python.line(data, state.acc) do
      {:partial, acc} -> {:noreply, %{state | acc: acc}}
      {:line, line} -> handle_line(line, %{state | acc: []})
    end
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state),
    do: crashed(status, state)

  def handle_info({:job_timeout, id}, %{job: %{id: id} = job} = state) do
    kill(state)

    error =
      Error.new(:timeout, "no answer from Python within #{job.timeout_ms} ms (worker killed)", %{
        "timeout_ms" => job.timeout_ms,
        "os_pid" => state.os_pid,
        "stderr_tail" => Python.tail(state.stderr)
      })

    done({:error, error}, false, state)
    {:stop, :normal, %{state | port: nil, job: nil}}
  end

  def handle_info(_message, state), do: {:noreply, state}

  defp handle_line(line, %{job: job} = state) do
    state = unlink_stderr(state)

    case Python.decode_line(line) do
      {:ok, %{"event" => event} = message} when job != nil ->
        if job.notify && current?(message, job), do: send(job.notify, {:cerebros_event, event})
        {:noreply, state}

      {:ok, %{"result" => result} = message} when job != nil ->
        if current?(message, job) do
          if job.timer, do: Process.cancel_timer(job.timer)
          done(Python.to_result(result), true, state)

          {:noreply,
           %{state | job: nil, offset: Python.forward_stderr(state.stderr, state.offset)}}
        else
          {:noreply, state}
        end

      _ ->
        {:noreply, state}
    end
  end

  # An answer with a null id is the worker's reply to a line it could not read.
  defp current?(%{"id" => id}, job), do: id == job.id or id == nil
  defp current?(_message, _job), do: false

  defp crashed(status, state) do
    Python.close(state.port)
    error = Python.crashed(status, state.stderr, %{"os_pid" => state.os_pid})
    if state.job, do: done({:error, error}, false, state)
    {:stop, :normal, %{state | port: nil, job: nil}}
  end

  defp unlink_stderr(%{path: nil} = state), do: state

  defp unlink_stderr(state) do
    File.rm(state.path)
    %{state | path: nil}
  end

  defp done(result, keep?, %{job: job} = state),
    do: send(state.pool, {:worker_done, self(), job.job_id, result, keep?})

  defp kill(%{port: nil}), do: :ok
  defp kill(state), do: Python.kill(state.port, state.os_pid)

  @impl true
  def terminate(_reason, state) do
    kill(state)
    Python.forward_stderr(state.stderr, state.offset)
    if state.path, do: File.rm(state.path)
  end
end
