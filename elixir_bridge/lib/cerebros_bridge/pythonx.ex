defmodule CerebrosBridge.Pythonx do
  @moduledoc false
  # The in-process invoker. Every call is one short `Pythonx.eval` of the job protocol
  # (cerebros_service/jobs/protocol.py): a search is only *submitted* here and runs on
  # a Python thread (in a worker process by default), so no eval holds a dirty CPU
  # scheduler or the GIL for more than milliseconds. Requests (but binary arrays),
  # answers and job messages cross as one JSON bytes object each: 2x (requests) to
  # 50x (results) cheaper than a tree of terms (benchmarks/bridge_overhead.exs).
  #
  # Pythonx is optional: it is reached through `apply/3` on the module named by
  # `config :cerebros_bridge, :pythonx_module` (default `Pythonx`; the fast tests put a
  # double there), so the bridge compiles without it.

  alias CerebrosBridge.{Error, JSON}

  # Evaluated once. `thread_entry` is defined by this eval on purpose: a Python thread
  # can message Elixir (and print) only when its first frame comes from an eval's code.
  # `operator` (JSON) holds the operator's settings that are configured (data_root,
  # artifacts_root, limits, dask_clusters, mlflow_servers); the answer of configure is
  # left in `configured` (JSON).
  @init_code """
  import json, sys
  for _entry in reversed(paths):
      _entry = _entry.decode() if isinstance(_entry, bytes) else str(_entry)
      if _entry not in sys.path:
          sys.path.insert(0, _entry)
  from cerebros_service import jobs, operator_config
  from cerebros_service.jobs.protocol import call
  from cerebros_service.jsonsafe import dumps

  configured = dumps(operator_config.configure(**json.loads(operator)))

  def thread_entry(loop):
      loop()

  jobs.configure(max_concurrent_jobs=max_concurrent_jobs, thread_entry=thread_entry)
  call
  """

  def pythonx_module, do: Application.get_env(:cerebros_bridge, :pythonx_module, Pythonx)

  # Pythonx is loaded and its interpreter initialized (a positive answer is kept).
  @spec available?() :: boolean()
  def available? do
    mod = pythonx_module()

    :persistent_term.get({__MODULE__, :ready, mod}, false) or
      (Code.ensure_loaded?(mod) and probe(mod))
  end

  defp probe(mod) do
    apply(mod, :eval, ["None", %{}])
    :persistent_term.put({__MODULE__, :ready, mod}, true)
  rescue
    _ -> false
  end

  @doc false
  # Forgets the entry point (tests).
  def reset do
    for key <- [:call, :ready], do: :persistent_term.erase({__MODULE__, key, pythonx_module()})
    :ok
  end

  # One protocol request; `subscriber` (op submit) gets the job's messages as
  # `{:cerebros_job, %Pythonx.Object{}}`, read with `decode_message/1`.
  @spec request(CerebrosBridge.Config.t(), map(), pid() | nil) ::
          {:ok, map()} | {:error, Error.t()}
  def request(config, request, subscriber \\ nil) do
    mod = pythonx_module()
    # Binary arrays go as terms (Python bytes, read in place), and so do terms JSON
    # cannot carry, for Python to name what is wrong.
    payload =
      with false <- Enum.any?(["x", "y"], &match?(%{"data" => _}, request[&1])),
           {:ok, json} <- JSON.encode(request),
           do: json,
           else: (_ -> request)

    with {:ok, call} <- entry_point(mod, config),
         {:ok, object, _globals} <-
           eval(mod, "call(request, notify)", %{
             "call" => call,
             "request" => payload,
             "notify" => subscriber
           }),
         do: decode_message(object)
  end

  @spec decode_message(term()) :: {:ok, map()} | {:error, Error.t()}
  def decode_message(object) do
    with json when is_binary(json) <- apply(pythonx_module(), :decode, [object]),
         {:ok, %{} = answer} <- JSON.decode(json) do
      {:ok, answer}
    else
      other ->
        {:error,
         Error.new(:invalid_result, "not a protocol answer: #{inspect(other, limit: 10)}")}
    end
  end

  # Jobs run on the interpreter's own threads: no separate process to watch.
  def host(_config), do: {:ok, nil}

  defp entry_point(mod, config) do
    key = {__MODULE__, :call, mod}

    with nil <- :persistent_term.get(key, nil),
         do: :global.trans({key, self()}, fn -> import_once(mod, key, config) end, [node()]),
         else: (call -> {:ok, call})
  end

  defp import_once(mod, key, config) do
    case :persistent_term.get(key, nil) do
      nil -> initialize(mod, key, config)
      call -> {:ok, call}
    end
  end

  # Imports the protocol and configures the operator's settings; the entry point is kept
  # only when Python accepted them (else the next call tries again).
  defp initialize(mod, key, config) do
    globals = %{
      "paths" => config.python_path,
      "max_concurrent_jobs" => config.max_concurrent_jobs,
      "operator" => JSON.encode!(CerebrosBridge.Config.operator(config))
    }

    # Output of Python's threads goes to devices that outlive the calling process.
    devices = [
      stdout_device: Process.whereis(:user) || Process.group_leader(),
      stderr_device: Process.whereis(:standard_error)
    ]

    with {:ok, call, out} when call != nil <- eval(mod, @init_code, globals, devices),
         {:ok, %{"status" => "configured"}} <- decode_message(out["configured"]) do
      :persistent_term.put(key, call)
      :persistent_term.put({__MODULE__, :ready, mod}, true)
      {:ok, call}
    else
      {:ok, nil, _globals} ->
        {:error, Error.new(:unavailable, "importing cerebros_service returned nothing")}

      {:ok, %{} = refused} ->
        error = Error.from_result(refused)

        {:error,
         %{
           error
           | type: :unavailable,
             message: "cerebros_service refused config :cerebros_bridge: " <> error.message
         }}

      {:error, error} ->
        {:error,
         %{
           error
           | type: :unavailable,
             message: "cannot import cerebros_service: " <> error.message
         }}
    end
  end

  defp eval(mod, code, globals, opts \\ []) do
    if Code.ensure_loaded?(mod) do
      {result, globals} = apply(mod, :eval, [code, globals, opts])
      {:ok, result, globals}
    else
      {:error,
       Error.new(
         :unavailable,
         "Pythonx is not loaded: add {:pythonx, \"~> 0.4\"} or use invoker: :subprocess"
       )}
    end
  rescue
    error ->
      cond do
        error.__struct__ == Module.concat(mod, "Error") ->
          {:error, Error.new(:python_error, python_message(error))}

        # e.g. the RuntimeError of an interpreter that is not initialized
        is_exception(error, RuntimeError) ->
          {:error, Error.new(:unavailable, Exception.message(error))}

        true ->
          reraise error, __STACKTRACE__
      end
  end

  defp python_message(error) do
    Exception.message(error)
  rescue
    _ -> "Python raised an exception (its message could not be formatted)"
  end
end
