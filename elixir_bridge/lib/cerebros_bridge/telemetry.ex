defmodule CerebrosBridge.Telemetry do
  @moduledoc false
  # `[:cerebros, :bridge, invoker, :start | :stop | :exception]` around each call, sent
  # through `:telemetry` when it is loaded (an optional dependency). Measurements and
  # metadata: docs/elixir.md ("Telemetry").

  @spec span(atom(), map(), (() -> {:ok, map()} | {:error, struct()})) ::
          {:ok, map()} | {:error, struct()}
  def span(invoker, metadata, fun) do
    prefix = [:cerebros, :bridge, invoker]
    metadata = Map.put(metadata, :invoker, invoker)
    start = System.monotonic_time()

    execute(
      prefix ++ [:start],
      %{system_time: System.system_time(), monotonic_time: start},
      metadata
    )

    try do
      fun.()
    catch
      kind, reason ->
        extra = %{kind: kind, reason: reason, stacktrace: __STACKTRACE__}
        execute(prefix ++ [:exception], took(start), Map.merge(metadata, extra))
        :erlang.raise(kind, reason, __STACKTRACE__)
    else
      {:ok, result} = ok ->
        run_id = metadata.run_id || (is_map(result) && result["run_id"]) || nil

        execute(
          prefix ++ [:stop],
          took(start),
          %{metadata | run_id: run_id} |> Map.put(:status, :ok)
        )

        ok

      {:error, error} = failed ->
        execute(
          prefix ++ [:stop],
          took(start),
          Map.merge(metadata, %{status: :error, error_type: error.type})
        )

        failed
    end
  end

  defp took(start) do
    stop = System.monotonic_time()
    %{duration: stop - start, monotonic_time: stop}
  end

  defp execute(event, measurements, metadata) do
    if Code.ensure_loaded?(:telemetry),
      do: apply(:telemetry, :execute, [event, measurements, metadata])

    :ok
  end
end
