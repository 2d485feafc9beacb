defmodule CerebrosBridge.SubprocessFakeTest do
  # The subprocess invoker against small shell scripts standing in for
  # Python: crashes, hangs and protocol output, without TensorFlow's start-up.
  use ExUnit.Case, async: false

  @moduletag :capture_log

  alias CerebrosBridge.Error
  import CerebrosBridge.Test.OS

  setup :tmp_dir

  test "one-shot: a non-zero exit without a result returns the stderr tail", %{tmp_dir: dir} do
    python = script(dir, "crash", ~S(echo "args: $*" >&2; echo "Traceback: boom" >&2; exit 3))

    assert {:error, %Error{type: :worker_crashed, message: message, details: details}} =
             CerebrosBridge.run_nas(%{dataset_id: "iris"},
               invoker: :subprocess,
               pool: false,
               python_executable: python
             )

    assert message =~ "status 3"
    assert message =~ "Traceback: boom"
    assert details["exit_status"] == 3
    assert details["stderr_tail"] =~ ~r/args: -m cerebros_service run --input \S+ --events/
  end

  test "one-shot: event lines are forwarded and the result line is returned", %{tmp_dir: dir} do
    python =
      script(dir, "answer", ~S"""
      echo "this goes to stderr" >&2
      echo '{"event": {"type": "trial", "trial": 0}}'
      echo '{"event": {"type": "generation", "generation": 0}}'
      echo '{"result": {"status": "success", "run_id": "fake", "best_metric": 0.5}}'
      """)

    assert {:ok, %{"status" => "success", "run_id" => "fake"}} =
             CerebrosBridge.run_nas(%{dataset_id: "iris"},
               invoker: :subprocess,
               pool: false,
               python_executable: python,
               notify: self()
             )

    assert_received {:cerebros_event, %{"type" => "trial", "trial" => 0}}
    assert_received {:cerebros_event, %{"type" => "generation", "generation" => 0}}
  end

  test "one-shot: a failed result becomes an error with its details", %{tmp_dir: dir} do
    python =
      script(dir, "invalid", ~S"""
      echo '{"status": "failed", "error_type": "validation_error", "error": "bad",'
      echo ' "error_details": [{"loc": ["spec", "dataset_id"], "message": "required"}]}'
      exit 2
      """)

    assert {:error,
            %Error{
              type: :validation_error,
              message: "bad",
              details: [%{"loc" => ["spec", "dataset_id"]}]
            }} =
             CerebrosBridge.validate(%{},
               invoker: :subprocess,
               pool: false,
               python_executable: python
             )
  end

  test "one-shot: a timeout kills the process and the processes it started", %{tmp_dir: dir} do
    child_file = Path.join(dir, "child.pid")
    python = script(dir, "hang", "sleep 60 &\necho $! > #{child_file}\nwait\n")

    assert {:error, %Error{type: :timeout, details: %{"os_pid" => os_pid}}} =
             CerebrosBridge.run_nas(%{dataset_id: "iris"},
               invoker: :subprocess,
               pool: false,
               python_executable: python,
               timeout_ms: 300
             )

    child = child_file |> File.read!() |> String.trim()
    refute alive?(os_pid)
    refute alive?(child)
  end

  test "pool: a worker that dies returns an error with the stderr tail", %{tmp_dir: dir} do
    python = script(dir, "serve-crash", ~S(read line; echo "serve died: $1 $2 $3" >&2; exit 5))

    assert {:error, %Error{type: :worker_crashed, details: details}} =
             CerebrosBridge.validate(%{dataset_id: "iris"},
               invoker: :subprocess,
               python_executable: python
             )

    assert details["exit_status"] == 5
    assert details["stderr_tail"] =~ "serve died: -m cerebros_service serve"
  end

  test "pool: a timeout kills the worker and its children", %{tmp_dir: dir} do
    child_file = Path.join(dir, "child.pid")
    python = script(dir, "serve-hang", "sleep 60 &\necho $! > #{child_file}\nwait\n")

    assert {:error, %Error{type: :timeout, details: %{"os_pid" => os_pid}}} =
             CerebrosBridge.run_nas(%{dataset_id: "iris"},
               invoker: :subprocess,
               python_executable: python,
               timeout_ms: 300
             )

    refute alive?(os_pid)
    refute alive?(child_file |> File.read!() |> String.trim())
  end

  for pool <- [true, false] do
    test "pool: #{pool}: a caller that dies takes its Python process with it", %{tmp_dir: dir} do
      pid_file = Path.join(dir, "self.pid")
      python = script(dir, "slow", "echo $$ > #{pid_file}\nexec sleep 60\n")

      caller =
        spawn(fn ->
          CerebrosBridge.run_nas(%{dataset_id: "iris"},
            invoker: :subprocess,
            pool: unquote(pool),
            python_executable: python
          )
        end)

      os_pid = wait_for_file(pid_file)
      assert alive?(os_pid)
      Process.exit(caller, :kill)
      Process.sleep(300)
      refute alive?(os_pid)
    end
  end

  test "a missing executable is reported as unavailable" do
    for pool <- [true, false] do
      assert {:error, %Error{type: :unavailable}} =
               CerebrosBridge.validate(%{},
                 invoker: :subprocess,
                 pool: pool,
                 python_executable: "/nonexistent/python"
               )
    end
  end

  defp wait_for_file(path, tries \\ 50) do
    case File.read(path) do
      {:ok, content} when content != "" -> String.trim(content)
      _ when tries > 0 -> Process.sleep(50) && wait_for_file(path, tries - 1)
    end
  end
end
