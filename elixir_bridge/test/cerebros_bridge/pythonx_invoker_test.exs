defmodule CerebrosBridge.PythonxInvokerTest do
  # The Pythonx invoker against the double (test/support/pythonx_double.ex):
  # the protocol on the Elixir side, not Python's behaviour.
  use ExUnit.Case, async: false

  @moduletag :capture_log

  alias CerebrosBridge.Error
  alias CerebrosBridge.Invoker.Pythonx, as: Invoker
  alias CerebrosBridge.Test.PythonxDouble, as: Double
  alias CerebrosBridge.Test.PythonxDouble.Object

  @run "cerebros_service.run_nas(spec, opts)"

  setup do
    Double.start()
    Invoker.reset()
    :ok
  end

  defp service_calls,
    do: Enum.reject(Double.calls(), fn {code, _} -> code =~ "import" or code == "None" end)

  test "imports the package once and passes the module, spec and opts through globals on every call" do
    for n <- 1..5 do
      assert {:ok, %{"status" => "success", "run_id" => "double-run"}} =
               CerebrosBridge.run_nas(%{dataset_id: "iris", training: %{epochs: n}},
                 invoker: :pythonx,
                 python_path: "/opt/somewhere",
                 budget: %{max_trials: 1},
                 run_id: "r#{n}"
               )
    end

    assert Double.imports() == 1
    [{import_code, import_globals} | _] = Double.calls()
    assert import_code =~ "sys.path"
    assert import_globals == %{"paths" => {:list, [{:bytes, "/opt/somewhere"}]}}

    calls = service_calls()
    assert length(calls) == 5

    for {{code, globals}, n} <- Enum.with_index(calls, 1) do
      assert code == @run
      assert globals["cerebros_service"] == %Object{value: :cerebros_service_module}

      # Keys are strings (atoms were turned into strings before Pythonx saw
      # them); strings arrive as bytes, as real Pythonx passes them.
      assert {:dict, spec} = globals["spec"]

      assert Enum.sort(spec) == [
               {{:bytes, "dataset_id"}, {:bytes, "iris"}},
               {{:bytes, "training"}, {:dict, [{{:bytes, "epochs"}, n}]}}
             ]

      assert {:dict, opts} = globals["opts"]

      assert Enum.sort(opts) == [
               {{:bytes, "budget"}, {:dict, [{{:bytes, "max_trials"}, 1}]}},
               {{:bytes, "run_id"}, {:bytes, "r#{n}"}}
             ]
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
    assert length(service_calls()) == 20

    assert Enum.all?(service_calls(), fn {code, _} ->
             code == "cerebros_service.validate(spec, opts)"
           end)
  end

  test "a Python exception becomes an error" do
    assert {:error, %Error{type: :python_error, message: message}} =
             CerebrosBridge.run_nas(%{dataset_id: "raise"}, invoker: :pythonx)

    assert message =~ "ValueError: boom"
  end

  test "a NaN in the result (decode raises) becomes an error" do
    assert {:error, %Error{type: :invalid_result, message: message}} =
             CerebrosBridge.run_nas(%{dataset_id: "nan"}, invoker: :pythonx)

    assert message =~ "NaN"
  end

  test "an opaque value in the result becomes an error" do
    assert {:error, %Error{type: :invalid_result}} =
             CerebrosBridge.run_nas(%{dataset_id: "numpy"}, invoker: :pythonx)
  end

  test "a failed result becomes an error with its type and details" do
    assert {:error,
            %Error{
              type: :validation_error,
              message: "spec.training.epochs: must be >= 1",
              details: details
            }} = CerebrosBridge.run_nas(%{dataset_id: "failed"}, invoker: :pythonx)

    assert details == [%{"loc" => ["spec", "training", "epochs"], "message" => "must be >= 1"}]
  end

  test "progress events reach the notify pid decoded, before the call returns" do
    assert {:ok, _} =
             CerebrosBridge.run_nas(%{dataset_id: "iris"}, invoker: :pythonx, notify: self())

    # Python received a pid (a pythonx.PID) under "notify": the relay, not us.
    [{@run, globals}] = service_calls()
    {:dict, opts} = globals["opts"]
    assert {_, {:pid, relay}} = List.keyfind(opts, {:bytes, "notify"}, 0)
    assert relay != self()

    assert_received {:cerebros_event, %{"type" => "trial", "trial" => 0, "value" => 0.5}}
    assert_received {:cerebros_event, %{"type" => "generation", "generation" => 0}}
    # The event holding a NaN could not be decoded and was dropped.
    refute_received {:cerebros_event, _}
    refute Process.alive?(relay)
  end

  test "a timeout returns in time" do
    {micros, result} =
      :timer.tc(fn ->
        CerebrosBridge.run_nas(%{dataset_id: "slow"}, invoker: :pythonx, timeout_ms: 100)
      end)

    assert {:error, %Error{type: :timeout}} = result
    assert micros < 450_000
  end

  test ":auto picks Pythonx when it is loaded and initialized, else the subprocess" do
    assert Invoker.available?()
    Invoker.reset()
    Double.uninitialize()
    refute Invoker.available?()
  end

  test "a failing import is reported and retried on the next call" do
    Double.uninitialize()

    assert {:error, %Error{type: :unavailable}} =
             CerebrosBridge.validate(%{dataset_id: "iris"}, invoker: :pythonx)

    Double.start()
    assert {:ok, _} = CerebrosBridge.validate(%{dataset_id: "iris"}, invoker: :pythonx)
    assert Double.imports() == 1
  end
end
