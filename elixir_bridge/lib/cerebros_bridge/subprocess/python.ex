defmodule CerebrosBridge.Subprocess.Python do
  @moduledoc false
  # Starting, reading and killing `python -m cerebros_service` behind a Port.
  #
  # A Port cannot read stderr apart from stdout, so the process is started as
  #     /bin/sh -c 'f=$1; shift; exec "$@" 2>>"$f"' sh STDERR_FILE PYTHON -m cerebros_service ARGS...
  # The shell only redirects and `exec`s: the OS pid is Python's own, nothing
  # is interpolated into a command line (arguments stay arguments), and stderr
  # is caught from the first byte (import errors included), which the CLI's
  # `--stderr-file` could not do. Port children lead their own process group,
  # so a kill takes any helper processes Python started with it.

  require Logger

  alias CerebrosBridge.{Error, JSON}

  @redirect ~S(f=$1; shift; exec "$@" 2>>"$f")
  @tail_bytes 4_000
  @max_line 1_048_576

  @doc false
  @spec open(CerebrosBridge.Config.t(), [String.t()], Path.t()) ::
          {:ok, port(), non_neg_integer()} | {:error, Error.t()}
  def open(config, args, stderr_file) do
    with {:ok, python} <- find_executable(config.python_executable),
         {:ok, sh} <- find_executable("/bin/sh") do
      port =
        Port.open({:spawn_executable, sh}, [
          :binary,
          :exit_status,
          :use_stdio,
          :hide,
          {:line, @max_line},
          {:args, ["-c", @redirect, "sh", stderr_file, python, "-m", "cerebros_service" | args]},
          {:env, env(config.python_path)}
        ])

      {:os_pid, os_pid} = Port.info(port, :os_pid)
      {:ok, port, os_pid}
    end
  end

  defp find_executable(name) do
    case System.find_executable(name) do
      nil ->
        {:error,
         Error.new(:unavailable, "Python executable not found: #{name}", %{
           "python_executable" => name
         })}

      path ->
        {:ok, path}
    end
  end

  defp env(python_path) do
    existing = System.get_env("PYTHONPATH")
    paths = python_path ++ if(existing in [nil, ""], do: [], else: [existing])

    [
      {~c"PYTHONPATH", String.to_charlist(Enum.join(paths, ":"))},
      {~c"PYTHONUNBUFFERED", ~c"1"}
    ]
  end

  @doc false
  # Kills the process group and the process (SIGKILL); waits for the Port's
  # exit status so the process is reaped, and closes the Port.
  @spec kill(port(), non_neg_integer()) :: :ok
  def kill(port, os_pid) do
    kill_os_process(os_pid)

    receive do
      {^port, {:exit_status, _}} -> :ok
    after
      5_000 -> :ok
    end

    close(port)
  end

  @doc false
  # SIGKILL to the process group (a Port's child leads its own) and the process.
  @spec kill_os_process(non_neg_integer()) :: :ok
  def kill_os_process(os_pid) do
    System.cmd("kill", ["-s", "KILL", "--", "-#{os_pid}", "#{os_pid}"], stderr_to_stdout: true)
    :ok
  end

  @doc false
  @spec close(port()) :: :ok
  def close(port) do
    Port.close(port)
    :ok
  rescue
    ArgumentError -> :ok
  end

  @doc false
  # Accumulates `{:line, n}` data; returns complete lines and the remainder.
  @spec line({:eol | :noeol, binary()}, iodata()) :: {:line, binary()} | {:partial, iodata()}
  def line({:eol, data}, acc), do: {:line, IO.iodata_to_binary([acc, data])}
  def line({:noeol, data}, acc), do: {:partial, [acc, data]}

  @doc false
  @spec decode_line(binary()) :: {:ok, term()} | :error
  def decode_line(line) do
    case JSON.decode(line) do
      {:ok, term} ->
        {:ok, term}

      {:error, _} ->
        Logger.warning(
          "cerebros_bridge: not a protocol line on stdout: " <> String.slice(line, 0, 200)
        )

        :error
    end
  end

  @doc false
  # A result map as `{:ok, result}` or `{:error, %Error{}}`.
  @spec to_result(term()) :: {:ok, map()} | {:error, Error.t()}
  def to_result(%{"status" => "failed"} = result), do: {:error, Error.from_result(result)}
  def to_result(%{"status" => _} = result), do: {:ok, result}

  def to_result(other),
    do: {:error, Error.new(:invalid_result, "not a result: #{inspect(other, limit: 20)}")}

  @doc false
  @spec crashed(integer() | nil, Path.t(), map()) :: Error.t()
  def crashed(status, stderr_file, extra \\ %{}) do
    tail = tail(stderr_file)
    last = tail |> String.split("\n", trim: true) |> List.last()

    message =
      "the Python process exited (status #{inspect(status)}) without a result" <>
        if(last, do: ": " <> last, else: "")

    Error.new(
      :worker_crashed,
      message,
      Map.merge(%{"exit_status" => status, "stderr_tail" => tail}, extra)
    )
  end

  @doc false
  # The last few kilobytes of a stderr file, given by path or as a device
  # opened for reading (which still reads once the path is unlinked).
  @spec tail(Path.t() | pid(), pos_integer()) :: String.t()
  def tail(file, bytes \\ @tail_bytes) do
    with_device(file, "", fn io ->
      {:ok, size} = :file.position(io, :eof)
      read_at(io, max(size - bytes, 0), bytes)
    end)
  end

  @doc false
  # Logs stderr written since `offset` (debug level); returns the new offset.
  @spec forward_stderr(Path.t() | pid(), non_neg_integer()) :: non_neg_integer()
  def forward_stderr(file, offset \\ 0) do
    with_device(file, offset, fn io ->
      {:ok, size} = :file.position(io, :eof)

      if size > offset do
        Logger.debug(["cerebros_service stderr:\n", read_at(io, offset, size - offset)])
      end

      max(size, offset)
    end)
  end

  defp with_device(io, _default, fun) when is_pid(io), do: fun.(io)

  defp with_device(path, default, fun) do
    case File.open(path, [:read, :binary]) do
      {:ok, io} ->
        try do
          fun.(io)
        after
          File.close(io)
        end

      {:error, _} ->
        default
    end
  end

  defp read_at(io, position, bytes) do
    with {:ok, _} <- :file.position(io, position),
         data when is_binary(data) <- IO.binread(io, bytes) do
      scrub(data)
    else
      _ -> ""
    end
  end

  defp scrub(data) do
    if String.valid?(data) do
      data
    else
      data
      |> String.codepoints()
      |> Enum.map(fn char -> if String.valid?(char), do: char, else: "\uFFFD" end)
      |> IO.iodata_to_binary()
    end
  end

  @doc false
  @spec tmp_file(String.t()) :: Path.t()
  def tmp_file(suffix) do
    name =
      "cerebros-bridge-#{System.os_time(:microsecond)}-#{System.unique_integer([:positive])}-#{suffix}"

    Path.join(System.tmp_dir!(), name)
  end
end
