defmodule CerebrosBridge.Serve do
  @moduledoc false
  # The subprocess invoker: one long-lived `python -m cerebros_service serve` per
  # {python_executable, python_path, max_concurrent_jobs} and operator settings, started
  # on first use, behind a Port. It speaks the job protocol of the Pythonx invoker as
  # JSON lines (docs/architecture.md): a request line with an id gets one `{"id", "result"}` line
  # at once; a submitted job later sends `{"id", "job_id", "event"}` lines and one
  # `{"id", "job_id", "done"}` line, forwarded to its subscriber as `{:cerebros_job, map}`.
  # Searches run in worker processes of that Python, so it never loads TensorFlow.
  #
  # The operator's settings (config :cerebros_bridge, data_root/artifacts_root/limits/
  # dask_clusters/mlflow_servers) become `--data-root`, `--artifacts-root`,
  # CEREBROS_MAX_* variables, `--dask-clusters` and `--mlflow-servers`. Binary
  # arrays (register_dataset, predict) travel as .npy files under that serve process's
  # data root: the configured one, else a private temporary folder made for it (then
  # file sources can read only the files the bridge wrote), removed when it ends.
  #
  # stderr never mixes with the protocol: the Port runs
  #     /bin/sh -c 'f=$1; shift; exec "$@" 2>>"$f"' sh STDERR_FILE PYTHON -m cerebros_service serve
  # which `exec`s Python (same OS pid) with stderr in a temporary file, whose tail is in
  # the error when Python dies. Port children lead their own process group, so a kill
  # takes the worker processes too. Closing the Port is end of input: Python cancels
  # its jobs and exits.

  use GenServer, restart: :temporary

  require Logger

  alias CerebrosBridge.{Error, JSON, Tensor}

  @redirect ~S(f=$1; shift; exec "$@" 2>>"$f")
  @call_timeout 30_000
  @crashed_grace 1_000

  @spec request(CerebrosBridge.Config.t(), map(), pid() | nil) ::
          {:ok, map()} | {:error, Error.t()}
  def request(config, request, subscriber \\ nil) do
    with {:ok, server} <- host(config) do
      {request, files} = to_files(server, request)
      answer = send_request(server, request, subscriber)
      # Once answered, Python has read the files (predict) or owns them (register_dataset:
      # own_files, deleted with the dataset or at once when refused).
      unless request["op"] == "register_dataset" and match?({:ok, _}, answer),
        do: Enum.each(files, &File.rm/1)

      answer
    end
  catch
    :exit, reason -> {:error, stopped_error(reason)}
  end

  # A serve process that stopped before it read the request (its program exited at
  # once) stopped with the crash's own error: that is the answer, stderr tail and all.
  defp stopped_error({{:shutdown, %Error{} = error}, _call}), do: error
  defp stopped_error({:shutdown, %Error{} = error}), do: error

  defp stopped_error(reason),
    do: Error.new(:worker_crashed, "the serve process stopped: #{inspect(reason)}")

  defp send_request(server, request, subscriber) do
    case JSON.encode(request) do
      {:ok, json} ->
        GenServer.call(server, {:request, json, subscriber}, @call_timeout)

      {:error, reason} ->
        {:error,
         Error.new(:validation_error, "the request cannot be sent as JSON: #{inspect(reason)}")}
    end
  catch
    :exit, reason -> {:error, stopped_error(reason)}
  end

  @spec decode_message(map()) :: {:ok, map()}
  def decode_message(message), do: {:ok, message}

  # Binary arrays (`%{"data" => binary, ...}` from Tensor.to_buffer/1) as .npy files
  # under the serve process's data root, which Python maps (its worker processes too);
  # a registered dataset's files are Python's to delete when it is released.
  defp to_files(server, request) do
    case for key <- ["x", "y"], match?(%{"data" => _}, request[key]), do: key do
      [] ->
        {request, []}

      keys ->
        dir = Path.join(GenServer.call(server, :data_root, @call_timeout), ".cerebros-datasets")
        File.mkdir_p!(dir)
        stem = Path.join(dir, "#{request["op"]}-#{System.unique_integer([:positive])}")

        files = for key <- keys, into: %{}, do: {key, "#{stem}-#{key}.npy"}
        Enum.each(files, fn {key, path} -> Tensor.write_npy!(path, request[key]) end)

        request =
          Enum.reduce(files, request, fn {key, path}, r -> Map.put(r, key, %{"npy" => path}) end)

        request =
          if request["op"] == "register_dataset",
            do: Map.put(request, "own_files", true),
            else: request

        {request, Map.values(files)}
    end
  end

  # The serve process for `config` (started if needed); jobs end when it does.
  @spec host(CerebrosBridge.Config.t()) :: {:ok, pid()} | {:error, Error.t()}
  def host(config) do
    key =
      {config.python_executable, config.python_path, config.max_concurrent_jobs,
       CerebrosBridge.Config.operator(config)}

    spec = {__MODULE__, {config, {:via, Registry, {CerebrosBridge.Registry, key}}}}

    case Registry.lookup(CerebrosBridge.Registry, key) do
      [{pid, _}] -> {:ok, pid}
      [] -> DynamicSupervisor.start_child(CerebrosBridge.ServeSupervisor, spec) |> started()
    end
  end

  defp started({:ok, pid}), do: {:ok, pid}
  defp started({:error, {:already_started, pid}}), do: {:ok, pid}
  defp started({:error, {:shutdown, %Error{} = error}}), do: {:error, error}

  defp started({:error, reason}),
    do: {:error, Error.new(:unavailable, "cannot start Python: #{inspect(reason)}")}

  def start_link({config, name}), do: GenServer.start_link(__MODULE__, config, name: name)

  @impl true
  def init(config) do
    Process.flag(:trap_exit, true)

    stderr =
      Path.join(System.tmp_dir!(), "cerebros-serve-#{System.unique_integer([:positive])}.log")

    File.write!(stderr, "")
    # Without a configured data root, a folder of this serve process's own (mode 0700).
    private = if config.data_root == nil, do: private_dir()

    with {:ok, python} <- find(config.python_executable), {:ok, sh} <- find("/bin/sh") do
      serve =
        [python, "-m", "cerebros_service", "serve"] ++
          ["--max-concurrent-jobs", "#{config.max_concurrent_jobs}"] ++
          ["--data-root", config.data_root || private] ++
          if(config.artifacts_root, do: ["--artifacts-root", config.artifacts_root], else: []) ++
          endpoint_flag("--dask-clusters", config.dask_clusters) ++
          endpoint_flag("--mlflow-servers", config.mlflow_servers)

      pythonpath = Enum.join(config.python_path ++ List.wrap(System.get_env("PYTHONPATH")), ":")

      limits =
        for {name, value} <- config.limits,
            do: {String.to_charlist("CEREBROS_" <> String.upcase(name)), ~c"#{value}"}

      port =
        Port.open({:spawn_executable, sh}, [
          :binary,
          :exit_status,
          :use_stdio,
          :hide,
          {:line, 1_048_576},
          args: ["-c", @redirect, "sh", stderr | serve],
          env: [{~c"PYTHONPATH", String.to_charlist(pythonpath)} | limits]
        ])

      # nil: the program has exited already (its Port closed), as a crash script does at once
      os_pid = with {:os_pid, pid} <- Port.info(port, :os_pid), do: pid

      {:ok,
       %{
         port: port,
         os_pid: os_pid,
         stderr: stderr,
         data_root: config.data_root || private,
         private: private,
         failure: nil,
         crashed: nil,
         acc: [],
         next_id: 1,
         pending: %{},
         subscribers: %{}
       }}
    else
      {:error, error} ->
        File.rm(stderr)
        if private, do: File.rm_rf(private)
        {:stop, {:shutdown, error}}
    end
  end

  # `--dask-clusters name=URL,…` (or `--mlflow-servers`) when the operator configured some.
  defp endpoint_flag(_flag, endpoints) when map_size(endpoints) == 0, do: []

  defp endpoint_flag(flag, endpoints),
    do: [flag, CerebrosBridge.Config.endpoint_list(endpoints)]

  defp private_dir do
    dir =
      Path.join(System.tmp_dir!(), "cerebros-bridge-data-#{System.unique_integer([:positive])}")

    File.mkdir_p!(dir)
    File.chmod!(dir, 0o700)
    dir
  end

  defp find(name) do
    if path = System.find_executable(name),
      do: {:ok, path},
      else:
        {:error,
         Error.new(:unavailable, "executable not found: #{name}", %{"python_executable" => name})}
  end

  @impl true
  def handle_call(:data_root, _from, state), do: {:reply, state.data_root, state}

  # The program exited before this request came: it is answered with the crash.
  def handle_call({:request, _json, _subscriber}, _from, %{crashed: %Error{} = error} = state),
    do: {:stop, {:shutdown, error}, {:error, error}, state}

  def handle_call({:request, json, subscriber}, from, state) do
    id = state.next_id
    # Subscribed before the answer: a job may end before its submit is answered.
    subscribers =
      if subscriber, do: Map.put(state.subscribers, id, subscriber), else: state.subscribers

    state = %{
      state
      | next_id: id + 1,
        pending: Map.put(state.pending, id, from),
        subscribers: subscribers
    }

    try do
      Port.command(state.port, [~s({"id":#{id},), binary_part(json, 1, byte_size(json) - 1), ?\n])
      {:noreply, state}
    rescue
      # The program has exited and its Port is closed already: answered as a crash.
      ArgumentError -> port_ended(state)
    end
  end

  @impl true
  def handle_info({port, {:data, {:noeol, chunk}}}, %{port: port} = state),
    do: {:noreply, %{state | acc: [state.acc, chunk]}}

  def handle_info({port, {:data, {:eol, chunk}}}, %{port: port} = state) do
    line = IO.iodata_to_binary([state.acc, chunk])
    state = %{state | acc: []}

    case JSON.decode(line) do
      # Answered to no request: serve refused to start (e.g. a --data-root that is no folder).
      {:ok, %{"id" => nil, "result" => %{"status" => "failed"} = failure}} ->
        {:noreply, %{state | failure: failure}}

      {:ok, %{"id" => id, "result" => result}} ->
        {from, pending} = Map.pop(state.pending, id)
        if from, do: GenServer.reply(from, {:ok, result})
        keep? = Map.get(result, "status") == "queued"

        {:noreply,
         %{
           state
           | pending: pending,
             subscribers:
               if(keep?, do: state.subscribers, else: Map.delete(state.subscribers, id))
         }}

      {:ok, %{"id" => id, "job_id" => _} = message} ->
        if pid = state.subscribers[id], do: send(pid, {:cerebros_job, message})

        {:noreply,
         if(Map.has_key?(message, "done"),
           do: %{state | subscribers: Map.delete(state.subscribers, id)},
           else: state
         )}

      _ ->
        Logger.warning("cerebros_bridge: not a protocol line: " <> String.slice(line, 0, 200))
        {:noreply, state}
    end
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state),
    do: stopped(state, status)

  # A request written just as the program exits can find its pipe closed: the Port then
  # ends with this message (:epipe) and may never send the exit status. Ignored, the
  # pending call would wait out its timeout.
  def handle_info({:EXIT, port, _reason}, %{port: port} = state), do: port_ended(state)

  def handle_info(:crashed_grace_over, state), do: {:stop, {:shutdown, state.crashed}, state}

  def handle_info(_message, state), do: {:noreply, state}

  # The Port has closed: its exit status, if it comes at all, is already on its way.
  defp port_ended(%{port: port} = state) do
    receive do
      {^port, {:exit_status, status}} -> stopped(state, status)
    after
      1_000 -> stopped(state, nil)
    end
  end

  defp stopped(state, status) do
    tail = tail(state.stderr)
    last = tail |> String.split("\n", trim: true) |> List.last()

    last = if state.failure, do: state.failure["error"], else: last

    how = if status, do: "status #{status}", else: "its status unknown"

    message = "the Python serve process exited (#{how})" <> if(last, do: ": " <> last, else: "")

    error =
      Error.new(:worker_crashed, message, %{
        "exit_status" => status,
        "os_pid" => state.os_pid,
        "stderr_tail" => tail,
        "error_details" => (state.failure || %{})["error_details"] || []
      })

    for {_id, from} <- state.pending, do: GenServer.reply(from, {:error, error})

    if state.pending == %{} do
      # Exited before its first request (a program that crashes at once): stay a moment
      # to answer the request on its way with this error, not with a dead process.
      Process.send_after(self(), :crashed_grace_over, @crashed_grace)
      {:noreply, %{state | port: nil, crashed: error}}
    else
      {:stop, {:shutdown, error}, %{state | port: nil, pending: %{}}}
    end
  end

  defp tail(path) do
    case File.read(path) do
      {:ok, data} ->
        data = binary_part(data, max(byte_size(data) - 4_000, 0), min(byte_size(data), 4_000))

        data
        |> String.chunk(:valid)
        |> Enum.map_join(&if(String.valid?(&1), do: &1, else: "\uFFFD"))

      _ ->
        ""
    end
  end

  @impl true
  def terminate(_reason, state) do
    # End of input: Python cancels its jobs and exits; past a grace time, it and its
    # worker processes (its process group) are killed.
    if state.port do
      close(state.port)

      unless exited?(state.os_pid, 30),
        do: System.cmd("kill", ["-s", "KILL", "--", "-#{state.os_pid}"], stderr_to_stdout: true)
    end

    File.rm(state.stderr)
    if state.private, do: File.rm_rf(state.private)
  end

  # A Port whose program has just exited (its exit_status not read yet) is closed already.
  defp close(port) do
    Port.close(port)
  rescue
    ArgumentError -> :ok
  end

  defp exited?(nil, _tries), do: true

  defp exited?(os_pid, tries) do
    alive? = match?({_, 0}, System.cmd("kill", ["-0", "#{os_pid}"], stderr_to_stdout: true))
    not alive? or (tries > 0 and Process.sleep(100) == :ok and exited?(os_pid, tries - 1))
  end
end
