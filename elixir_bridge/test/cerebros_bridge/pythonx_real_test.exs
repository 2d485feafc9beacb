defmodule CerebrosBridge.PythonxRealTest do
  # The bridge against REAL Pythonx (built from source by shared/pythonx-lab/build.sh),
  # on the BEAM's default schedulers. Run with `make test-pythonx`, which needs
  #   PYTHONX_LAB      the lab folder (Elixir 1.18, Hex, Pythonx and its build deps)
  #   PYX_PYTHON_HOME  the CPython 3.11 home (lib/libpython3.11.so) that made .venv
  # and skips with a message without them. Searches are tiny (iris, one epoch); each
  # worker process pays TensorFlow's import once (~6-10 s on 2 cores).
  use ExUnit.Case, async: false

  @moduletag :pythonx_real
  @moduletag :capture_log
  @moduletag timeout: 600_000

  alias CerebrosBridge.Error

  @root Path.expand("../../..", __DIR__)
  @space %{"max_levels" => 1, "max_units_per_level" => 1, "min_neurons" => 4, "max_neurons" => 8}
  @tiny %{"dataset_id" => "iris", "training" => %{"epochs" => 1}, "search_space" => @space}
  @long %{
    "dataset_id" => "iris",
    "training" => %{"epochs" => 30, "patience" => 30},
    "search_space" => @space
  }
  @one %{max_trials: 1, population_size: 1}
  # Trials of @long go on until cancelled (fused training ends 10 of them in seconds).
  @many %{max_trials: 10_000, population_size: 2}

  setup_all do
    home = System.fetch_env!("PYX_PYTHON_HOME")
    [libpython | _] = Path.wildcard(Path.join(home, "lib/libpython3.*.so"))
    version = libpython |> Path.basename(".so") |> String.trim_leading("libpython")
    site_packages = Path.wildcard(Path.join(@root, ".venv/lib/python#{version}/site-packages"))

    runs =
      Path.join(System.tmp_dir!(), "cerebros-pythonx-real-#{System.unique_integer([:positive])}")

    # The operator's settings: the bridge's init eval hands them to operator_config.configure.
    Application.put_env(:cerebros_bridge, :artifacts_root, runs)
    Application.put_env(:cerebros_bridge, :pythonx_module, Pythonx)
    Application.put_env(:cerebros_bridge, :max_concurrent_jobs, 2)
    {:ok, _} = Application.ensure_all_started(:pythonx)

    :ok =
      apply(Pythonx, :init, [
        libpython,
        home,
        Path.join(home, "bin/python#{version}"),
        [sys_paths: [@root | site_packages]]
      ])

    on_exit(fn ->
      Application.put_env(:cerebros_bridge, :pythonx_module, CerebrosBridge.Test.PythonxDouble)
      Application.delete_env(:cerebros_bridge, :artifacts_root)
      File.rm_rf(runs)
    end)

    {:ok,
     home: home, libpython: libpython, version: version, site_packages: site_packages, runs: runs}
  end

  defp python(code) do
    {result, _} = apply(Pythonx, :eval, [code, %{}])
    apply(Pythonx, :decode, [result])
  end

  defp tensorflow_in_the_beam?, do: python("import sys\n'tensorflow' in sys.modules")

  defp rss_mb,
    do:
      File.read!("/proc/#{System.pid()}/status")
      |> then(&Regex.run(~r/VmRSS:\s+(\d+)/, &1))
      |> Enum.at(1)
      |> String.to_integer()
      |> div(1024)

  defp figure(text), do: IO.puts("FIGURE " <> text)

  defp active_jobs do
    {:ok, jobs} = CerebrosBridge.jobs()
    Enum.filter(jobs, &(&1["status"] in ["queued", "running", "cancelling"]))
  end

  defp wait_running(job) do
    wait_for(fn ->
      case CerebrosBridge.status(job) do
        {:ok, %{"status" => "running", "trials_done" => done, "worker_pid" => pid}}
        when done > 0 ->
          pid

        _ ->
          nil
      end
    end)
  end

  test "one search through Pythonx: result, live events; no TensorFlow in the BEAM's process" do
    assert {:ok, %{"status" => "success", "completed_trials" => 1, "run_id" => run_id} = result} =
             CerebrosBridge.run_nas(@tiny, budget: @one, notify: self(), invoker: :pythonx)

    assert File.exists?(result["artifacts"]["best_model"])

    assert_received {:cerebros_event,
                     %{"type" => "trial", "run_id" => ^run_id, "job_id" => "job-" <> _}}

    refute tensorflow_in_the_beam?()
  end

  test "predict after a search: ONNX in the BEAM's Python without TensorFlow, Keras in a worker",
       %{runs: runs} do
    assert {:ok, %{"status" => "success", "run_id" => run_id} = result} =
             CerebrosBridge.run_nas(@tiny, budget: %{max_trials: 2, population_size: 2})

    # The configured artifacts root (operator_config.configure in the init eval).
    assert result["artifacts"]["run_dir"] == Path.join(runs, run_id)
    assert File.exists?(result["artifacts"]["onnx_model"])

    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    binary = for row <- rows, value <- row, into: <<>>, do: <<value::float-32-native>>

    assert {:ok,
            %{"status" => "success", "engine" => "onnx", "predictions" => predictions} = onnx} =
             CerebrosBridge.predict(run_id, rows)

    assert length(predictions) == 2 and onnx["classes"] == [0, 1, 2]
    assert {:ok, ^onnx} = CerebrosBridge.predict(run_id, {binary, :f32, {2, 4}})
    refute tensorflow_in_the_beam?()

    assert {:ok, %{"status" => "success", "engine" => "keras", "predictions" => ^predictions}} =
             CerebrosBridge.predict(run_id, {binary, :f32, {2, 4}}, engine: "keras")

    refute tensorflow_in_the_beam?()

    assert {:error, %Error{type: :validation_error, details: [%{"loc" => ["x", 0]}]}} =
             CerebrosBridge.predict(run_id, [[1.0, 2.0]])
  end

  test "4 concurrent run_nas calls on the default schedulers all succeed, identical for one seed" do
    assert :erlang.system_info(:dirty_cpu_schedulers) == System.schedulers_online()
    started = System.monotonic_time(:millisecond)

    results =
      1..4
      |> Enum.map(fn _ ->
        Task.async(fn ->
          CerebrosBridge.run_nas(@tiny, budget: @one, seed: 3, timeout_ms: 300_000)
        end)
      end)
      |> Task.await_many(320_000)

    figure(
      "4 concurrent run_nas: all ok=#{Enum.all?(results, &match?({:ok, _}, &1))} in #{System.monotonic_time(:millisecond) - started} ms"
    )

    assert [{:ok, first} | _] = results
    assert Enum.all?(results, &match?({:ok, %{"status" => "success"}}, &1))
    values = for {:ok, result} <- results, do: Enum.map(result["trials"], & &1["value"])
    assert Enum.uniq(values) == [Enum.map(first["trials"], & &1["value"])]
  end

  test "a validate issued while 2 searches run answers in under 100 ms" do
    jobs = for _ <- 1..2, do: elem(CerebrosBridge.start_nas(@long, budget: @many), 1)
    Enum.each(jobs, &wait_running/1)

    times =
      for _ <- 1..20 do
        {micros, {:ok, %{"status" => "valid"}}} =
          :timer.tc(fn -> CerebrosBridge.validate(@tiny) end)

        Process.sleep(25)
        micros / 1000
      end

    sorted = Enum.sort(times)

    figure(
      "validate while 2 searches run: median #{Enum.at(sorted, 10)} ms, p90 #{Enum.at(sorted, 18)} ms, all #{inspect(Enum.map(sorted, &round/1))}"
    )

    # Calls answer in milliseconds, not after a search (seconds): the median within 100 ms,
    # and no call near a trial's length even when other load shares the 2 cores.
    assert Enum.at(sorted, 10) < 100
    assert List.last(sorted) < 1_000
    Enum.each(jobs, &CerebrosBridge.cancel/1)

    for job <- jobs do
      assert {:ok, %{"status" => "cancelled"}} = CerebrosBridge.await(job, 60_000)
    end
  end

  test "a timeout cancels the job; Python has no job left within a few seconds" do
    assert {:error,
            %Error{type: :timeout, details: %{"job_status" => "cancelled", "job_id" => id}}} =
             CerebrosBridge.run_nas(@long, timeout_ms: 2_000, budget: @many)

    wait_for(fn -> active_jobs() == [] end, 50)

    assert {:ok, [%{"status" => "cancelled"}]} =
             CerebrosBridge.jobs()
             |> then(fn {:ok, all} -> {:ok, Enum.filter(all, &(&1["job_id"] == id))} end)
  end

  test "a worker killed mid-search is worker_crashed; the next search succeeds" do
    {:ok, job} = CerebrosBridge.start_nas(@long, budget: @many)
    worker_pid = wait_running(job)
    System.cmd("kill", ["-9", "#{worker_pid}"])
    assert {:error, %Error{type: :worker_crashed}} = CerebrosBridge.await(job, 30_000)
    assert {:ok, %{"status" => "success"}} = CerebrosBridge.run_nas(@tiny, budget: @one)
  end

  test "5000 x 64 float32 registered in under 100 ms, then searched in a worker" do
    x = for i <- 1..(5000 * 64), into: <<>>, do: <<:math.sin(i)::float-32-native>>
    y = for i <- 1..5000, into: <<>>, do: <<rem(i, 3)::signed-64-native>>

    {micros, result} =
      :timer.tc(fn ->
        CerebrosBridge.register_dataset("sensors", {x, :f32, {5000, 64}}, {y, :s64, {5000}})
      end)

    figure("register_dataset 5000x64 float32 through Pythonx: #{micros / 1000} ms")
    assert {:ok, %{"status" => "registered", "n_samples" => 5000, "n_features" => 64}} = result
    assert micros < 100_000

    assert {:ok, %{"status" => "success"}} =
             CerebrosBridge.run_nas(%{@tiny | "dataset_id" => "sensors"}, budget: @one)

    assert {:ok, %{"unregistered" => true}} = CerebrosBridge.unregister_dataset("sensors")
  end

  test "the BEAM's resident memory stays flat over 50 small searches; TensorFlow never loads in it" do
    opts = [budget: @one, executor: %{"kind" => "process", "max_jobs_per_worker" => 100}]
    assert {:ok, _} = CerebrosBridge.run_nas(@tiny, opts)
    :erlang.garbage_collect()
    before = rss_mb()

    for seed <- 1..50,
        do:
          assert(
            {:ok, %{"status" => "success"}} = CerebrosBridge.run_nas(@tiny, [seed: seed] ++ opts)
          )

    :erlang.garbage_collect()
    after_ = rss_mb()
    figure("BEAM RSS over 50 searches: #{before} MB -> #{after_} MB")
    assert after_ - before < 40
    refute tensorflow_in_the_beam?()
  end

  test "the VM exits with status 0 while a job is in flight (halt, and a graceful stop)",
       context do
    ebins = Path.wildcard(Path.join(Mix.Project.build_path(), "lib/*/ebin"))

    init =
      ~s|:ok = Pythonx.init(#{inspect(context.libpython)}, #{inspect(context.home)}, #{inspect(Path.join(context.home, "bin/python" <> context.version))}, sys_paths: #{inspect([@root | context.site_packages])})|

    for ending <- ["System.halt(0)", "System.stop(0); Process.sleep(:infinity)", ":ok"] do
      script = """
      {:ok, _} = Application.ensure_all_started(:pythonx)
      #{init}
      Application.put_env(:cerebros_bridge, :python_path, [#{inspect(@root)}])
      Application.put_env(:cerebros_bridge, :artifacts_root, #{inspect(context.runs)})
      {:ok, _} = Application.ensure_all_started(:cerebros_bridge)
      {:ok, job} = CerebrosBridge.start_nas(#{inspect(@long)}, budget: #{inspect(@many)})
      pid = Stream.repeatedly(fn -> Process.sleep(200); CerebrosBridge.status(job) end)
            |> Stream.take(600)
            |> Enum.find_value(fn {:ok, %{"trials_done" => n, "worker_pid" => pid}} when n > 0 -> pid; _ -> nil end)
      pid || (IO.inspect(CerebrosBridge.status(job), label: "NO_TRIAL") && System.halt(3))
      IO.puts("IN_FLIGHT \#{pid}")
      #{ending}
      """

      args = Enum.flat_map(ebins, &["-pa", &1]) ++ ["-e", script]
      {out, status} = System.cmd(System.find_executable("elixir"), args, stderr_to_stdout: true)
      figure("VM end with a job in flight (#{ending}): exit status #{status}")
      assert status == 0, out
      [_, worker] = Regex.run(~r/IN_FLIGHT (\d+)/, out)
      # The worker sees its owner gone (end of its pipe) and exits.
      wait_for(fn -> not CerebrosBridge.Test.OS.alive?(worker) end, 100)
    end
  end

  defp wait_for(fun, tries \\ 1_200) do
    cond do
      value = fun.() -> value
      tries == 0 -> flunk("condition not met in time")
      true -> Process.sleep(100) && wait_for(fun, tries - 1)
    end
  end
end
