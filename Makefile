# ImageGate: `make serve` runs the service, `make test` runs the tests; each sets itself up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# HOST and PORT (make serve HOST=0.0.0.0 PORT=9000) override the settings; unset, the service reads
# IMAGEGATE_HOST/IMAGEGATE_PORT from the environment, .env or its TOML file (default 127.0.0.1:8000).
HOST ?=
PORT ?=

.PHONY: serve test test-unit check lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.runtime

serve: $(VENV)/.runtime
	$(BIN)/imagegate serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

# The suite runs in TEST_WORKERS processes (pytest-xdist; each has its own PostgreSQL server); the tests that share
# a module's server, browser or hosts stay on one worker (tests/conftest.py). `make test TEST_WORKERS=0`, or a
# plain `.venv/bin/pytest tests/...`, runs them serially in one process, for debugging.
TEST_WORKERS ?= 2

test: $(VENV)/.dev
	bash scripts/ensure-test-system.sh
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

# The unit tier alone: no app, no server processes (its database tests still run on SQLite and PostgreSQL).
test-unit: $(VENV)/.dev
	bash scripts/ensure-test-system.sh
	$(BIN)/pytest -m unit

check: lint typecheck

bench: $(VENV)/.dev
	bash scripts/ensure-test-system.sh
	$(BIN)/python -m bench.run --scale full --write docs/benchmarks.md

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.dev
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
