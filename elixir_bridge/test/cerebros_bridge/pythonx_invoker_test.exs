defmodule CerebrosBridge.PythonxInvokerTest do
  # The Pythonx invoker and the job lifecycle against the double
  # (test/support/pythonx_double.ex): the protocol on the Elixir side.
  use ExUnit.Case, async: false

  @moduletag :capture_log

  alias CerebrosBridge.Error
  alias CerebrosBridge.Test.PythonxDouble, as: Double
  alias CerebrosBridge.Test.PythonxDouble.Object

  setup do
    Double.start()
    CerebrosBridge.Pythonx.reset()
    :ok
  end

  defp protocol_calls,
    do: Enum.filter(Double.calls(), fn {code, _} -> code == "call(request, notify)" end)

  # Requests cross as JSON text (one bytes object).
  defp request_of({_code, %{"request" => {:bytes, json}}}),
    do: elem(CerebrosBridge.JSON.decode(json), 1)

  test "imports once, then passes the entry point, the request and the notify pid through globals" do
    for n <- 1..3 do
      assert {:ok, %{"status" => "success", "run_id" => "double-run"}} =
               CerebrosBridge.run_nas(%{dataset_id: "iris", training: %{epochs: n}},
                 invoker: :pythonx,
                 python_path: "/opt/somewhere",
                 max_concurrent_jobs: 2
               )
    end

    assert Double.imports() == 1
    [{init_code, init_globals} | _] = Double.calls()
    assert init_code =~ "sys.path" and init_code =~ "thread_entry"

    assert init_globals == %{
             "paths" => {:list, [{:bytes, "/opt/somewhere"}]},
             "max_concurrent_jobs" => 2,
             "operator" => {:bytes, "{}"}
           }

    calls = protocol_calls()
    assert length(calls) == 3

    for {{_code, globals} = call, n} <- Enum.with_index(calls, 1) do
      assert globals["call"] == %Object{value: :protocol_call}
      # The job's messages go to the bridge's job process, not to the caller.
      assert {:pid, job_process} = globals["notify"]
      assert job_process != self()
      assert %{"op" => "submit", "spec" => spec, "events" => false} = request_of(call)
      assert spec == %{"dataset_id" => "iris", "training" => %{"epochs" => n}}
    end
  end

  test "concurrent first callers import once" do
    results =
      1..20
      |> Task.async_stream(
        fn _ -> CerebrosBridge.validate(%{"dataset_id" => "iris"}, invoker: :pythonx) end,
        max_concurrency: 20
      )
      |> Enum.map(fn {:ok, result} -> result end)

    assert Enum.all?(results, &match?({:ok, %{"status" => "valid"}}, &1))
    assert Double.imports() == 1
    assert length(protocol_calls()) == 20
  end

  test "a Python exception becomes an error; an answer that is not JSON too" do
    assert {:error, %Error{type: :python_error, message: message}} =
             CerebrosBridge.run_nas(%{dataset_id: "raise"}, invoker: :pythonx)

    assert message =~ "ValueError: boom"

    assert {:error, %Error{type: :invalid_result}} =
             CerebrosBridge.run_nas(%{dataset_id: "garbage"}, invoker: :pythonx)
  end

  test "an invalid request is answered at submit, with every detail" do
    assert {:error,
            %Error{type: :validation_error, details: [%{"loc" => ["spec", "training", "epochs"]}]}} =
             CerebrosBridge.start_nas(%{dataset_id: "invalid"}, invoker: :pythonx)
  end

  test "progress events reach the notify pid decoded, before the result" do
    assert {:ok, _} =
             CerebrosBridge.run_nas(%{dataset_id: "iris"}, invoker: :pythonx, notify: self())

    assert_received {:cerebros_event, %{"type" => "trial", "trial" => 0, "job_id" => "job-" <> _}}
    assert [call] = protocol_calls()
    assert request_of(call)["events"] == true
  end

  test "start_nas, status, cancel and await: a cancelled job ends with its cancelled result" do
    assert {:ok, job} = CerebrosBridge.start_nas(%{dataset_id: "slow"}, invoker: :pythonx)
    assert {:ok, %{"status" => "running"}} = CerebrosBridge.status(job)
    assert {:error, %Error{type: :timeout}} = CerebrosBridge.await(job, 50)
    assert {:ok, %{"status" => "cancelling"}} = CerebrosBridge.cancel(job)
    assert {:ok, %{"status" => "cancelled"}} = CerebrosBridge.await(job, 2_000)
    assert {:error, %Error{type: :not_running}} = CerebrosBridge.cancel(job)
  end

  test "run_nas: a timeout cancels the job for real and returns in time" do
    {micros, result} =
      :timer.tc(fn ->
        CerebrosBridge.run_nas(%{dataset_id: "slow"}, invoker: :pythonx, timeout_ms: 100)
      end)

    assert {:error,
            %Error{type: :timeout, details: %{"job_status" => "cancelled", "job_id" => id}}} =
             result

    assert micros < 1_000_000
    assert Double.jobs_status(id) == "cancelled"
  end

  test "a worker that crashed is a worker_crashed error" do
    assert {:error, %Error{type: :worker_crashed, message: message}} =
             CerebrosBridge.run_nas(%{dataset_id: "crash"}, invoker: :pythonx)

    assert message =~ "signal 9"
  end

  test "the owner's exit cancels its job" do
    test = self()

    owner =
      spawn(fn ->
        {:ok, job} = CerebrosBridge.start_nas(%{dataset_id: "slow"}, invoker: :pythonx)
        send(test, {:job, job})
        Process.sleep(:infinity)
      end)

    assert_receive {:job, job}
    Process.exit(owner, :kill)
    wait_until(fn -> Double.jobs_status(job.id) == "cancelled" end)
  end

  test "stopping the application cancels running jobs and hands their results over" do
    assert {:ok, job} = CerebrosBridge.start_nas(%{dataset_id: "slow"}, invoker: :pythonx)
    :ok = Application.stop(:cerebros_bridge)
    {:ok, _} = Application.ensure_all_started(:cerebros_bridge)
    assert Double.jobs_status(job.id) == "cancelled"
    assert_received {_ref, {:ok, %{"status" => "cancelled"}}}
  end

  test "register_dataset sends a binary as bytes with its dtype and shape (tuples and Nx tensors)" do
    data = <<1.0::float-32-native, 2.0::float-32-native>>

    assert {:ok, %{"status" => "registered"}} =
             CerebrosBridge.register_dataset("pairs", {data, :f32, {1, 2}}, [0], invoker: :pythonx)

    x = Map.new(elem(Double.datasets()["pairs"], 1))

    assert x == %{
             {:bytes, "data"} => {:bytes, data},
             {:bytes, "dtype"} => {:bytes, "float32"},
             {:bytes, "shape"} => {:list, [1, 2]}
           }

    tensor = %Nx.Tensor{data: data, type: {:f, 32}, shape: {2}}
    assert {:ok, _} = CerebrosBridge.register_dataset("vector", tensor, [0, 1], invoker: :pythonx)
    assert Map.new(elem(Double.datasets()["vector"], 1))[{:bytes, "shape"}] == {:list, [2]}
  end

  describe "the operator's settings" do
    setup do
      dir =
        Path.join(System.tmp_dir!(), "cerebros-operator-#{System.unique_integer([:positive])}")

      File.mkdir_p!(dir)

      on_exit(fn ->
        for key <- [:data_root, :artifacts_root, :limits, :dask_clusters, :mlflow_servers],
            do: Application.delete_env(:cerebros_bridge, key)

        File.rm_rf(dir)
      end)

      {:ok, dir: dir}
    end

    test "the init eval configures the ones set in the application config, and only those",
         %{dir: dir} do
      Application.put_env(:cerebros_bridge, :data_root, dir)
      Application.put_env(:cerebros_bridge, :limits, max_file_bytes: 1_000, max_cells: 50)
      assert {:ok, _} = CerebrosBridge.validate(%{dataset_id: "iris"}, invoker: :pythonx)

      assert Double.operator() == %{
               "data_root" => dir,
               "limits" => %{"max_file_bytes" => 1_000, "max_cells" => 50}
             }

      Application.put_env(:cerebros_bridge, :artifacts_root, Path.join(dir, "runs"))
      CerebrosBridge.Pythonx.reset()
      assert {:ok, _} = CerebrosBridge.ping(invoker: :pythonx)
      assert Double.operator()["artifacts_root"] == Path.join(dir, "runs")
    end

    test "the init eval hands Python the named Dask clusters and MLflow servers" do
      Application.put_env(:cerebros_bridge, :dask_clusters, gpu: "tcp://10.0.0.5:8786")
      Application.put_env(:cerebros_bridge, :mlflow_servers, %{"team" => "http://mlflow.internal:5000"})
      assert {:ok, _} = CerebrosBridge.ping(invoker: :pythonx)

      assert Double.operator() == %{
               "dask_clusters" => %{"gpu" => "tcp://10.0.0.5:8786"},
               "mlflow_servers" => %{"team" => "http://mlflow.internal:5000"}
             }
    end

    test "settings Python refuses are an :unavailable error naming the key; the next call tries again",
         %{dir: dir} do
      Application.put_env(:cerebros_bridge, :data_root, Path.join(dir, "missing"))

      assert {:error, %Error{type: :unavailable, message: message, details: [detail]}} =
               CerebrosBridge.validate(%{dataset_id: "iris"}, invoker: :pythonx)

      assert message =~ "refused config :cerebros_bridge" and detail["loc"] == ["data_root"]
      Application.put_env(:cerebros_bridge, :data_root, dir)
      assert {:ok, _} = CerebrosBridge.validate(%{dataset_id: "iris"}, invoker: :pythonx)
      assert Double.imports() == 2
    end
  end

  describe "predict/3" do
    test "an ONNX run is answered at once; rows go as JSON, a binary as bytes" do
      assert {:ok, %{"status" => "success", "engine" => "onnx", "predictions" => [5.1, 6.7]}} =
               CerebrosBridge.predict("onnx-run", [[5.1, 3.5], [6.7, 3.0]],
                 invoker: :pythonx,
                 probabilities: false
               )

      [first] = protocol_calls()

      assert request_of(first) == %{
               "op" => "predict",
               "run" => "onnx-run",
               "x" => [[5.1, 3.5], [6.7, 3.0]],
               "opts" => %{"probabilities" => false}
             }

      data = <<1.0::float-32-native, 2.0::float-32-native>>
      tensor = %Nx.Tensor{data: data, type: {:f, 32}, shape: {1, 2}}

      for x <- [{data, :f32, {1, 2}}, tensor] do
        assert {:ok, %{"predictions" => [8]}} =
                 CerebrosBridge.predict("onnx-run", x, invoker: :pythonx)
      end

      {_code, %{"request" => {:dict, pairs}}} = List.last(protocol_calls())
      {_, {:dict, x}} = List.keyfind(pairs, {:bytes, "x"}, 0)

      assert Map.new(x) == %{
               {:bytes, "data"} => {:bytes, data},
               {:bytes, "dtype"} => {:bytes, "float32"},
               {:bytes, "shape"} => {:list, [1, 2]}
             }
    end

    test "a Keras run is a job in a worker: its done message is the answer" do
      assert {:ok, %{"status" => "success", "engine" => "keras", "predictions" => [1, 2]}} =
               CerebrosBridge.predict("keras-run", [[1, 0], [2, 0]], invoker: :pythonx)

      # The job's messages go to the bridge's job process, not to the caller.
      [{_code, globals}] = protocol_calls()
      assert {:pid, job_process} = globals["notify"]
      assert job_process != self()
    end

    test "a refused run or x is an error; a bad x is refused before Python" do
      assert {:error, %Error{type: :validation_error, details: [%{"loc" => ["run"]}]}} =
               CerebrosBridge.predict("nope", [[1.0]], invoker: :pythonx)

      assert_raise ArgumentError, ~r/an array must be/, fn ->
        CerebrosBridge.predict("onnx-run", {:rows, 1}, invoker: :pythonx)
      end

      assert_raise FunctionClauseError, fn -> CerebrosBridge.predict(:run, [[1.0]]) end
    end
  end

  test ":auto picks Pythonx when it is loaded and initialized, else the subprocess" do
    assert CerebrosBridge.Pythonx.available?()
    CerebrosBridge.Pythonx.reset()
    Double.uninitialize()
    refute CerebrosBridge.Pythonx.available?()
  end

  test "a failing import is reported and retried on the next call" do
    Double.uninitialize()

    assert {:error, %Error{type: :unavailable}} =
             CerebrosBridge.validate(%{dataset_id: "iris"}, invoker: :pythonx)

    Double.start()
    assert {:ok, _} = CerebrosBridge.validate(%{dataset_id: "iris"}, invoker: :pythonx)
    assert Double.imports() == 1
  end

  defp wait_until(fun, tries \\ 100) do
    cond do
      fun.() -> :ok
      tries == 0 -> flunk("condition not met in time")
      true -> Process.sleep(20) && wait_until(fun, tries - 1)
    end
  end
end
