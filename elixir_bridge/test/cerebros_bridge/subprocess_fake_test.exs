defmodule CerebrosBridge.SubprocessFakeTest do
  # The subprocess invoker against small shell scripts standing in for
  # `python -m cerebros_service serve`: crashes and protocol lines, without Python.
  use ExUnit.Case, async: false

  @moduletag :capture_log

  alias CerebrosBridge.Error
  import CerebrosBridge.Test.OS

  setup :tmp_dir

  # Reads one request line, answers it as a queued job, then sends the job's lines.
  @submit_then ~S"""
  read line; id=${line#*\"id\":}; id=${id%%,*}
  echo "{\"id\":$id,\"result\":{\"status\":\"queued\",\"job_id\":\"j1\",\"run_id\":\"fake\"}}"
  """

  defp opts(python, extra \\ []), do: [invoker: :subprocess, python_executable: python] ++ extra

  test "a serve process that dies at once is a worker_crashed error with its stderr tail", %{
    tmp_dir: dir
  } do
    python = script(dir, "crash", ~S(echo "args: $*" >&2; echo "Traceback: boom" >&2; exit 3))

    assert {:error, %Error{type: :worker_crashed, message: message, details: details}} =
             CerebrosBridge.validate(%{dataset_id: "iris"}, opts(python))

    assert message =~ "status 3" and message =~ "Traceback: boom"
    assert details["exit_status"] == 3
    assert details["stderr_tail"] =~ "args: -m cerebros_service serve --max-concurrent-jobs 1"
  end

  test "a serve process that closes its input before a request is answered as a crash, not a timeout",
       %{tmp_dir: dir} do
    # The request may meet a closed pipe (the Port then ends with epipe, maybe without an exit status).
    python = script(dir, "deaf", ~S(exec 0<&-; echo "not listening" >&2; sleep 1; exit 4))
    started = System.monotonic_time(:millisecond)

    assert {:error, %Error{type: :worker_crashed, details: %{"stderr_tail" => tail}}} =
             CerebrosBridge.ping(opts(python))

    assert tail =~ "not listening"
    assert System.monotonic_time(:millisecond) - started < 20_000
  end

  describe "the operator's settings" do
    setup do
      on_exit(fn ->
        for key <- [:data_root, :artifacts_root, :limits, :dask_clusters, :mlflow_servers],
            do: Application.delete_env(:cerebros_bridge, key)
      end)
    end

    # Echoes its arguments and one limit's variable to stderr, then exits.
    defp echo_serve(dir),
      do:
        script(
          dir,
          "echo",
          ~S(echo "args: $*" >&2; echo "cells: $CEREBROS_MAX_CELLS" >&2; exit 3)
        )

    test "serve gets the configured roots as flags and the limits as CEREBROS_MAX_* variables", %{
      tmp_dir: dir
    } do
      Application.put_env(:cerebros_bridge, :data_root, Path.join(dir, "data"))
      Application.put_env(:cerebros_bridge, :artifacts_root, Path.join(dir, "runs"))
      Application.put_env(:cerebros_bridge, :limits, %{"max_cells" => 1_000})

      assert {:error, %Error{type: :worker_crashed, details: %{"stderr_tail" => tail}}} =
               CerebrosBridge.ping(opts(echo_serve(dir)))

      assert tail =~
               "args: -m cerebros_service serve --max-concurrent-jobs 1 --data-root #{dir}/data --artifacts-root #{dir}/runs\n"

      assert tail =~ "cells: 1000\n"
    end

    test "serve gets the configured Dask clusters and MLflow servers as name=URL flags", %{
      tmp_dir: dir
    } do
      Application.put_env(:cerebros_bridge, :data_root, dir)

      Application.put_env(:cerebros_bridge, :dask_clusters,
        gpu: "tcp://10.0.0.5:8786",
        cpu: "tls://10.0.0.6:8786"
      )

      Application.put_env(:cerebros_bridge, :mlflow_servers, %{
        "team" => "http://mlflow.internal:5000"
      })

      assert {:error, %Error{type: :worker_crashed, details: %{"stderr_tail" => tail}}} =
               CerebrosBridge.ping(opts(echo_serve(dir)))

      assert tail =~
               "--data-root #{dir} --dask-clusters cpu=tls://10.0.0.6:8786,gpu=tcp://10.0.0.5:8786 " <>
                 "--mlflow-servers team=http://mlflow.internal:5000\n"
    end

    test "without a configured data root serve gets a private folder, removed when it ends", %{
      tmp_dir: dir
    } do
      assert {:error, %Error{details: %{"stderr_tail" => tail}}} =
               CerebrosBridge.ping(opts(echo_serve(dir)))

      [_, private] = Regex.run(~r/--data-root (\S+)\n/, tail)

      assert String.starts_with?(private, System.tmp_dir!()) and
               private =~ "cerebros-bridge-data-"

      refute tail =~ "--artifacts-root"
      refute tail =~ "--dask-clusters" or tail =~ "--mlflow-servers"
      assert tail =~ "cells: \n"
      wait_until(fn -> not File.exists?(private) end)
    end

    test "a serve that refuses its settings is an error with Python's reason", %{tmp_dir: dir} do
      refuse = ~S"""
      echo '{"id":null,"result":{"status":"failed","error_type":"validation_error","error":"--data-root: the data root must be an existing folder","error_details":[{"loc":["data_root"],"message":"is not an existing folder"}]}}'
      exit 2
      """

      assert {:error, %Error{type: :worker_crashed, message: message, details: details}} =
               CerebrosBridge.ping(opts(script(dir, "refuse", refuse)))

      assert message =~ "status 2" and
               message =~ "--data-root: the data root must be an existing folder"

      assert [%{"loc" => ["data_root"]}] = details["error_details"]
    end
  end

  test "a job's event and done lines reach notify and the caller; other lines are skipped", %{
    tmp_dir: dir
  } do
    python =
      script(
        dir,
        "answer",
        @submit_then <>
          ~S"""
          echo "not a protocol line"
          echo "{\"id\":$id,\"job_id\":\"j1\",\"event\":{\"type\":\"trial\",\"trial\":0}}"
          echo "{\"id\":$id,\"job_id\":\"j1\",\"done\":{\"status\":\"success\",\"run_id\":\"fake\",\"best_metric\":0.5}}"
          cat > /dev/null
          """
      )

    assert {:ok, %{"status" => "success", "run_id" => "fake"}} =
             CerebrosBridge.run_nas(%{dataset_id: "iris"}, opts(python, notify: self()))

    assert_received {:cerebros_event, %{"type" => "trial", "trial" => 0}}
  end

  test "a caller that dies has its job cancelled", %{tmp_dir: dir} do
    seen = Path.join(dir, "seen")

    python =
      script(
        dir,
        "record",
        @submit_then <>
          ~s"""
          while read line; do
            echo "$line" >> #{seen}; id=${line#*\\"id\\":}; id=${id%%,*}
            echo "{\\"id\\":$id,\\"result\\":{\\"status\\":\\"cancelling\\"}}"
          done
          """
      )

    test = self()

    caller =
      spawn(fn ->
        send(test, CerebrosBridge.start_nas(%{dataset_id: "iris"}, opts(python)))
        Process.sleep(:infinity)
      end)

    assert_receive {:ok, %CerebrosBridge.Job{id: "j1"}}, 5_000
    Process.exit(caller, :kill)
    wait_until(fn -> File.exists?(seen) and File.read!(seen) =~ ~s("op":"cancel") end)
    assert File.read!(seen) =~ ~s("job_id":"j1")
  end

  test "a missing executable is reported as unavailable" do
    assert {:error, %Error{type: :unavailable}} =
             CerebrosBridge.validate(%{}, opts("/nonexistent/python"))
  end

  defp wait_until(fun, tries \\ 100) do
    cond do
      fun.() -> :ok
      tries == 0 -> flunk("condition not met in time")
      true -> Process.sleep(50) && wait_until(fun, tries - 1)
    end
  end
end
