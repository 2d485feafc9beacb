defmodule CerebrosBridge.Serve do
  @moduledoc false
  # The subprocess invoker: one long-lived `python -m cerebros_service serve` per
  # {python_executable, python_path, max_concurrent_jobs}, started on first use, behind
  # a Port. It speaks the job protocol of the Pythonx invoker as JSON lines
  # (docs/architecture.md): a request line with an id gets one `{"id", "result"}` line
  # at once; a submitted job later sends `{"id", "job_id", "event"}` lines and one
  # `{"id", "job_id", "done"}` line, forwarded to its subscriber as `{:cerebros_job, map}`.
  # Searches run in worker processes of that Python, so it never loads TensorFlow.
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

  @spec request(CerebrosBridge.Config.t(), map(), pid() | nil) ::
          {:ok, map()} | {:error, Error.t()}
  def request(config, request, subscriber \\ nil) do
    case {host(config), JSON.encode(request)} do
      {{:ok, server}, {:ok, json}} ->
        GenServer.call(server, {:request, json, subscriber}, @call_timeout)

      {{:error, error}, _} ->
        {:error, error}

      {_, {:error, reason}} ->
        {:error,
         Error.new(:validation_error, "the request cannot be sent as JSON: #{inspect(reason)}")}
    end
  catch
    :exit, reason ->
      {:error, Error.new(:worker_crashed, "the serve process stopped: #{inspect(reason)}")}
  end

  @spec decode_message(map()) :: {:ok, map()}
  def decode_message(message), do: {:ok, message}

  # Binary arrays travel as .npy files under the data root, which Python memory-maps
  # (its worker processes too) and deletes when the dataset is released (own_files).
  @spec register_dataset(CerebrosBridge.Config.t(), map()) :: {:ok, map()} | {:error, Error.t()}
  def register_dataset(config, request) do
    dir = Path.join(config.data_root, ".cerebros-datasets")
    File.mkdir_p!(dir)
    stem = Path.join(dir, "#{request["name"]}-#{System.unique_integer([:positive])}")

    files =
      for key <- ["x", "y"], match?(%{"data" => _}, request[key]), into: %{} do
        path = "#{stem}-#{key}.npy"
        Tensor.write_npy!(path, request[key])
        {key, %{"npy" => path}}
      end

    request(
      config,
      Map.merge(request, files)
      |> Map.merge(%{"data_root" => config.data_root, "own_files" => true})
    )
  end

  # The serve process for `config` (started if needed); jobs end when it does.
  @spec host(CerebrosBridge.Config.t()) :: {:ok, pid()} | {:error, Error.t()}
  def host(config) do
    key = {config.python_executable, config.python_path, config.max_concurrent_jobs}
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

    with {:ok, python} <- find(config.python_executable), {:ok, sh} <- find("/bin/sh") do
      serve = [
        python,
        "-m",
        "cerebros_service",
        "serve",
        "--max-concurrent-jobs",
        "#{config.max_concurrent_jobs}"
      ]

      pythonpath = Enum.join(config.python_path ++ List.wrap(System.get_env("PYTHONPATH")), ":")

      port =
        Port.open({:spawn_executable, sh}, [
          :binary,
          :exit_status,
          :use_stdio,
          :hide,
          {:line, 1_048_576},
          args: ["-c", @redirect, "sh", stderr | serve],
          env: [{~c"PYTHONPATH", String.to_charlist(pythonpath)}]
        ])

      {:os_pid, os_pid} = Port.info(port, :os_pid)

      {:ok,
       %{
         port: port,
         os_pid: os_pid,
         stderr: stderr,
         acc: [],
         next_id: 1,
         pending: %{},
         subscribers: %{}
       }}
    else
      {:error, error} ->
        File.rm(stderr)
        {:stop, {:shutdown, error}}
    end
  end

  defp find(name) do
    if path = System.find_executable(name),
      do: {:ok, path},
      else:
        {:error,
         Error.new(:unavailable, "executable not found: #{name}", %{"python_executable" => name})}
  end

  @impl true
  def handle_call({:request, json, subscriber}, from, state) do
    id = state.next_id
    Port.command(state.port, [~s({"id":#{id},), binary_part(json, 1, byte_size(json) - 1), ?\n])
    # Subscribed before the answer: a job may end before its submit is answered.
    subscribers =
      if subscriber, do: Map.put(state.subscribers, id, subscriber), else: state.subscribers

    {:noreply,
     %{
       state
       | next_id: id + 1,
         pending: Map.put(state.pending, id, from),
         subscribers: subscribers
     }}
  end

  @impl true
  def handle_info({port, {:data, {:noeol, chunk}}}, %{port: port} = state),
    do: {:noreply, %{state | acc: [state.acc, chunk]}}

  def handle_info({port, {:data, {:eol, chunk}}}, %{port: port} = state) do
    line = IO.iodata_to_binary([state.acc, chunk])
    state = %{state | acc: []}

    case JSON.decode(line) do
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

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    tail = tail(state.stderr)
    last = tail |> String.split("\n", trim: true) |> List.last()

    message =
      "the Python serve process exited (status #{status})" <> if(last, do: ": " <> last, else: "")

    error =
      Error.new(:worker_crashed, message, %{
        "exit_status" => status,
        "os_pid" => state.os_pid,
        "stderr_tail" => tail
      })

    for {_id, from} <- state.pending, do: GenServer.reply(from, {:error, error})
    {:stop, {:shutdown, error}, %{state | port: nil, pending: %{}}}
  end

  def handle_info(_message, state), do: {:noreply, state}

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
      Port.close(state.port)

      unless exited?(state.os_pid, 30),
        do: System.cmd("kill", ["-s", "KILL", "--", "-#{state.os_pid}"], stderr_to_stdout: true)
    end

    File.rm(state.stderr)
  end

  defp exited?(os_pid, tries) do
    alive? = match?({_, 0}, System.cmd("kill", ["-0", "#{os_pid}"], stderr_to_stdout: true))
    not alive? or (tries > 0 and Process.sleep(100) == :ok and exited?(os_pid, tries - 1))
  end
end
