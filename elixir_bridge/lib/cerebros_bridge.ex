defmodule CerebrosBridge do
  @moduledoc """
  Neural architecture search from Elixir: calls the Python package `cerebros_service`
  through Pythonx (in this OS process) or a `python -m cerebros_service serve`
  subprocess, and returns its results as maps with string keys.

      {:ok, result} = CerebrosBridge.run_nas(%{dataset_id: "digits"}, budget: %{max_trials: 5})
      result["best_metric"]

  A search runs as a *job* on a Python thread, in a worker process of its own by
  default; every call the bridge makes is short, so no BEAM scheduler waits on a
  search. `run_nas/2` waits for the job's end; `start_nas/2`, `await/2`, `cancel/1`
  and `status/1` drive it step by step.

  Spec and Python options (`run_id`, `seed`, `budget`, `parameters`, ...;
  docs/contract.md) may use atom or string keys; options may be a keyword list or a
  map. Failures come back as `{:error, %CerebrosBridge.Error{}}`; nothing is raised
  but for bad bridge options (`ArgumentError`).

  Bridge options (atom keys: `:invoker`, `:timeout_ms`, `:notify`,
  `:max_concurrent_jobs`, `:python_executable`, `:python_path`) are taken out of the
  options, per call or from `config :cerebros_bridge`; everything else goes to Python.
  The operator's settings (`:data_root`, `:artifacts_root`, `:limits`,
  `:dask_clusters`, `:mlflow_servers`) come from `config :cerebros_bridge` only: no
  call can name or widen them. A request picks a Dask cluster or an MLflow server by
  the name given in `:dask_clusters` / `:mlflow_servers`, never by its address.

  After a search, `predict/3` applies a run's best model to new samples.

  See docs/elixir.md for set-up, concurrency, cancellation and telemetry.
  """

  alias CerebrosBridge.{Config, Error, Job, JobServer, Telemetry, Tensor}

  @type opts :: keyword() | map()
  @type result :: {:ok, map()} | {:error, Error.t()}

  @doc """
  Runs a search and waits for its result within `:timeout_ms`. On timeout the job is
  cancelled and `{:error, %Error{type: :timeout}}` returned, its `details` holding
  `"job_id"` and the job's final `"job_status"`. A failed result is `{:error,
  %Error{}}` (its `error_type`, `error`, `error_details`); a cancelled one `{:ok,
  %{"status" => "cancelled"}}`.
  """
  @spec run_nas(map(), opts()) :: result()
  def run_nas(spec, opts \\ []) when is_map(spec) and (is_list(opts) or is_map(opts)) do
    {config, python_opts} = Config.split(opts)

    span(:run_nas, config, python_opts, fn invoker ->
      with {:ok, job} <- submit(invoker, spec, python_opts, config),
           do: await_or_cancel(job, config.timeout_ms)
    end)
  end

  # The job's result within `timeout_ms`, else the job is cancelled and a timeout error
  # names it and its final status.
  defp await_or_cancel(job, timeout_ms) do
    case await(job, timeout_ms) do
      {:error, %Error{type: :timeout} = error} ->
        cancel(job)

        status =
          with {:ok, %{"status" => status}} <- await(job, 10_000),
               do: status,
               else: (_ -> "cancelling")

        details = %{"timeout_ms" => timeout_ms, "job_id" => job.id, "job_status" => status}

        {:error,
         %{
           error
           | message: "no result within #{timeout_ms} ms; the job was cancelled",
             details: details
         }}

      result ->
        result
    end
  end

  @doc """
  Starts a search and returns its job at once, after validation (an invalid request
  is `{:error, %Error{type: :validation_error}}` here). The calling process owns the
  job: it alone can `await/2` the result, and the job is cancelled if it exits.
  """
  @spec start_nas(map(), opts()) :: {:ok, Job.t()} | {:error, Error.t()}
  def start_nas(spec, opts \\ []) when is_map(spec) and (is_list(opts) or is_map(opts)) do
    {config, python_opts} = Config.split(opts)
    submit(invoker(config), spec, python_opts, config)
  end

  defp submit(invoker, spec, python_opts, config) do
    request = %{
      "op" => "submit",
      "spec" => stringify_keys(spec),
      "opts" => stringify_keys(python_opts),
      "events" => config.notify != nil
    }

    JobServer.start(transport(invoker), request, config)
  end

  @doc "Waits up to `timeout` ms for the job's result (owner only); on timeout the job goes on."
  @spec await(Job.t(), timeout()) :: result()
  def await(%Job{pid: pid, ref: ref}, timeout \\ :infinity) do
    monitor = Process.monitor(pid)

    receive do
      {^ref, result} ->
        Process.demonitor(monitor, [:flush])
        result

      {:DOWN, ^monitor, _, _, reason} ->
        {:error, Error.new(:not_running, "the job ended without a result: #{inspect(reason)}")}
    after
      timeout ->
        Process.demonitor(monitor, [:flush])

        {:error,
         Error.new(:timeout, "no result within #{timeout} ms", %{"timeout_ms" => timeout})}
    end
  end

  @doc """
  Cancels a job: a queued one at once, a running one within a training batch; it ends
  with `{:ok, %{"status" => "cancelled", ...}}` holding the trials done and the best
  model so far. Answers the job's status (`"cancelling"`, `"cancelled"`, ...).
  """
  @spec cancel(Job.t()) :: result()
  def cancel(%Job{pid: pid}), do: job_call(pid, :cancel)

  @doc "The job's status: `\"status\"`, `\"trials_done\"`, `\"best_so_far\"`, `\"worker_pid\"`, ..."
  @spec status(Job.t()) :: result()
  def status(%Job{pid: pid}), do: job_call(pid, :status)

  defp job_call(pid, op) do
    GenServer.call(pid, op, 30_000)
  catch
    :exit, _ -> {:error, Error.new(:not_running, "the job has already ended")}
  end

  @doc """
  Checks a request without running it (never starts TensorFlow): `{:ok, %{"status"
  => "valid", "spec", "opts"}}` with every default filled in, or `{:error, %Error{type:
  :validation_error}}` whose `details` list every problem with its `"loc"` path.
  """
  @spec validate(map(), opts()) :: result()
  def validate(spec, opts \\ []) when is_map(spec) and (is_list(opts) or is_map(opts)) do
    {config, python_opts} = Config.split(opts)

    request = %{
      "op" => "validate",
      "spec" => stringify_keys(spec),
      "opts" => stringify_keys(python_opts)
    }

    span(:validate, config, python_opts, &python(&1, config, request))
  end

  @doc """
  Registers `x` (samples × features) and `y` under `name`, for specs that say
  `dataset_id: name`. Each is an `Nx.Tensor`, a `{binary, dtype, shape}` tuple (e.g.
  `{bin, :f32, {5000, 64}}`) or a list. Binaries reach Python without JSON (Pythonx:
  bytes read in place; subprocess: .npy files). Options: `task:` (`"auto"`),
  `replace:` (`false`) and the bridge options.
  """
  @spec register_dataset(String.t(), term(), term(), keyword()) :: result()
  def register_dataset(name, x, y, opts \\ []) when is_binary(name) and is_list(opts) do
    {python, bridge} = Keyword.split(opts, [:task, :replace])
    config = Config.resolve(bridge)

    request = %{
      "op" => "register_dataset",
      "name" => name,
      "x" => Tensor.to_buffer(x),
      "y" => Tensor.to_buffer(y),
      "task" => to_string(Keyword.get(python, :task, "auto")),
      "replace" => Keyword.get(python, :replace, false)
    }

    span(:register_dataset, config, %{}, &python(&1, config, request))
  end

  @doc """
  Predicts with the best model of a finished run: `run` is its run id (under the
  artifacts root) or its folder's path. `x` is an `Nx.Tensor`, a `{binary, dtype,
  shape}` tuple (samples × features, as for `register_dataset/4`), a list of rows or
  of `%{feature name => value}` records, or a source map (`%{source: "csv", path:
  ...}`, docs/using-the-result.md).

  Options: Python's (`probabilities:` true, `batch_size:` 4096, `engine:` `"auto"` |
  `"onnx"` | `"keras"`) and the bridge options (`:timeout_ms` bounds the wait).
  `{:ok, %{"status" => "success", "predictions" => [...], "probabilities", "classes",
  "engine", "n_samples", "run_id", "task"}}` or `{:error, %Error{}}`.

  A run with `best_model.onnx` is predicted with onnxruntime at once, without
  TensorFlow; one that needs the Keras model (no ONNX file, or `engine: "keras"`) is
  predicted in a worker process, as a short job (through Pythonx, TensorFlow never
  loads in the BEAM's OS process).
  """
  @spec predict(String.t(), term(), opts()) :: result()
  def predict(run, x, opts \\ []) when is_binary(run) and (is_list(opts) or is_map(opts)) do
    {config, python_opts} = Config.split(opts)

    request = %{
      "op" => "predict",
      "run" => run,
      # A source map as it is; an array as a buffer (binary) or a list (rows, records).
      "x" => stringify_keys(if is_map(x) and not is_struct(x), do: x, else: Tensor.to_buffer(x)),
      "opts" => stringify_keys(python_opts)
    }

    span(:predict, config, %{}, fn invoker ->
      # A job when the Keras model runs in a worker; else the answer itself.
      case JobServer.start(transport(invoker), request, config) do
        {:ok, %Job{} = job} -> await_or_cancel(job, config.timeout_ms)
        answer -> answer
      end
    end)
  end

  @doc "Releases a registered dataset: `{:ok, %{\"unregistered\" => boolean}}`."
  @spec unregister_dataset(String.t(), keyword()) :: result()
  def unregister_dataset(name, opts \\ []) when is_binary(name),
    do: call(opts, %{"op" => "unregister_dataset", "name" => name})

  @doc "The registered datasets: `{:ok, [%{\"name\", \"n_samples\", ...}]}`."
  @spec list_datasets(keyword()) :: {:ok, [map()]} | {:error, Error.t()}
  def list_datasets(opts \\ []),
    do:
      with({:ok, answer} <- call(opts, %{"op" => "list_datasets"}), do: {:ok, answer["datasets"]})

  @doc "Every job Python knows (queued, running, recently ended), as status maps."
  @spec jobs(keyword()) :: {:ok, [map()]} | {:error, Error.t()}
  def jobs(opts \\ []),
    do: with({:ok, answer} <- call(opts, %{"op" => "jobs"}), do: {:ok, answer["jobs"]})

  @doc """
  `{:ok, %{"status" => "ok", "pid" => os_pid, "tensorflow_loaded" => boolean}}` from the
  Python the bridge talks to (through Pythonx: the BEAM's own OS process).
  """
  @spec ping(keyword()) :: result()
  def ping(opts \\ []) when is_list(opts) do
    config = Config.resolve(opts)
    span(:ping, config, %{}, &python(&1, config, %{"op" => "ping"}))
  end

  defp call(opts, request) do
    config = Config.resolve(opts)
    python(invoker(config), config, request)
  end

  defp python(invoker, config, request),
    do: transport(invoker).request(config, request) |> answer()

  defp answer({:ok, answer}), do: to_result(answer)
  defp answer(error), do: error

  @doc false
  @spec to_result(term()) :: result()
  def to_result(%{"status" => "failed"} = result), do: {:error, Error.from_result(result)}
  def to_result(%{"status" => _} = result), do: {:ok, result}

  def to_result(other),
    do: {:error, Error.new(:invalid_result, "not a result: #{inspect(other, limit: 20)}")}

  defp span(op, config, python_opts, fun) do
    invoker = invoker(config)

    Telemetry.span(
      invoker,
      %{op: op, run_id: python_opts["run_id"] || python_opts[:run_id]},
      fn -> fun.(invoker) end
    )
  end

  defp invoker(%Config{invoker: :auto}),
    do: if(CerebrosBridge.Pythonx.available?(), do: :pythonx, else: :subprocess)

  defp invoker(%Config{invoker: invoker}), do: invoker

  defp transport(:pythonx), do: CerebrosBridge.Pythonx
  defp transport(:subprocess), do: CerebrosBridge.Serve

  @doc false
  # Map keys that are atoms become strings, all the way down; values stay as they are.
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
