defmodule CerebrosBridge.SubprocessTest do
  # The subprocess invoker for real, against this checkout's Python package
  # ($CEREBROS_PYTHON, else .venv/bin/python, else python3). Each test that
  # trains pays TensorFlow's start-up (~6-10 s on 2 cores).
  # Leave these out with `mix test --exclude python`.
  use ExUnit.Case, async: false

  @moduletag :python
  @moduletag :capture_log
  @moduletag timeout: 120_000

  alias CerebrosBridge.Error
  import CerebrosBridge.Test.OS, only: [alive?: 1, tmp_dir: 1]

  setup :tmp_dir

  @spec_tiny %{"dataset_id" => "iris", "training" => %{"epochs" => 1}}
  @budget %{max_trials: 1, population_size: 2}

  @root Path.expand("../../..", __DIR__)

  # Each test gets its own pool key (python_path differs), so pools never mix.
  defp opts(tmp_dir, extra) do
    [
      invoker: :subprocess,
      python_path: [@root, tmp_dir],
      artifacts_dir: Path.join(tmp_dir, "runs")
    ] ++ extra
  end

  defp ping_opts(tmp_dir), do: [python_path: [@root, tmp_dir], pool_size: 1]

  test "one-shot: a tiny run succeeds, with the contract's keys and progress events", %{
    tmp_dir: dir
  } do
    assert {:ok, result} =
             CerebrosBridge.run_nas(
               @spec_tiny,
               opts(dir, pool: false, budget: @budget, notify: self())
             )

    assert %{"status" => "success", "completed_trials" => 1, "run_id" => run_id} = result
    assert %{"fitness" => _, "levels" => _} = result["best_architecture"]
    assert is_number(result["best_metric"])
    assert [%{"generation" => 0} | _] = result["population_history"]
    assert File.exists?(result["artifacts"]["best_model"])

    assert_received {:cerebros_event,
                     %{
                       "type" => "trial",
                       "trial" => 0,
                       "status" => "completed",
                       "run_id" => ^run_id
                     }}

    assert_received {:cerebros_event, %{"type" => "generation", "generation" => 0}}
  end

  test "one-shot: a validation error lists every problem with its path", %{tmp_dir: dir} do
    spec = %{dataset_id: "iris", training: %{epochs: 0, batch_size: -1}}

    assert {:error, %Error{type: :validation_error, details: details}} =
             CerebrosBridge.validate(spec, opts(dir, pool: false, budget: %{max_trials: 0}))

    locs = details |> Enum.map(& &1["loc"]) |> Enum.sort()

    assert locs == [
             ["opts", "budget", "max_trials"],
             ["spec", "training", "batch_size"],
             ["spec", "training", "epochs"]
           ]
  end

  test "one-shot: a timeout kills Python and leaves no process behind", %{tmp_dir: dir} do
    assert {:error, %Error{type: :timeout, details: %{"os_pid" => os_pid}}} =
             CerebrosBridge.run_nas(
               @spec_tiny,
               opts(dir, pool: false, budget: @budget, timeout_ms: 1_500)
             )

    refute alive?(os_pid)
  end

  test "pool: one warm worker serves validate, run (with events) and ping", %{tmp_dir: dir} do
    opts = opts(dir, pool_size: 1)
    ping_opts = ping_opts(dir)

    assert {:ok, %{"pid" => os_pid, "tensorflow_loaded" => false}} =
             CerebrosBridge.ping(ping_opts)

    assert {:ok, %{"status" => "valid"}} = CerebrosBridge.validate(@spec_tiny, opts)

    assert {:ok, %{"status" => "success", "run_id" => run_id}} =
             CerebrosBridge.run_nas(@spec_tiny, opts ++ [budget: @budget, notify: self()])

    assert_received {:cerebros_event, %{"type" => "trial", "run_id" => ^run_id}}
    assert_received {:cerebros_event, %{"type" => "generation"}}

    # Same OS process throughout, TensorFlow now loaded in it.
    assert {:ok, %{"pid" => ^os_pid, "tensorflow_loaded" => true}} =
             CerebrosBridge.ping(ping_opts)
  end

  test "pool: a worker that crashes mid-run returns the stderr tail and is replaced", %{
    tmp_dir: dir
  } do
    ping_opts = ping_opts(dir)
    assert {:ok, %{"pid" => os_pid}} = CerebrosBridge.ping(ping_opts)

    task =
      Task.async(fn ->
        CerebrosBridge.run_nas(@spec_tiny, opts(dir, pool_size: 1, budget: @budget))
      end)

    Process.sleep(1_000)
    System.cmd("kill", ["-9", "#{os_pid}"])

    assert {:error, %Error{type: :worker_crashed, details: details}} = Task.await(task)
    assert details["exit_status"] in [137, 9]
    assert is_binary(details["stderr_tail"])

    assert {:ok, %{"pid" => new_pid}} = CerebrosBridge.ping(ping_opts)
    assert new_pid != os_pid
  end

  test "pool: a timeout kills the worker; the next call gets a fresh one", %{tmp_dir: dir} do
    ping_opts = ping_opts(dir)
    assert {:ok, %{"pid" => os_pid}} = CerebrosBridge.ping(ping_opts)

    assert {:error, %Error{type: :timeout, details: %{"os_pid" => ^os_pid}}} =
             CerebrosBridge.run_nas(
               @spec_tiny,
               opts(dir, pool_size: 1, budget: @budget, timeout_ms: 1_500)
             )

    refute alive?(os_pid)
    assert {:ok, %{"pid" => new_pid}} = CerebrosBridge.ping(ping_opts)
    assert new_pid != os_pid
  end
end
