defmodule CerebrosBridge.APITest do
  # Options, key handling and telemetry, through the Pythonx double (no Python).
  use ExUnit.Case, async: false

  alias CerebrosBridge.Error
  alias CerebrosBridge.Test.PythonxDouble, as: Double

  setup do
    Double.start()
    CerebrosBridge.Invoker.Pythonx.reset()
    :ok
  end

  test "bridge options are checked; a typo or a bad value fails loudly" do
    assert_raise ArgumentError, ~r/invoker/, fn -> CerebrosBridge.run_nas(%{}, invoker: :grpc) end

    assert_raise ArgumentError, ~r/timeout_ms/, fn ->
      CerebrosBridge.run_nas(%{}, timeout_ms: -1)
    end

    assert_raise ArgumentError, ~r/pool_size/, fn ->
      CerebrosBridge.validate(%{}, pool_size: 0)
    end

    assert_raise ArgumentError, ~r/notify/, fn -> CerebrosBridge.validate(%{}, notify: :me) end

    assert_raise ArgumentError, ~r/python_path/, fn ->
      CerebrosBridge.validate(%{}, python_path: [:x])
    end

    assert_raise ArgumentError, ~r/unknown keys/, fn -> CerebrosBridge.ping(budget: %{}) end
    assert_raise FunctionClauseError, fn -> CerebrosBridge.run_nas([dataset_id: "iris"], []) end
  end

  test "per-call options override the application config" do
    Application.put_env(:cerebros_bridge, :timeout_ms, 1234)
    Application.put_env(:cerebros_bridge, :pool_size, 3)

    try do
      config = CerebrosBridge.Config.resolve(pool_size: 1)
      assert config.timeout_ms == 1234
      assert config.pool_size == 1
      assert config.invoker == :auto
    after
      Application.delete_env(:cerebros_bridge, :timeout_ms)
      Application.delete_env(:cerebros_bridge, :pool_size)
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
               CerebrosBridge.run_nas(%{dataset_id: "failed"}, invoker: :pythonx)

      assert_received {:telemetry, [:cerebros, :bridge, :pythonx, :stop], _,
                       %{status: :error, error_type: :validation_error}}

      assert_raise ArgumentError, fn ->
        CerebrosBridge.run_nas(%{dataset_id: "iris", f: fn -> 1 end}, invoker: :pythonx)
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
    assert %Error{type: "new_kind"} = Error.from_result(%{"error_type" => "new_kind"})
  end
end
