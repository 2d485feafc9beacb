# Tests tagged :python start the real `python -m cerebros_service` (each pays
# the TensorFlow start-up): they run by default; `mix test --exclude python`
# leaves them out. The Python executable is $CEREBROS_PYTHON, else the
# checkout's .venv/bin/python, else python3 (see CerebrosBridge.Config).
Application.put_env(:cerebros_bridge, :pythonx_module, CerebrosBridge.Test.PythonxDouble)
Logger.configure(level: :warning)
ExUnit.start()

# Stop the pool's workers (and their OS processes) before the VM halts.
ExUnit.after_suite(fn _ -> Application.stop(:cerebros_bridge) end)
