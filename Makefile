# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: demo test test-python test-elixir test-pythonx bench device-wheels clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Stamps keep re-runs fast; they are rebuilt when pyproject.toml changes.
# TensorFlow is an extra (the backend; README "Install"): the demo installs it as users do.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[tensorflow]'
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m cerebros_service.demo

test: test-python test-elixir test-pythonx

# Two pytest workers, then the `serial` tests (real Dask worker restarts) on their own.
test-python: $(VENV)/.installed-test
	$(PY) -m pytest -m 'not slow and not serial'
	$(PY) -m pytest -m 'serial and not slow' -n 0

# Elixir comes from Debian (hex.pm is not needed: the bridge has no hex dependency at test time).
test-elixir: $(VENV)/.installed-test
	@command -v mix >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq elixir; }
	env -u PYTHONX_LAB CEREBROS_PYTHON=$(abspath $(PY)) MIX_ENV=test mix test

# The bridge against real Pythonx (Elixir 1.18 + Pythonx built from source by
# shared/pythonx-lab/build.sh). Needs PYTHONX_LAB (the lab folder) and PYX_PYTHON_HOME
# (the CPython 3.11 home with lib/libpython3.11.so that made .venv); skipped without.
test-pythonx: $(VENV)/.installed-test
	@if [ -z "$$PYTHONX_LAB" ]; then \
	  echo "test-pythonx: skipped: PYTHONX_LAB is not set (build real Pythonx with shared/pythonx-lab/build.sh, then export PYTHONX_LAB and PYX_PYTHON_HOME)"; \
	else \
	  PATH="$$PYTHONX_LAB/elixir-src/bin:$$PATH" MIX_HOME="$$PYTHONX_LAB/mix_home" HEX_HOME="$$PYTHONX_LAB/hex_home" HEX_OFFLINE=1 \
	    CEREBROS_PYTHON=$(abspath $(PY)) MIX_ENV=test mix test --only pythonx_real; \
	fi

bench: $(VENV)/.installed-test
	$(PY) benchmarks/trial_time.py
	$(PY) benchmarks/cli_latency.py

# The GPU machine's missing wheels (Python 3.12) into .whl/, for benchmarks/device_check.sh
# there (docs/scaling.md, "GPU: the device check"); fails above 50 MiB.
device-wheels: $(VENV)/.installed-test
	$(PY) benchmarks/device_wheels.py

clean:
	rm -rf $(VENV) _build cerebros_runs .pytest_cache
