defmodule CerebrosBridge.APITest do
  # Options, key handling and telemetry, through the Pythonx double (no Python).
  use ExUnit.Case, async: false

  alias CerebrosBridge.Error
  alias CerebrosBridge.Test.PythonxDouble, as: Double

  setup do
    Double.start()
    CerebrosBridge.Pythonx.reset()
    :ok
  end

  defp submitted_opts do
    [{_, %{"request" => {:bytes, json}}}] =
      Enum.filter(Double.calls(), fn {code, _} -> code == "call(request, notify)" end)

    {:ok, %{"op" => "submit", "opts" => opts}} = CerebrosBridge.JSON.decode(json)
    opts
  end

  test "bridge options are checked; a typo or a bad value fails loudly" do
    assert_raise ArgumentError, ~r/invoker/, fn -> CerebrosBridge.run_nas(%{}, invoker: :grpc) end

    assert_raise ArgumentError, ~r/timeout_ms/, fn ->
      CerebrosBridge.run_nas(%{}, timeout_ms: -1)
    end

    assert_raise ArgumentError, ~r/max_concurrent_jobs/, fn ->
      CerebrosBridge.validate(%{}, max_concurrent_jobs: 0)
    end

    assert_raise ArgumentError, ~r/notify/, fn -> CerebrosBridge.validate(%{}, notify: :me) end

    assert_raise ArgumentError, ~r/python_path/, fn ->
      CerebrosBridge.validate(%{}, python_path: [:x])
    end

    assert_raise ArgumentError, ~r/unknown keys/, fn -> CerebrosBridge.ping(budget: %{}) end

    assert_raise ArgumentError, ~r/dtype/, fn ->
      CerebrosBridge.register_dataset("d", {<<0>>, :q8, {1}}, [1])
    end

    assert_raise FunctionClauseError, fn -> CerebrosBridge.run_nas([dataset_id: "iris"], []) end
  end

  test "the operator's roots and limits are the application config's: a call cannot name them" do
    for {key, value} <- [
          data_root: "/",
          artifacts_root: "/tmp",
          limits: %{max_cells: 1},
          dask_clusters: %{"mine" => "tcp://attacker.test:8786"},
          mlflow_servers: %{"mine" => "https://attacker.test"}
        ] do
      assert_raise ArgumentError, ~r/unknown keys \[#{inspect(key)}\]/, fn ->
        CerebrosBridge.register_dataset("d", [[1.0]], [0], [{key, value}])
      end

      assert_raise ArgumentError, ~r/unknown keys \[#{inspect(key)}\]/, fn ->
        CerebrosBridge.ping([{key, value}])
      end
    end

    assert Double.calls() == []

    # In run_nas/validate options it is no bridge option: it reaches Python as
    # opts.data_root, which may only narrow the operator's root (docs/contract.md).
    assert {:ok, _} = CerebrosBridge.run_nas(%{dataset_id: "iris"}, data_root: "team")
    assert submitted_opts() == %{"data_root" => "team"}
  end

  test "bad operator settings in the application config fail loudly, naming the key" do
    for {key, value, message} <- [
          {:data_root, 42, ~r/:data_root must be a folder's path/},
          {:artifacts_root, ~c"runs", ~r/:artifacts_root must be a folder's path/},
          {:limits, %{max_rows: 5}, ~r/unknown limit "max_rows"; known: max_file_bytes/},
          {:limits, [max_cells: 0], ~r/a positive integer, got: {:max_cells, 0}/},
          {:limits, "big", ~r/:limits must be a map or keyword list/},
          {:dask_clusters, "gpu=tcp://10.0.0.5:8786", ~r/:dask_clusters must be a map or keyword list/},
          {:dask_clusters, %{"gpu" => 8786}, ~r/:dask_clusters: each entry must be a name and a URL/},
          {:dask_clusters, %{"g p u" => "tcp://10.0.0.5:8786"}, ~r/a name must be 1-64 letters/},
          {:mlflow_servers, [team: "http://a,b"], ~r/:mlflow_servers: the URL of "team" must hold no/},
          {:mlflow_servers, [team: "http://a", team: "http://b"], ~r/:mlflow_servers: names "team" twice/}
        ] do
      Application.put_env(:cerebros_bridge, key, value)

      try do
        assert_raise ArgumentError, message, fn -> CerebrosBridge.ping() end
      after
        Application.delete_env(:cerebros_bridge, key)
      end
    end
  end

  test "options as a map: string keys are Python's opts, atom bridge keys still the bridge's" do
    assert {:ok, %{"status" => "success"}} =
             CerebrosBridge.run_nas(%{"dataset_id" => "iris"}, %{
               "budget" => %{"max_trials" => 1},
               "seed" => 3,
               timeout_ms: 5_000
             })

    assert submitted_opts() == %{"budget" => %{"max_trials" => 1}, "seed" => 3}
  end

  test "keyword options: the bridge's are taken out, the rest reach Python with string keys" do
    assert {:ok, _} =
             CerebrosBridge.run_nas(%{dataset_id: "iris"},
               run_id: "r1",
               timeout_ms: 5_000,
               notify: self()
             )

    assert submitted_opts() == %{"run_id" => "r1"}
  end

  test "per-call options override the application config" do
    Application.put_env(:cerebros_bridge, :timeout_ms, 1234)
    Application.put_env(:cerebros_bridge, :max_concurrent_jobs, 3)

    try do
      config = CerebrosBridge.Config.resolve(max_concurrent_jobs: 2)
      assert {config.timeout_ms, config.max_concurrent_jobs, config.invoker} == {1234, 2, :auto}
    after
      Application.delete_env(:cerebros_bridge, :timeout_ms)
      Application.delete_env(:cerebros_bridge, :max_concurrent_jobs)
    end
  end

  test ":auto uses Pythonx when it is initialized" do
    assert {:ok, %{"status" => "valid"}} = CerebrosBridge.validate(%{dataset_id: "iris"})
    assert Double.imports() == 1
  end

  test "atom and string keys both become string keys, all the way down" do
    assert CerebrosBridge.stringify_keys(%{a: %{"b" => [%{c: :d}]}, nil: 1}) ==
             %{"a" => %{"b" => [%{"c" => :d}]}, nil => 1}
  end

  test "telemetry: start and stop with duration and run_id; stop carries errors" do
    test_pid = self()
    id = "test-#{inspect(make_ref())}"
    events = for suffix <- [:start, :stop, :exception], do: [:cerebros, :bridge, :pythonx, suffix]

    :telemetry.attach_many(
      id,
      events,
      fn event, m, md, _ -> send(test_pid, {:telemetry, event, m, md}) end,
      nil
    )

    try do
      assert {:ok, _} =
               CerebrosBridge.run_nas(%{dataset_id: "iris"}, invoker: :pythonx, run_id: "r-1")

      assert_received {:telemetry, [:cerebros, :bridge, :pythonx, :start], %{system_time: _},
                       %{run_id: "r-1", op: :run_nas}}

      assert_received {:telemetry, [:cerebros, :bridge, :pythonx, :stop], %{duration: duration},
                       %{run_id: "r-1", status: :ok}}

      assert is_integer(duration) and duration > 0

      # Without a run_id in the call, the stop event takes the result's.
      assert {:ok, _} = CerebrosBridge.run_nas(%{dataset_id: "iris"}, invoker: :pythonx)

      assert_received {:telemetry, [:cerebros, :bridge, :pythonx, :stop], _,
                       %{run_id: "double-run"}}

      assert {:error, %Error{}} =
               CerebrosBridge.run_nas(%{dataset_id: "invalid"}, invoker: :pythonx)

      assert_received {:telemetry, [:cerebros, :bridge, :pythonx, :stop], _,
                       %{status: :error, error_type: :validation_error}}

      assert_raise ArgumentError, fn ->
        CerebrosBridge.validate(%{dataset_id: "iris", f: fn -> 1 end}, invoker: :pythonx)
      end

      assert_received {:telemetry, [:cerebros, :bridge, :pythonx, :exception], %{duration: _},
                       %{kind: :error}}
    after
      :telemetry.detach(id)
    end
  end

  test "the error struct is an exception with a readable message" do
    error =
      Error.from_result(%{
        "status" => "failed",
        "error_type" => "dataset_error",
        "error" => "unknown dataset 'x'"
      })

    assert %Error{type: :dataset_error, details: []} = error
    assert Exception.message(error) == "dataset_error: unknown dataset 'x'"
    assert %Error{type: :worker_crashed} = Error.from_result(%{"error_type" => "worker_crashed"})
    assert %Error{type: "new_kind"} = Error.from_result(%{"error_type" => "new_kind"})
  end
end
