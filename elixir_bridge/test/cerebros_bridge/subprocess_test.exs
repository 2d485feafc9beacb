defmodule CerebrosBridge.SubprocessTest do
  # The subprocess invoker for real: `python -m cerebros_service serve` from this
  # checkout ($CEREBROS_PYTHON, else .venv/bin/python, else python3). Its searches run
  # in worker processes, each paying TensorFlow's start-up once (~6-10 s on 2 cores).
  # Leave these out with `mix test --exclude python`.
  use ExUnit.Case, async: false

  @moduletag :python
  @moduletag :capture_log
  @moduletag timeout: 300_000

  alias CerebrosBridge.Error
  import CerebrosBridge.Test.OS, only: [alive?: 1]

  @root Path.expand("../../..", __DIR__)
  @space %{"max_levels" => 1, "max_units_per_level" => 1, "min_neurons" => 4, "max_neurons" => 8}
  @tiny %{"dataset_id" => "iris", "training" => %{"epochs" => 1}, "search_space" => @space}
  @long %{
    "dataset_id" => "iris",
    "training" => %{"epochs" => 30, "patience" => 30},
    "search_space" => @space
  }
  # Trials of @long go on until cancelled (fused training ends 10 of them in seconds).
  @many %{max_trials: 10_000, population_size: 2}
  @one_trial %{max_trials: 1, population_size: 1}

  setup_all do
    dir =
      Path.join(
        System.tmp_dir!(),
        "cerebros-bridge-subprocess-#{System.unique_integer([:positive])}"
      )

    data = Path.join(dir, "data")
    File.mkdir_p!(data)
    # The operator's settings: the serve processes this module starts get them as flags.
    Application.put_env(:cerebros_bridge, :data_root, data)
    Application.put_env(:cerebros_bridge, :artifacts_root, Path.join(dir, "runs"))

    on_exit(fn ->
      Application.delete_env(:cerebros_bridge, :data_root)
      Application.delete_env(:cerebros_bridge, :artifacts_root)
      File.rm_rf(dir)
    end)

    {:ok, dir: dir, data: data}
  end

  # One serve process (and worker) for the tests that do not break theirs.
  defp opts(_dir, extra \\ []), do: [invoker: :subprocess, python_path: [@root]] ++ extra

  test "the bridge's list of limits is Python's" do
    python = CerebrosBridge.Config.resolve([]).python_executable

    code =
      "from cerebros_service.operator_config import LIMIT_NAMES; print(' '.join(LIMIT_NAMES))"

    {names, 0} = System.cmd(python, ["-c", code], env: [{"PYTHONPATH", @root}])
    assert String.split(names) == CerebrosBridge.Config.limit_names()
  end

  test "a request picks a Dask cluster and an MLflow server by the name the application config gives",
       %{dir: dir} do
    Application.put_env(:cerebros_bridge, :dask_clusters, lab: "tcp://10.0.0.5:8786")
    Application.put_env(:cerebros_bridge, :mlflow_servers, %{"team" => "http://mlflow.internal:5000"})

    try do
      named = [executor: %{kind: "dask", cluster: "lab"}, tracking: %{mlflow: %{server: "team"}}]

      assert {:ok, %{"status" => "valid", "opts" => checked}} =
               CerebrosBridge.validate(%{dataset_id: "iris"}, opts(dir, named))

      assert checked["executor"]["cluster"] == "lab"
      assert checked["tracking"]["mlflow"]["server"] == "team"

      # An address or a server URL in a request is refused by Python, naming the operator's setting.
      assert {:error, %Error{type: :validation_error, message: message, details: [detail]}} =
               CerebrosBridge.validate(
                 %{dataset_id: "iris"},
                 opts(dir, executor: %{kind: "dask", address: "tcp://attacker.test:8786"})
               )

      assert detail["loc"] == ["opts", "executor", "address"]
      assert message =~ "ask the operator" and message =~ "CEREBROS_DASK_CLUSTERS"
      assert message =~ "configured: 'lab'"

      assert {:error, %Error{type: :validation_error, details: [detail]}} =
               CerebrosBridge.validate(
                 %{dataset_id: "iris"},
                 opts(dir, tracking: %{mlflow: %{tracking_uri: "https://attacker.test"}})
               )

      assert detail["loc"] == ["opts", "tracking", "mlflow", "tracking_uri"]
      assert detail["message"] =~ "configured: 'team'"
    after
      Application.delete_env(:cerebros_bridge, :dask_clusters)
      Application.delete_env(:cerebros_bridge, :mlflow_servers)
    end
  end

  test "validate, a binary dataset, a search with events, predict; TensorFlow only in the worker",
       %{dir: dir, data: data} do
    assert {:ok, %{"pid" => os_pid, "tensorflow_loaded" => false}} =
             CerebrosBridge.ping(opts(dir))

    spec = %{dataset_id: "iris", training: %{epochs: 0, batch_size: -1}}

    assert {:error, %Error{type: :validation_error, details: details}} =
             CerebrosBridge.validate(spec, opts(dir, budget: %{max_trials: 0}))

    assert details |> Enum.map(& &1["loc"]) |> Enum.sort() ==
             [
               ["opts", "budget", "max_trials"],
               ["spec", "training", "batch_size"],
               ["spec", "training", "epochs"]
             ]

    x =
      for i <- 0..119,
          j <- 0..3,
          into: <<>>,
          do: <<:math.sin(i * 4 + j) * 3 + j::float-32-native>>

    y = for i <- 0..119, into: <<>>, do: <<rem(i, 2)::signed-64-native>>

    assert {:ok,
            %{"status" => "registered", "n_samples" => 120, "n_features" => 4, "task" => "binary"}} =
             CerebrosBridge.register_dataset(
               "waves",
               {x, :f32, {120, 4}},
               {y, {:s, 64}, {120}},
               opts(dir)
             )

    # Under the configured data root, the serve process's own.
    [x_file, y_file] =
      Path.wildcard(Path.join([data, ".cerebros-datasets", "register_dataset-*.npy"]))
      |> Enum.sort()

    assert {:ok, [%{"name" => "waves"}]} = CerebrosBridge.list_datasets(opts(dir))

    assert {:ok, %{"status" => "success", "run_id" => run_id, "completed_trials" => 1} = result} =
             CerebrosBridge.run_nas(
               %{@tiny | "dataset_id" => "waves"},
               opts(dir, budget: @one_trial, notify: self())
             )

    assert File.exists?(result["artifacts"]["best_model"])
    # serve was started with the configured artifacts root.
    assert result["artifacts"]["run_dir"] == Path.join([dir, "runs", run_id])
    assert_received {:cerebros_event, %{"type" => "trial", "trial" => 0, "run_id" => ^run_id}}
    assert_received {:cerebros_event, %{"type" => "generation"}}

    # The run's ONNX model in serve itself (at once), its Keras model in the worker.
    x5 = binary_part(x, 0, 5 * 4 * 4)

    assert {:ok, %{"status" => "success", "engine" => "onnx", "n_samples" => 5} = onnx} =
             CerebrosBridge.predict(run_id, {x5, :f32, {5, 4}}, opts(dir))

    assert onnx["classes"] == [0, 1] and length(onnx["probabilities"]) == 5

    assert {:ok, %{"status" => "success", "engine" => "keras"} = keras} =
             CerebrosBridge.predict(result["artifacts"]["run_dir"], {x5, :f32, {5, 4}},
               engine: "keras",
               invoker: :subprocess,
               python_path: [@root]
             )

    assert keras["predictions"] == onnx["predictions"]

    for {a, b} <-
          Enum.zip(List.flatten(keras["probabilities"]), List.flatten(onnx["probabilities"])),
        do: assert_in_delta(a, b, 1.0e-4)

    assert Path.wildcard(Path.join([data, ".cerebros-datasets", "predict-*"])) == []

    assert {:ok, %{"pid" => ^os_pid, "tensorflow_loaded" => false}} =
             CerebrosBridge.ping(opts(dir))

    assert {:ok, %{"unregistered" => true}} =
             CerebrosBridge.unregister_dataset("waves", opts(dir))

    refute File.exists?(x_file) or File.exists?(y_file)

    # File sources: only under the configured data root; without one, only under the
    # serve process's private folder, which holds nothing but the bridge's own files.
    File.write!(Path.join(data, "rows.csv"), "a,b,c,d\n1,2,3,4\n")
    csv = %{source: "csv", path: Path.join(data, "rows.csv")}
    assert {:ok, %{"n_samples" => 1}} = CerebrosBridge.predict(run_id, csv, opts(dir))
    Application.delete_env(:cerebros_bridge, :data_root)

    try do
      assert {:error, %Error{type: :dataset_error, message: message}} =
               CerebrosBridge.predict(run_id, csv, opts(dir))

      assert message =~ "outside the data root"
    after
      Application.put_env(:cerebros_bridge, :data_root, data)
    end
  end

  test "a timeout cancels the job for real; the serve process lives on", %{dir: dir} do
    assert {:ok, %{"pid" => os_pid}} = CerebrosBridge.ping(opts(dir))

    assert {:error,
            %Error{type: :timeout, details: %{"job_status" => "cancelled", "job_id" => _}}} =
             CerebrosBridge.run_nas(@long, opts(dir, timeout_ms: 3_000, budget: @many))

    assert {:ok, jobs} = CerebrosBridge.jobs(opts(dir))
    refute Enum.any?(jobs, &(&1["status"] in ["queued", "running", "cancelling"]))
    assert {:ok, %{"pid" => ^os_pid}} = CerebrosBridge.ping(opts(dir))
  end

  test "a worker killed mid-search is a worker_crashed error; the next job gets a fresh worker",
       %{dir: dir} do
    assert {:ok, job} = CerebrosBridge.start_nas(@long, Keyword.put(opts(dir), :budget, @many))

    worker_pid =
      wait_for(fn ->
        case CerebrosBridge.status(job) do
          {:ok, %{"status" => "running", "worker_pid" => pid, "trials_done" => done}}
          when done > 0 ->
            pid

          _ ->
            nil
        end
      end)

    System.cmd("kill", ["-9", "#{worker_pid}"])

    assert {:error, %Error{type: :worker_crashed, message: message}} =
             CerebrosBridge.await(job, 30_000)

    assert message =~ "pid #{worker_pid}"

    assert {:ok, %{"status" => "success"}} =
             CerebrosBridge.run_nas(@tiny, opts(dir, budget: @one_trial))
  end

  test "a serve process that dies ends its jobs with worker_crashed; the next call starts a fresh one",
       %{dir: dir} do
    own = Keyword.put(opts(dir), :python_path, [@root, dir])
    assert {:ok, %{"pid" => os_pid}} = CerebrosBridge.ping(own)
    assert {:ok, job} = CerebrosBridge.start_nas(@long, Keyword.put(own, :budget, @many))
    System.cmd("kill", ["-9", "#{os_pid}"])

    assert {:error,
            %Error{
              type: :worker_crashed,
              details: %{"exit_status" => status, "stderr_tail" => tail}
            }} = CerebrosBridge.await(job, 10_000)

    assert status in [137, 9] and is_binary(tail)
    assert {:ok, %{"pid" => new_pid}} = CerebrosBridge.ping(own)
    assert new_pid != os_pid
    refute alive?(os_pid)
  end

  defp wait_for(fun, tries \\ 600) do
    cond do
      value = fun.() -> value
      tries == 0 -> flunk("condition not met in time")
      true -> Process.sleep(100) && wait_for(fun, tries - 1)
    end
  end
end
