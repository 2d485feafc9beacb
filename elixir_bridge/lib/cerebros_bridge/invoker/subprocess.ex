defmodule CerebrosBridge.Invoker.Subprocess do
  @moduledoc false
  # Calls `python -m cerebros_service` (docs/architecture.md, "Subprocess
  # protocol"): a warm `serve` worker from the pool, or a one-shot
  # `run --input FILE --events` / `validate --input FILE` per call.
  #
  # The request goes through a file (`--input`) because a Port cannot close
  # the child's stdin on its own, and `run`/`validate` read stdin to EOF.
  # JSON travels as data only; it is never pasted into Python source.

  alias CerebrosBridge.{Error, JSON}
  alias CerebrosBridge.Subprocess.{Pool, Python}

  @doc false
  @spec call(:run_nas | :validate, map(), map(), CerebrosBridge.Config.t()) ::
          {:ok, map()} | {:error, Error.t()}
  def call(op, spec, opts, config) do
    with {:ok, request} <- encode(%{"spec" => spec, "opts" => opts}) do
      if config.pool,
        do: Pool.request(config, op, request),
        else: one_shot(op, request, config)
    end
  end

  @doc false
  @spec ping(CerebrosBridge.Config.t()) :: {:ok, map()} | {:error, Error.t()}
  def ping(config), do: Pool.request(config, :ping, %{})

  defp encode(request) do
    case JSON.encode(request) do
      {:ok, _json} ->
        {:ok, request}

      {:error, reason} ->
        {:error,
         Error.new(
           :validation_error,
           "the spec or opts cannot be sent as JSON: #{inspect(reason)}"
         )}
    end
  end

  # --- one-shot ---------------------------------------------------------------

  defp one_shot(op, request, config) do
    input = Python.tmp_file("input.json")
    stderr = Python.tmp_file("stderr.log")
    File.write!(input, JSON.encode!(request))

    args =
      if op == :run_nas,
        do: ["run", "--input", input, "--events"],
        else: ["validate", "--input", input]

    try do
      with {:ok, port, os_pid} <- Python.open(config, args, stderr) do
        guard = guard(self(), os_pid, [input, stderr])

        timer =
          config.timeout_ms != :infinity &&
            Process.send_after(self(), {:cerebros_timeout, port}, config.timeout_ms)

        try do
          collect(%{
            port: port,
            os_pid: os_pid,
            op: op,
            config: config,
            stderr: stderr,
            acc: [],
            lines: [],
            result: nil
          })
        after
          if timer, do: Process.cancel_timer(timer)
          flush(port)
          send(guard, :done)
          Python.forward_stderr(stderr)
        end
      end
    after
      File.rm(input)
      File.rm(stderr)
    end
  end

  # Kills the child (and removes its files) if the caller dies before the end.
  defp guard(caller, os_pid, files) do
    spawn(fn ->
      ref = Process.monitor(caller)

      receive do
        :done ->
          :ok

        {:DOWN, ^ref, _, _, _} ->
          Python.kill_os_process(os_pid)
          Enum.each(files, &File.rm/1)
      end
    end)
  end

  defp collect(%{port: port} = state) do
    receive do
      {^port, {:data, data}} ->
        case Python.line(data, state.acc) do
          {:partial, acc} -> collect(%{state | acc: acc})
          {:line, line} -> collect(handle_line(line, %{state | acc: []}))
        end

      {^port, {:exit_status, status}} ->
        finish(status, state)

      {:cerebros_timeout, ^port} ->
        Python.kill(port, state.os_pid)
        timeout = state.config.timeout_ms

        {:error,
         Error.new(:timeout, "no answer from Python within #{timeout} ms (process killed)", %{
           "timeout_ms" => timeout,
           "os_pid" => state.os_pid,
           "stderr_tail" => Python.tail(state.stderr)
         })}
    end
  end

  # `validate` answers one JSON document, possibly over several lines;
  # `run --events` answers `{"event": ...}` lines and one `{"result": ...}` line.
  defp handle_line(line, %{op: :validate} = state), do: %{state | lines: [line | state.lines]}

  defp handle_line(line, state) do
    case Python.decode_line(line) do
      {:ok, %{"event" => event}} ->
        if state.config.notify, do: send(state.config.notify, {:cerebros_event, event})
        state

      {:ok, %{"result" => result}} ->
        %{state | result: result}

      _ ->
        state
    end
  end

  defp finish(status, %{op: :validate, lines: [_ | _]} = state) do
    case JSON.decode(state.lines |> Enum.reverse() |> Enum.join("\n")) do
      {:ok, result} -> Python.to_result(result)
      {:error, _} -> {:error, Python.crashed(status, state.stderr)}
    end
  end

  defp finish(_status, %{result: result}) when result != nil, do: Python.to_result(result)
  defp finish(status, state), do: {:error, Python.crashed(status, state.stderr)}

  # Drops what the port (or its timer) left in the caller's mailbox.
  defp flush(port) do
    receive do
      {:cerebros_timeout, ^port} -> flush(port)
      {^port, _} -> flush(port)
    after
      0 -> :ok
    end
  end
end
