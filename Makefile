# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: demo test test-python test-elixir bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Stamps keep re-runs fast; they are rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m cerebros_service.demo

test: test-python test-elixir

test-python: $(VENV)/.installed-test
	$(PY) -m pytest

# Elixir comes from Debian (hex.pm is not needed: the bridge has no hex dependency at test time).
test-elixir: $(VENV)/.installed-test
	@command -v mix >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq elixir; }
	CEREBROS_PYTHON=$(abspath $(PY)) MIX_ENV=test mix test

bench: $(VENV)/.installed-test
	$(PY) benchmarks/trial_time.py
	$(PY) benchmarks/cli_latency.py

clean:
	rm -rf $(VENV) _build cerebros_runs .pytest_cache
