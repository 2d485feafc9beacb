defmodule CerebrosBridge.Subprocess.Pool do
  @moduledoc false
  # Warm `serve` workers, up to `pool_size` per {python_executable, python_path}.
  #
  # The pool is the only process that replies to callers: it hands a request
  # to an idle worker (starting one while fewer than `pool_size` exist), or
  # queues it until one is free. The caller's time limit covers the wait in
  # the queue too. When a caller dies, its queued request is dropped and a
  # running one is aborted (the worker's OS process is killed). Workers that
  # crash or time out stop; a new one is started on the next demand.

  use GenServer

  require Logger

  alias CerebrosBridge.Error
  alias CerebrosBridge.Subprocess.Worker

  @doc false
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts),
    do: GenServer.start_link(__MODULE__, opts, name: Keyword.get(opts, :name, __MODULE__))

  @doc false
  @spec request(CerebrosBridge.Config.t(), atom(), map()) :: {:ok, map()} | {:error, Error.t()}
  def request(config, op, payload) do
    GenServer.call(__MODULE__, {:request, config, op, payload}, :infinity)
  catch
    :exit, reason ->
      {:error,
       Error.new(:unavailable, "the subprocess pool is not running: #{inspect(reason)}", %{})}
  end

  @impl true
  def init(_opts) do
    # workers: pid => %{key, monitor, job}; idle: key => [pid]; queue: [job] (oldest first)
    {:ok, %{workers: %{}, idle: %{}, queue: []}}
  end

  @impl true
  def handle_call({:request, config, op, payload}, {caller, _} = from, state) do
    deadline = if config.timeout_ms == :infinity, do: nil, else: now() + config.timeout_ms

    job = %{
      id: make_ref(),
      key: {config.python_executable, config.python_path},
      config: config,
      op: op,
      payload: payload,
      from: from,
      deadline: deadline,
      caller_monitor: Process.monitor(caller),
      timer: nil
    }

    {:noreply, dispatch(job, state)}
  end

  @impl true
  def handle_info({:worker_done, pid, job_id, result, keep?}, state) do
    case state.workers do
      %{^pid => %{job: %{id: ^job_id} = job} = worker} ->
        reply(job, result)

        state =
          if keep? do
            state
            |> put_in([:workers, pid], %{worker | job: nil})
            |> update_in([:idle], &Map.update(&1, worker.key, [pid], fn pids -> [pid | pids] end))
          else
            Process.demonitor(worker.monitor, [:flush])
            %{state | workers: Map.delete(state.workers, pid)}
          end

        {:noreply, next(worker.key, state)}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:queue_timeout, job_id}, state) do
    case Enum.split_with(state.queue, &(&1.id == job_id)) do
      {[job], queue} ->
        reply(
          job,
          {:error,
           Error.new(:timeout, "no pool worker became free within #{job.config.timeout_ms} ms", %{
             "timeout_ms" => job.config.timeout_ms
           })}
        )

        {:noreply, %{state | queue: queue}}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:DOWN, ref, :process, pid, reason}, state) do
    case state.workers do
      %{^pid => %{monitor: ^ref} = worker} -> {:noreply, worker_down(pid, worker, reason, state)}
      _ -> {:noreply, caller_down(ref, state)}
    end
  end

  def handle_info(_message, state), do: {:noreply, state}

  defp worker_down(pid, worker, reason, state) do
    if worker.job do
      reply(
        worker.job,
        {:error, Error.new(:worker_crashed, "the pool worker stopped: #{inspect(reason)}", %{})}
      )
    end

    state = %{
      state
      | workers: Map.delete(state.workers, pid),
        idle: remove_idle(state.idle, worker.key, pid)
    }

    next(worker.key, state)
  end

  defp caller_down(ref, state) do
    {dropped, queue} = Enum.split_with(state.queue, &(&1.caller_monitor == ref))
    Enum.each(dropped, &cancel_timer/1)

    running =
      Enum.find(state.workers, fn {_pid, worker} ->
        worker.job && worker.job.caller_monitor == ref
      end)

    state = %{state | queue: queue}

    case running do
      {pid, worker} ->
        Worker.abort(pid)
        Process.demonitor(worker.monitor, [:flush])
        next(worker.key, %{state | workers: Map.delete(state.workers, pid)})

      nil ->
        state
    end
  end

  # Runs the job on an idle worker, a new worker, or queues it.
  defp dispatch(job, state) do
    case Map.get(state.idle, job.key, []) do
      [pid | rest] ->
        assign(pid, job, %{state | idle: Map.put(state.idle, job.key, rest)})

      [] ->
        if count(state, job.key) < job.config.pool_size do
          start_and_assign(job, state)
        else
          enqueue(job, state)
        end
    end
  end

  defp start_and_assign(job, state) do
    case DynamicSupervisor.start_child(
           CerebrosBridge.WorkerSupervisor,
           {Worker, {job.config, self()}}
         ) do
      {:ok, pid} ->
        worker = %{key: job.key, monitor: Process.monitor(pid), job: nil}
        assign(pid, job, put_in(state, [:workers, pid], worker))

      {:error, {:shutdown, %Error{} = error}} ->
        reply(job, {:error, error})
        state

      {:error, reason} ->
        reply(
          job,
          {:error,
           Error.new(:unavailable, "cannot start a Python worker: #{inspect(reason)}", %{})}
        )

        state
    end
  end

  defp assign(pid, job, state) do
    cancel_timer(job)

    case remaining(job) do
      0 ->
        reply(
          job,
          {:error,
           Error.new(:timeout, "no pool worker became free in time", %{
             "timeout_ms" => job.config.timeout_ms
           })}
        )

        update_in(state, [:idle], &Map.update(&1, job.key, [pid], fn pids -> [pid | pids] end))

      timeout ->
        Worker.run(
          pid,
          job.id,
          job.op,
          job.payload,
          job.config.notify,
          timeout,
          job.config.timeout_ms
        )

        put_in(state, [:workers, pid, :job], job)
    end
  end

  defp enqueue(job, state) do
    timer = job.deadline && Process.send_after(self(), {:queue_timeout, job.id}, remaining(job))
    %{state | queue: state.queue ++ [%{job | timer: timer}]}
  end

  # Hands the oldest queued job for `key` to a worker, if one can take it.
  defp next(key, state) do
    case Enum.split_with(state.queue, &(&1.key == key)) do
      {[job | _], _} ->
        state = %{state | queue: List.delete(state.queue, job)}
        dispatch(job, state)

      {[], _} ->
        state
    end
  end

  defp count(state, key),
    do: Enum.count(state.workers, fn {_pid, worker} -> worker.key == key end)

  defp remove_idle(idle, key, pid), do: Map.update(idle, key, [], &List.delete(&1, pid))

  defp remaining(%{deadline: nil}), do: :infinity
  defp remaining(%{deadline: deadline}), do: max(deadline - now(), 0)

  defp cancel_timer(%{timer: timer}) when is_reference(timer), do: Process.cancel_timer(timer)
  defp cancel_timer(_job), do: :ok

  defp reply(job, result) do
    Process.demonitor(job.caller_monitor, [:flush])
    GenServer.reply(job.from, result)
  end

  defp now, do: System.monotonic_time(:millisecond)
end
