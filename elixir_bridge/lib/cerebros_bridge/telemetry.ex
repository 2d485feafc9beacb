defmodule CerebrosBridge.Telemetry do
  @moduledoc """
  Telemetry events of the bridge, sent through `:telemetry` when it is loaded
  (it is an optional dependency) and dropped otherwise.

    * `[:cerebros, :bridge, invoker, :start]` — measurements `%{system_time,
      monotonic_time}`, metadata `%{invoker, op, run_id}`;
    * `[:cerebros, :bridge, invoker, :stop]` — measurements `%{duration,
      monotonic_time}` (native time units), metadata as at start plus `status`
      (`:ok` or `:error`), `error_type` (when `:error`) and the result's
      `run_id` where the call had none;
    * `[:cerebros, :bridge, invoker, :exception]` — measurements `%{duration,
      monotonic_time}`, metadata plus `kind`, `reason`, `stacktrace`.

  `invoker` is `:pythonx` or `:subprocess`; `op` is `:run_nas`, `:validate` or `:ping`.
  """

  @doc false
  # Runs `fun` (which returns `{:ok, map} | {:error, %Error{}}`) between a
  # start event and a stop (or exception) event.
  @spec span(:pythonx | :subprocess, map(), (() -> {:ok, map()} | {:error, struct()})) ::
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
        stop = System.monotonic_time()

        execute(
          prefix ++ [:exception],
          %{duration: stop - start, monotonic_time: stop},
          Map.merge(metadata, %{kind: kind, reason: reason, stacktrace: __STACKTRACE__})
        )

        :erlang.raise(kind, reason, __STACKTRACE__)
    else
      result ->
        stop = System.monotonic_time()

        execute(
          prefix ++ [:stop],
          %{duration: stop - start, monotonic_time: stop},
          stop_metadata(metadata, result)
        )

        result
    end
  end

  defp stop_metadata(metadata, {:ok, result}) do
    metadata
    |> Map.put(:status, :ok)
    |> Map.update(:run_id, nil, &(&1 || result_run_id(result)))
  end

  defp stop_metadata(metadata, {:error, error}) do
    Map.merge(metadata, %{status: :error, error_type: error.type})
  end

  defp result_run_id(%{"run_id" => run_id}), do: run_id
  defp result_run_id(_), do: nil

  @doc false
  @spec execute([atom()], map(), map()) :: :ok
  def execute(event, measurements, metadata) do
    if Code.ensure_loaded?(:telemetry) do
      apply(:telemetry, :execute, [event, measurements, metadata])
    end

    :ok
  end
end
