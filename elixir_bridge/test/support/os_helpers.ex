defmodule CerebrosBridge.Test.OS do
  @moduledoc "OS process helpers for the subprocess tests."

  @doc """
  Whether `os_pid` is a running process. A killed child whose new parent has
  not reaped it yet is a zombie (state Z): dead, though `kill -0` still succeeds.
  """
  def alive?(os_pid) do
    case System.cmd("ps", ["-o", "stat=", "-p", "#{os_pid}"], stderr_to_stdout: true) do
      {stat, 0} -> not String.starts_with?(String.trim(stat), "Z")
      {_, _} -> false
    end
  end

  @doc """
  ExUnit setup: a fresh directory under the system's temporary directory
  (ExUnit's own `:tmp_dir` writes into the checkout), removed after the test.
  """
  def tmp_dir(_context) do
    dir =
      Path.join(System.tmp_dir!(), "cerebros-bridge-test-#{System.unique_integer([:positive])}")

    File.mkdir_p!(dir)
    ExUnit.Callbacks.on_exit(fn -> File.rm_rf(dir) end)
    {:ok, tmp_dir: dir}
  end

  @doc "Writes an executable shell script `name` in `dir`."
  def script(dir, name, body) do
    path = Path.join(dir, name)
    File.write!(path, "#!/bin/sh\n" <> body)
    File.chmod!(path, 0o755)
    path
  end
end
