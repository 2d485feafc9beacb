defmodule CerebrosBridge.Test.PythonxDouble do
  @moduledoc """
  A test double of `Pythonx` (`eval/2`, `decode/1`, `Error`, `Object`), put
  in place with `config :cerebros_bridge, :pythonx_module`. It checks the
  Elixir side's protocol, not Python's behaviour: it records every eval with
  its globals encoded the way real Pythonx 0.4 encodes them
  (shared/README.md §1), answers the import and the `run_nas`/`validate`
  calls, and sends progress events the way `pythonx.send_tagged_object` does.

  Encoding it stands for, recorded as tagged terms:

  | Elixir term                | Python value (real Pythonx) | recorded as          |
  | -------------------------- | --------------------------- | -------------------- |
  | binary (every string)      | `bytes`, not decoded        | `{:bytes, binary}`   |
  | atom other than nil/bools  | `str`                       | `{:str, "name"}`     |
  | `nil`, `true`, `false`     | `None`, `True`, `False`     | `nil`, `true`, `false` |
  | integer, float             | `int` (exact), `float`      | itself               |
  | list                       | `list`                      | `{:list, items}`     |
  | tuple                      | `tuple`                     | `{:tuple, items}`    |
  | map (any keys)             | `dict`, keys encoded too    | `{:dict, pairs}`     |
  | `MapSet`                   | `set`                       | `{:set, items}`      |
  | pid                        | `pythonx.PID`               | `{:pid, pid}`        |
  | `%Object{}`                | the object itself           | the object           |

  Decoding (`decode/1`) follows real Pythonx: `str` and `bytes` both become
  binaries, dicts maps, tuples tuples, sets MapSets; `float('nan')` (here
  `:nan`) raises; an unknown type (here `{:opaque, repr}`) stays an `%Object{}`.

  What the simulated `cerebros_service` does depends on the spec's
  `dataset_id`: `"raise"` raises a Python exception, `"nan"` returns a result
  holding a NaN, `"numpy"` one holding a numpy scalar, `"failed"` a failed
  result, `"slow"` sleeps 500 ms; anything else succeeds. Before the import
  the interpreter counts as initialized unless `uninitialize/0` was called.
  """

  use Agent

  defmodule Object do
    @moduledoc "Stands for `Pythonx.Object`: an opaque Python value."
    defstruct [:value]
  end

  defmodule Error do
    @moduledoc "Stands for `Pythonx.Error`."
    defexception [:type, :value, :traceback]

    @impl true
    def message(error), do: "Python exception raised\n\n        #{error.type}: #{error.value}"
  end

  @doc "Starts (or restarts) the double with a clean record."
  def start do
    if pid = Process.whereis(__MODULE__), do: Agent.stop(pid)

    {:ok, _} =
      Agent.start(fn -> %{calls: [], imports: 0, initialized: true} end, name: __MODULE__)

    :ok
  end

  @doc "Every eval so far, oldest first, as `{code, encoded_globals}`."
  def calls, do: Agent.get(__MODULE__, &Enum.reverse(&1.calls))

  @doc "How many times the import code was evaluated."
  def imports, do: Agent.get(__MODULE__, & &1.imports)

  @doc "Makes the interpreter count as not initialized (eval raises, as real Pythonx does)."
  def uninitialize, do: Agent.update(__MODULE__, &%{&1 | initialized: false})

  def eval(code, globals, _opts \\ []) when is_binary(code) and is_map(globals) do
    unless Agent.get(__MODULE__, & &1.initialized) do
      raise RuntimeError, "the Python interpreter has not been initialized"
    end

    encoded =
      Map.new(globals, fn
        {key, value} when is_binary(key) ->
          {key, encode(value)}

        {key, _} ->
          raise ArgumentError, "expected globals keys to be strings, got: #{inspect(key)}"
      end)

    Agent.update(__MODULE__, &%{&1 | calls: [{code, encoded} | &1.calls]})

    cond do
      code == "None" ->
        {nil, %{}}

      code =~ "import cerebros_service" ->
        # Widens the window in which concurrent first callers could race.
        Process.sleep(50)
        Agent.update(__MODULE__, &%{&1 | imports: &1.imports + 1})
        {%Object{value: :cerebros_service_module}, %{}}

      code == "cerebros_service.run_nas(spec, opts)" ->
        {service(encoded, :run_nas), %{}}

      code == "cerebros_service.validate(spec, opts)" ->
        {service(encoded, :validate), %{}}

      true ->
        raise Error, type: "NameError", value: "unexpected code: #{code}"
    end
  end

  def decode(%Object{value: value}), do: decode_value(value)

  defp decode_value({:bytes, binary}), do: binary
  defp decode_value({:str, binary}), do: binary
  defp decode_value({:list, items}), do: Enum.map(items, &decode_value/1)
  defp decode_value({:tuple, items}), do: items |> Enum.map(&decode_value/1) |> List.to_tuple()
  defp decode_value({:set, items}), do: MapSet.new(items, &decode_value/1)

  defp decode_value({:dict, pairs}),
    do: Map.new(pairs, fn {k, v} -> {decode_value(k), decode_value(v)} end)

  defp decode_value({:pid, pid}), do: %Object{value: {:pid, pid}}
  defp decode_value({:opaque, _} = value), do: %Object{value: value}
  defp decode_value(:nan), do: raise(ArgumentError, "cannot decode float nan")
  defp decode_value(%Object{} = object), do: object
  defp decode_value(value) when is_number(value) or is_boolean(value) or is_nil(value), do: value

  defp encode(%Object{} = object), do: object
  defp encode(%MapSet{} = set), do: {:set, Enum.map(set, &encode/1)}
  defp encode(binary) when is_binary(binary), do: {:bytes, binary}
  defp encode(value) when value in [nil, true, false], do: value
  defp encode(atom) when is_atom(atom), do: {:str, Atom.to_string(atom)}
  defp encode(number) when is_number(number), do: number
  defp encode(list) when is_list(list), do: {:list, Enum.map(list, &encode/1)}

  defp encode(tuple) when is_tuple(tuple),
    do: {:tuple, tuple |> Tuple.to_list() |> Enum.map(&encode/1)}

  defp encode(pid) when is_pid(pid), do: {:pid, pid}

  defp encode(map) when is_map(map),
    do: {:dict, Enum.map(map, fn {k, v} -> {encode(k), encode(v)} end)}

  # Real Pythonx raises Protocol.UndefinedError (Pythonx.Encoder) here.
  defp encode(other), do: raise(ArgumentError, "cannot encode #{inspect(other)} for Python")

  # Python-side values built here are `str`, as Python would make them.
  defp py(binary) when is_binary(binary), do: {:str, binary}
  defp py(map) when is_map(map), do: {:dict, Enum.map(map, fn {k, v} -> {py(k), py(v)} end)}
  defp py(list) when is_list(list), do: {:list, Enum.map(list, &py/1)}
  defp py(other), do: other

  defp service(globals, op) do
    %Object{value: :cerebros_service_module} =
      Map.get(globals, "cerebros_service") ||
        raise(Error, type: "NameError", value: "name 'cerebros_service' is not defined")

    {:dict, spec} = Map.fetch!(globals, "spec")
    {:dict, opts} = Map.fetch!(globals, "opts")

    case List.keyfind(opts, {:bytes, "notify"}, 0) do
      {_, {:pid, pid}} ->
        send(
          pid,
          {:cerebros_event,
           %Object{value: py(%{"type" => "trial", "trial" => 0, "value" => 0.5})}}
        )

        send(
          pid,
          {:cerebros_event,
           %Object{value: {:dict, [{py("type"), py("trial")}, {py("value"), :nan}]}}}
        )

        send(
          pid,
          {:cerebros_event, %Object{value: py(%{"type" => "generation", "generation" => 0})}}
        )

      _ ->
        :ok
    end

    case List.keyfind(spec, {:bytes, "dataset_id"}, 0) do
      {_, {:bytes, "raise"}} ->
        raise Error, type: "ValueError", value: "boom"

      {_, {:bytes, "nan"}} ->
        %Object{value: {:dict, [{py("status"), py("success")}, {py("best_metric"), :nan}]}}

      {_, {:bytes, "numpy"}} ->
        %Object{
          value:
            {:dict,
             [{py("status"), py("success")}, {py("best_metric"), {:opaque, "np.float32(0.5)"}}]}
        }

      {_, {:bytes, "failed"}} ->
        %Object{
          value:
            py(%{
              "status" => "failed",
              "error_type" => "validation_error",
              "error" => "spec.training.epochs: must be >= 1",
              "error_details" => [
                %{"loc" => ["spec", "training", "epochs"], "message" => "must be >= 1"}
              ]
            })
        }

      {_, {:bytes, "slow"}} ->
        Process.sleep(500)
        %Object{value: py(%{"status" => "success"})}

      _ ->
        status = if op == :validate, do: "valid", else: "success"

        %Object{
          value: py(%{"status" => status, "run_id" => "double-run", "completed_trials" => 1})
        }
    end
  end
end
