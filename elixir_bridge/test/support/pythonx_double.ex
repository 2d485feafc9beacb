defmodule CerebrosBridge.Test.PythonxDouble do
  @moduledoc """
  A test double of `Pythonx` (`eval/3`, `decode/1`, `Error`, `Object`), put in place
  with `config :cerebros_bridge, :pythonx_module`. It stands for real Pythonx 0.4
  running `cerebros_service.jobs.protocol` as the real-Pythonx suite
  (pythonx_real_test.exs) shows it:

    * every eval's globals are recorded encoded as real Pythonx encodes them
      (shared/README.md §1): binaries → `{:bytes, b}`, atoms → `{:str, s}`, lists,
      tuples, maps → `{:list | :tuple | :dict, ...}`, pids → `{:pid, pid}`;
    * the init eval returns the protocol's `call` function (an object), and in its
      globals `"configured"`: the JSON answer of `operator_config.configure(**operator)`
      (`operator`: the JSON settings; a `data_root` that is no folder or an unknown
      limit is refused, as Python does); each `call(request, notify)` eval takes the
      request as JSON text (bytes) or, when it holds binary arrays, as a dict holding
      the arrays' bytes, and returns one bytes object holding the JSON answer;
      `decode/1` of it gives that binary;
    * a submitted job runs on its own (here: an Elixir process standing for the
      runner thread) and sends `{:cerebros_job, %Object{}}` messages to `notify`,
      each decoding to JSON `{"job_id", "event"}` or, once, `{"job_id", "done"}`;
      it stops at the next "batch" (20 ms) when cancelled, with status "cancelled".

  The spec's `dataset_id` picks a behaviour: `"raise"` (the eval raises a Python
  exception), `"invalid"` (a validation error, answered at submit), `"crash"` (the
  job's worker dies: a `worker_crashed` result), `"slow"` (runs until cancelled),
  `"garbage"` (an answer that is not JSON); anything else succeeds after one trial.

  `predict` answers by its run: `"onnx-run"` at once (`engine` "onnx", one prediction
  per row of x: its first value, or for a buffer its byte size), `"keras-run"` as a job
  whose done message holds the same (`engine` "keras"), `"nope"` a validation error.
  """

  use Agent

  alias CerebrosBridge.JSON

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
    state = %{calls: [], imports: 0, initialized: true, jobs: %{}, datasets: %{}, operator: nil}
    {:ok, _} = Agent.start(fn -> state end, name: __MODULE__)
    :ok
  end

  def calls, do: Agent.get(__MODULE__, &Enum.reverse(&1.calls))
  def imports, do: Agent.get(__MODULE__, & &1.imports)
  def datasets, do: Agent.get(__MODULE__, & &1.datasets)
  def operator, do: Agent.get(__MODULE__, & &1.operator)
  def jobs_status(id), do: Agent.get(__MODULE__, & &1.jobs[id].status)
  def uninitialize, do: Agent.update(__MODULE__, &%{&1 | initialized: false})

  def eval(code, globals, _opts \\ []) when is_binary(code) and is_map(globals) do
    unless Agent.get(__MODULE__, & &1.initialized) do
      raise RuntimeError, "the Python interpreter has not been initialized"
    end

    encoded = Map.new(globals, fn {key, value} when is_binary(key) -> {key, encode(value)} end)
    Agent.update(__MODULE__, &%{&1 | calls: [{code, encoded} | &1.calls]})

    cond do
      code == "None" ->
        {nil, %{}}

      code =~ "from cerebros_service.jobs.protocol import call" and code =~ "def thread_entry" and
          code =~ "operator_config.configure(**json.loads(operator))" ->
        Process.sleep(50)
        {:bytes, settings} = encoded["operator"]
        {:ok, settings} = JSON.decode(settings)
        Agent.update(__MODULE__, &%{&1 | imports: &1.imports + 1, operator: settings})
        {%Object{value: :protocol_call}, %{"configured" => bytes(configure(settings))}}

      code == "call(request, notify)" and encoded["call"] == %Object{value: :protocol_call} ->
        {answer(request(encoded["request"]), encoded["request"], encoded["notify"]), %{}}

      true ->
        raise Error, type: "NameError", value: "unexpected code: #{code}"
    end
  end

  def decode(%Object{value: {:bytes, binary}}), do: binary
  def decode(%Object{} = object), do: object

  defp bytes(term), do: %Object{value: {:bytes, JSON.encode!(term)}}

  # The request as Python would see it: JSON text (orjson.loads) or a dict of encoded terms.
  defp request({:bytes, json}), do: elem(JSON.decode(json), 1)
  defp request({:dict, _} = dict), do: plain(dict)

  defp plain({:dict, pairs}), do: Map.new(pairs, fn {k, v} -> {plain(k), plain(v)} end)
  defp plain({kind, items}) when kind in [:list, :tuple], do: Enum.map(items, &plain/1)
  defp plain({kind, text}) when kind in [:bytes, :str], do: text
  defp plain(other), do: other

  defp answer(%{"op" => op} = request, raw, notify) do
    case op do
      "ping" -> bytes(%{"status" => "ok", "pid" => 4242, "tensorflow_loaded" => false})
      "validate" -> bytes(%{"status" => "valid", "spec" => %{}, "opts" => %{}})
      "submit" -> submit(request, notify)
      "cancel" -> job_op(request, :cancel)
      "status" -> job_op(request, :status)
      "register_dataset" -> register(request, raw)
      "jobs" -> bytes(%{"status" => "ok", "jobs" => []})
      "predict" -> predict(request, notify)
    end
  end

  @limits ~w(max_file_bytes max_npz_member_bytes max_csv_line_bytes max_cells
             max_candidate_params max_fused_params max_error_details)

  defp configure(settings) do
    cond do
      settings["data_root"] && not File.dir?(settings["data_root"]) ->
        failed("internal_error", ["data_root"], "is not an existing folder")

      unknown = Enum.find(Map.keys(settings["limits"] || %{}), &(&1 not in @limits)) ->
        failed("internal_error", ["limits", unknown], "is not a known limit")

      true ->
        Map.merge(
          %{
            "status" => "configured",
            "data_root" => nil,
            "artifacts_root" => "/cwd/cerebros_runs"
          },
          settings
        )
    end
  end

  defp predict(%{"run" => run, "x" => x}, notify) do
    predictions =
      case x do
        %{"data" => data} -> [byte_size(data)]
        rows -> Enum.map(rows, &hd/1)
      end

    answer = fn engine ->
      %{"status" => "success", "run_id" => run, "engine" => engine, "predictions" => predictions}
    end

    case {run, notify} do
      {"onnx-run", _} ->
        bytes(answer.("onnx"))

      {"keras-run", {:pid, pid}} ->
        id = "job-#{System.unique_integer([:positive])}"
        done = bytes(%{"job_id" => id, "done" => answer.("keras")})
        spawn(fn -> Process.sleep(20) && send(pid, {:cerebros_job, done}) end)
        bytes(%{"job_id" => id, "status" => "queued", "run_id" => run})

      _ ->
        bytes(
          failed("validation_error", ["run"], "no run #{inspect(run)} under the artifacts root")
        )
    end
  end

  defp submit(%{"spec" => spec} = request, notify) do
    case spec["dataset_id"] do
      "raise" ->
        raise Error, type: "ValueError", value: "boom"

      "garbage" ->
        %Object{value: {:bytes, "not json"}}

      "invalid" ->
        bytes(
          failed(
            "validation_error",
            ["spec", "training", "epochs"],
            "must be in [1, 10000], got 0"
          )
        )

      kind ->
        start_job(kind, notify, request["events"] == true)
    end
  end

  defp failed(type, loc, message),
    do: %{
      "status" => "failed",
      "error_type" => type,
      "error" => message,
      "error_details" => [%{"loc" => loc, "message" => message}]
    }

  defp start_job(kind, {:pid, notify}, events?) do
    id = "job-#{System.unique_integer([:positive])}"
    runner = spawn(fn -> run_job(id, kind, notify, events?) end)
    Agent.update(__MODULE__, &put_in(&1.jobs[id], %{runner: runner, status: "running"}))
    bytes(%{"job_id" => id, "status" => "queued", "run_id" => "double-run"})
  end

  defp run_job(id, kind, notify, events?) do
    send_job = fn message ->
      send(notify, {:cerebros_job, bytes(Map.put(message, "job_id", id))})
    end

    event = %{
      "type" => "trial",
      "trial" => 0,
      "value" => 0.5,
      "run_id" => "double-run",
      "job_id" => id
    }

    if events?, do: send_job.(%{"event" => event})

    result =
      case kind do
        "crash" ->
          failed("worker_crashed", [], "the worker process (pid 1) was killed by signal 9")

        "slow" ->
          wait_for_cancel(id)

        _ ->
          %{"status" => "success", "run_id" => "double-run", "completed_trials" => 1}
      end

    Agent.update(__MODULE__, &put_in(&1.jobs[id].status, result["status"]))
    send_job.(%{"done" => result})
  end

  defp wait_for_cancel(id) do
    receive do
      :cancel -> %{"status" => "cancelled", "run_id" => "double-run", "completed_trials" => 0}
    after
      20 -> wait_for_cancel(id)
    end
  end

  defp job_op(%{"job_id" => id}, op) do
    case Agent.get(__MODULE__, & &1.jobs[id]) do
      nil ->
        bytes(failed("validation_error", ["job_id"], "names no job"))

      %{runner: runner, status: status} ->
        if op == :cancel and status == "running", do: send(runner, :cancel)
        shown = if op == :cancel and status == "running", do: "cancelling", else: status
        bytes(%{"job_id" => id, "status" => shown})
    end
  end

  defp register(%{"name" => name}, encoded) do
    {:dict, pairs} = encoded
    {_, x} = List.keyfind(pairs, {:bytes, "x"}, 0)
    Agent.update(__MODULE__, &put_in(&1.datasets[name], x))
    bytes(%{"status" => "registered", "name" => name, "replaced" => false})
  end

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
end
