defmodule CerebrosBridge do
  @moduledoc """
  Neural architecture search from Elixir: calls the Python package
  `cerebros_service` through Pythonx (in the same OS process) or through a
  Python subprocess, and returns its result as a map with string keys.

      {:ok, result} =
        CerebrosBridge.run_nas(
          %{dataset_id: "digits", objective: "accuracy"},
          budget: %{max_trials: 5, population_size: 5},
          notify: self()
        )

      result["best_metric"]

  The spec and the Python options (`run_id`, `budget`, `parameters`, ...; see
  docs/contract.md) may use atom or string keys. Errors come back as
  `{:error, %CerebrosBridge.Error{}}`; nothing is raised except for bad bridge
  options (`ArgumentError`).

  ## Bridge options

  These are taken out of `opts`; everything else is passed to Python as its
  `opts`. Each defaults to `config :cerebros_bridge, key: value`, then to the
  default shown.

    * `:invoker` — `:pythonx`, `:subprocess` or `:auto` (Pythonx when it is
      loaded and initialized, else the subprocess). Default `:auto`.
    * `:timeout_ms` — the call's time limit, or `:infinity`. Default 600_000.
      On timeout the subprocess (and its process group) is killed. Through
      Pythonx the caller gets its `:timeout` error in time, but the Python
      call cannot be interrupted and runs on; bound it with the search's own
      `budget.max_time_seconds`.
    * `:notify` — a pid that receives `{:cerebros_event, map}` for every
      finished trial and generation, all before the call returns.
    * `:python_executable` — default: `$CEREBROS_PYTHON`, else this
      checkout's `.venv/bin/python`, else `python3`.
    * `:python_path` — directories put in front of `PYTHONPATH` (subprocess)
      or `sys.path` (Pythonx, at the one-time import). Default: this
      checkout's root when it holds the package.
    * `:pool` — subprocess only: use warm `serve` workers (`true`, default)
      or a one-shot process per call (`false`).
    * `:pool_size` — subprocess only: warm workers kept per
      executable/path. Default 2.

  See docs/elixir.md for set-up, telemetry and progress events.
  """

  alias CerebrosBridge.{Config, Error, Telemetry}
  alias CerebrosBridge.Invoker

  @typedoc "A search spec: `dataset_id` (required), `objective`, `search_space`, `training`, ..."
  @type spec :: map()
  @type result :: {:ok, map()} | {:error, Error.t()}

  @doc """
  Runs a neural architecture search and returns its result.

  A result with `"status" => "failed"` is returned as `{:error, %Error{}}`
  carrying its `error_type` (as `type`), `error` (as `message`) and
  `error_details` (as `details`).
  """
  @spec run_nas(spec(), keyword()) :: result()
  def run_nas(spec, opts \\ []) when is_map(spec) and is_list(opts),
    do: call(:run_nas, spec, opts)

  @doc """
  Checks `spec` and the Python options without running anything.

  Returns `{:ok, %{"status" => "valid", "spec" => ..., "opts" => ...}}` with the
  normalized spec and options, or `{:error, %Error{type: :validation_error}}`
  whose `details` list every problem with its `"loc"` path.
  """
  @spec validate(spec(), keyword()) :: result()
  def validate(spec, opts \\ []) when is_map(spec) and is_list(opts),
    do: call(:validate, spec, opts)

  @doc """
  Pings a warm subprocess worker (starting one if needed) and returns
  `{:ok, %{"status" => "ok", "pid" => os_pid, "tensorflow_loaded" => boolean}}`.

  Takes the bridge options `:python_executable`, `:python_path`,
  `:timeout_ms` and `:pool_size`.
  """
  @spec ping(keyword()) :: result()
  def ping(opts \\ []) when is_list(opts) do
    config = Config.resolve(opts)

    Telemetry.span(:subprocess, %{op: :ping, run_id: nil}, fn ->
      Invoker.Subprocess.ping(config)
    end)
  end

  defp call(op, spec, opts) do
    {bridge_opts, python_opts} = Keyword.split(opts, Config.keys())
    config = Config.resolve(bridge_opts)
    spec = stringify_keys(spec)
    python_opts = python_opts |> Map.new() |> stringify_keys()
    invoker = choose_invoker(config.invoker)
    metadata = %{op: op, run_id: python_opts["run_id"]}

    Telemetry.span(invoker, metadata, fn ->
      case invoker do
        :pythonx -> Invoker.Pythonx.call(op, spec, python_opts, config)
        :subprocess -> Invoker.Subprocess.call(op, spec, python_opts, config)
      end
    end)
  end

  defp choose_invoker(:auto),
    do: if(Invoker.Pythonx.available?(), do: :pythonx, else: :subprocess)

  defp choose_invoker(invoker), do: invoker

  @doc false
  # Map keys that are atoms become strings, all the way down. Values are left
  # alone (each invoker encodes them).
  @spec stringify_keys(term()) :: term()
  def stringify_keys(%_{} = struct), do: struct

  def stringify_keys(map) when is_map(map) do
    Map.new(map, fn
      {key, value} when is_atom(key) and key not in [nil, true, false] ->
        {Atom.to_string(key), stringify_keys(value)}

      {key, value} ->
        {key, stringify_keys(value)}
    end)
  end

  def stringify_keys(list) when is_list(list), do: Enum.map(list, &stringify_keys/1)
  def stringify_keys(other), do: other
end
