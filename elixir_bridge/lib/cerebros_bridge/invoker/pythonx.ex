defmodule CerebrosBridge.Invoker.Pythonx do
  @moduledoc false
  # Calls `cerebros_service` in the embedded interpreter of Pythonx.
  #
  # Pythonx runs each eval in a fresh module scope, so the package is imported
  # once (under a lock, so concurrent first callers import it once), the module
  # object is kept in :persistent_term, and every call passes it back in
  # through `globals` with `spec` and `opts`. Values are never pasted into
  # Python source: the code evaluated is constant.
  #
  # Pythonx is an optional dependency, reached only through `apply/3` on the
  # module named by `config :cerebros_bridge, :pythonx_module` (default
  # `Pythonx`; the tests put a double there), so compiling without it gives
  # no warnings.

  require Logger

  alias CerebrosBridge.Error

  @import_code """
  import sys
  for _entry in reversed(paths):
      _entry = _entry.decode("utf-8") if isinstance(_entry, bytes) else str(_entry)
      if _entry not in sys.path:
          sys.path.insert(0, _entry)
  import cerebros_service
  cerebros_service
  """

  @run_code "cerebros_service.run_nas(spec, opts)"
  @validate_code "cerebros_service.validate(spec, opts)"

  @doc false
  @spec pythonx_module() :: module()
  def pythonx_module, do: Application.get_env(:cerebros_bridge, :pythonx_module, Pythonx)

  @doc false
  # Pythonx is loaded and its interpreter initialized (a positive answer is kept).
  @spec available?() :: boolean()
  def available? do
    mod = pythonx_module()

    cond do
      :persistent_term.get({__MODULE__, :initialized, mod}, false) -> true
      not Code.ensure_loaded?(mod) -> false
      true -> probe(mod)
    end
  end

  # Pythonx raises (a RuntimeError) when the interpreter is not initialized.
  defp probe(mod) do
    apply(mod, :eval, ["None", %{}])
    :persistent_term.put({__MODULE__, :initialized, mod}, true)
    true
  rescue
    _ -> false
  end

  @doc false
  # Forgets the imported module (tests).
  @spec reset() :: :ok
  def reset do
    mod = pythonx_module()
    :persistent_term.erase({__MODULE__, :module, mod})
    :persistent_term.erase({__MODULE__, :initialized, mod})
    :ok
  end

  @doc false
  @spec call(:run_nas | :validate, map(), map(), CerebrosBridge.Config.t()) ::
          {:ok, map()} | {:error, Error.t()}
  def call(op, spec, opts, config) do
    mod = pythonx_module()

    if Code.ensure_loaded?(mod) do
      with {:ok, module} <- ensure_imported(mod, config.python_path) do
        relay = config.notify && start_relay(mod, config.notify)
        opts = if relay, do: Map.put(opts, "notify", relay), else: opts
        globals = %{"cerebros_service" => module, "spec" => spec, "opts" => opts}
        code = if op == :run_nas, do: @run_code, else: @validate_code

        try do
          mod |> eval_with_timeout(code, globals, config.timeout_ms) |> to_result(mod)
        after
          if relay, do: stop_relay(relay)
        end
      end
    else
      {:error,
       Error.new(
         :unavailable,
         "Pythonx is not loaded: add {:pythonx, \"~> 0.4\"} or use invoker: :subprocess"
       )}
    end
  end

  # The one-time import; later callers read the kept module object.
  defp ensure_imported(mod, paths) do
    key = {__MODULE__, :module, mod}

    case :persistent_term.get(key, nil) do
      nil -> :global.trans({key, self()}, fn -> import_once(mod, key, paths) end, [node()])
      module -> {:ok, module}
    end
  end

  defp import_once(mod, key, paths) do
    case :persistent_term.get(key, nil) do
      nil ->
        case safe_eval(mod, @import_code, %{"paths" => paths}) do
          {:ok, module} when module != nil ->
            :persistent_term.put(key, module)
            :persistent_term.put({__MODULE__, :initialized, mod}, true)
            {:ok, module}

          {:ok, nil} ->
            {:error, Error.new(:unavailable, "importing cerebros_service returned nothing")}

          {:error, %Error{} = error} ->
            {:error,
             %{
               error
               | type: :unavailable,
                 message: "cannot import cerebros_service: " <> error.message
             }}

          # e.g. the RuntimeError of an interpreter that is not initialized
          {:raise, kind, reason, stack} ->
            message = Exception.format_banner(kind, reason, stack)
            {:error, Error.new(:unavailable, "cannot import cerebros_service: " <> message)}
        end

      module ->
        {:ok, module}
    end
  end

  # The eval runs in its own process so that the caller can give up on time.
  # A dirty NIF cannot be interrupted: after a timeout the Python call runs on
  # to its end and its answer is dropped.
  defp eval_with_timeout(mod, code, globals, timeout) do
    task = Task.async(fn -> safe_eval(mod, code, globals) end)

    case Task.yield(task, timeout) || Task.shutdown(task, :brutal_kill) do
      {:ok, {:raise, kind, reason, stack}} ->
        :erlang.raise(kind, reason, stack)

      {:ok, result} ->
        result

      nil ->
        {:error,
         Error.new(:timeout, "no answer from Python within #{timeout} ms", %{
           "timeout_ms" => timeout
         })}
    end
  end

  # Python exceptions become errors; anything else (e.g. an Elixir term that
  # Pythonx cannot encode) is re-raised in the caller.
  defp safe_eval(mod, code, globals) do
    {result, _globals} = apply(mod, :eval, [code, globals])
    {:ok, result}
  rescue
    error ->
      if error.__struct__ == Module.concat(mod, "Error") do
        {:error, Error.new(:python_error, python_message(error), %{})}
      else
        {:raise, :error, error, __STACKTRACE__}
      end
  end

  defp python_message(error) do
    Exception.message(error)
  rescue
    _ -> "Python raised an exception (its message could not be formatted)"
  end

  defp to_result({:ok, nil}, _mod),
    do: {:error, Error.new(:invalid_result, "cerebros_service returned None")}

  defp to_result({:ok, object}, mod) do
    case decode(mod, object) do
      {:ok, %{"status" => "failed"} = result} ->
        {:error, Error.from_result(result)}

      {:ok, %{"status" => _} = result} ->
        {:ok, result}

      {:ok, other} ->
        {:error, Error.new(:invalid_result, "not a result: #{inspect(other, limit: 20)}")}

      {:error, message} ->
        {:error, Error.new(:invalid_result, message)}
    end
  end

  defp to_result(error, _mod), do: error

  # `Pythonx.decode/1` raises on NaN/inf and leaves unknown types (numpy
  # scalars, ...) as opaque objects: both are errors here.
  defp decode(mod, object) do
    term = apply(mod, :decode, [object])

    if opaque?(term),
      do: {:error, "the result holds values Pythonx cannot decode (e.g. numpy scalars)"},
      else: {:ok, term}
  rescue
    error ->
      {:error, "the result could not be decoded (NaN or infinity?): " <> Exception.message(error)}
  end

  defp opaque?(%_{}), do: true

  defp opaque?(map) when is_map(map),
    do: Enum.any?(map, fn {k, v} -> opaque?(k) or opaque?(v) end)

  defp opaque?(list) when is_list(list), do: Enum.any?(list, &opaque?/1)
  defp opaque?(tuple) when is_tuple(tuple), do: tuple |> Tuple.to_list() |> opaque?()
  defp opaque?(_), do: false

  # Python sends `{:cerebros_event, %Pythonx.Object{}}` (pythonx.send_tagged_object
  # turns the tag into an atom); the relay decodes it and forwards
  # `{:cerebros_event, map}` to the pid the caller gave.
  defp start_relay(mod, notify) do
    caller = self()

    spawn(fn ->
      ref = Process.monitor(caller)
      relay(mod, notify, ref)
    end)
  end

  defp relay(mod, notify, ref) do
    receive do
      {:cerebros_event, object} ->
        forward(mod, notify, object)
        relay(mod, notify, ref)

      {:stop, from, stop_ref} ->
        drain(mod, notify)
        send(from, {stop_ref, :stopped})

      {:DOWN, ^ref, _, _, _} ->
        :ok
    end
  end

  defp drain(mod, notify) do
    receive do
      {:cerebros_event, object} ->
        forward(mod, notify, object)
        drain(mod, notify)
    after
      0 -> :ok
    end
  end

  defp forward(mod, notify, object) do
    case decode(mod, object) do
      {:ok, event} -> send(notify, {:cerebros_event, event})
      {:error, message} -> Logger.warning("cerebros_bridge: progress event dropped: " <> message)
    end
  end

  # Waits until every event sent during the call has been forwarded.
  defp stop_relay(relay) do
    ref = Process.monitor(relay)
    send(relay, {:stop, self(), ref})

    receive do
      {^ref, :stopped} -> Process.demonitor(ref, [:flush])
      {:DOWN, ^ref, _, _, _} -> :ok
    after
      5_000 -> Process.exit(relay, :kill)
    end
  end
end
