PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,postgres,mysql]"
	touch $@

run: $(VENV)/.run-installed
	$(BIN)/redis-archive up

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.test-installed
	flock /tmp/bench.lock $(BIN)/python -m bench.run $(BENCH_ARGS)

lint: $(VENV)/.test-installed
	$(BIN)/python -m pip install --quiet ruff mypy
	$(BIN)/ruff check producer consumer shared tests bench
	$(BIN)/mypy --strict shared

clean:
	rm -rf $(VENV) var .pytest_cache
