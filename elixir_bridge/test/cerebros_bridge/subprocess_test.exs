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
  @one_trial %{max_trials: 1, population_size: 1}

  setup_all do
    dir =
      Path.join(
        System.tmp_dir!(),
        "cerebros-bridge-subprocess-#{System.unique_integer([:positive])}"
      )

    File.mkdir_p!(dir)
    # Read by the serve processes this module starts (and their workers).
    System.put_env("CEREBROS_ARTIFACTS_ROOT", Path.join(dir, "runs"))
    on_exit(fn -> File.rm_rf(dir) end)
    {:ok, dir: dir}
  end

  # One serve process (and worker) for the tests that do not break theirs.
  defp opts(dir, extra \\ []),
    do: [invoker: :subprocess, python_path: [@root], data_root: dir] ++ extra

  test "validate, a binary dataset, a search with events; TensorFlow only in the worker", %{
    dir: dir
  } do
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

    [x_file, y_file] =
      Path.wildcard(Path.join([dir, ".cerebros-datasets", "waves-*.npy"])) |> Enum.sort()

    assert {:ok, [%{"name" => "waves"}]} = CerebrosBridge.list_datasets(opts(dir))

    assert {:ok, %{"status" => "success", "run_id" => run_id, "completed_trials" => 1} = result} =
             CerebrosBridge.run_nas(
               %{@tiny | "dataset_id" => "waves"},
               opts(dir, budget: @one_trial, notify: self())
             )

    assert File.exists?(result["artifacts"]["best_model"])
    assert_received {:cerebros_event, %{"type" => "trial", "trial" => 0, "run_id" => ^run_id}}
    assert_received {:cerebros_event, %{"type" => "generation"}}

    assert {:ok, %{"pid" => ^os_pid, "tensorflow_loaded" => false}} =
             CerebrosBridge.ping(opts(dir))

    assert {:ok, %{"unregistered" => true}} =
             CerebrosBridge.unregister_dataset("waves", opts(dir))

    refute File.exists?(x_file) or File.exists?(y_file)
  end

  test "a timeout cancels the job for real; the serve process lives on", %{dir: dir} do
    assert {:ok, %{"pid" => os_pid}} = CerebrosBridge.ping(opts(dir))

    assert {:error,
            %Error{type: :timeout, details: %{"job_status" => "cancelled", "job_id" => _}}} =
             CerebrosBridge.run_nas(@long, opts(dir, timeout_ms: 3_000))

    assert {:ok, jobs} = CerebrosBridge.jobs(opts(dir))
    refute Enum.any?(jobs, &(&1["status"] in ["queued", "running", "cancelling"]))
    assert {:ok, %{"pid" => ^os_pid}} = CerebrosBridge.ping(opts(dir))
  end

  test "a worker killed mid-search is a worker_crashed error; the next job gets a fresh worker",
       %{dir: dir} do
    assert {:ok, job} = CerebrosBridge.start_nas(@long, opts(dir))

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
    assert {:ok, job} = CerebrosBridge.start_nas(@long, own)
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
