# Tests tagged :python start the real `python -m cerebros_service serve` (its worker
# processes pay TensorFlow's start-up): they run by default; `mix test --exclude
# python` leaves them out. Tests tagged :pythonx_real need real Pythonx built from
# shared/pythonx-lab and run only with `make test-pythonx` (see that file).
Application.put_env(:cerebros_bridge, :pythonx_module, CerebrosBridge.Test.PythonxDouble)
Logger.configure(level: :warning)
ExUnit.start(exclude: [:pythonx_real])

# Stop the jobs and the serve processes (and their OS processes) before the VM halts.
ExUnit.after_suite(fn _ -> Application.stop(:cerebros_bridge) end)
