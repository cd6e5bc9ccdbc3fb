# One-command entry points. `make sandbox` and `make test` set up everything they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deps-stamp
RUN_STAMP := $(VENV)/.run-deps-stamp
# The legacy v1-only x402 client shares the import name `x402`: it gets its own venv.
LEGACY := .venv-x402v1
LEGACY_STAMP := $(LEGACY)/.deps-stamp

.PHONY: deps sandbox test lint fmt typecheck check bench bench-smoke installed-check clean

$(STAMP): pyproject.toml package.json package-lock.json
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

# Only what the sandbox runs on: the package and the anvil binary (the full dev install counts).
$(RUN_STAMP): pyproject.toml package.json package-lock.json
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	[ $(STAMP) -nt pyproject.toml ] || $(BIN)/python -m pip install --quiet -e .
	[ $(STAMP) -nt package-lock.json ] || npm ci --no-audit --no-fund --loglevel=error
	touch $(RUN_STAMP)

$(LEGACY_STAMP):
	test -x $(LEGACY)/bin/python || $(PY) -m venv $(LEGACY)
	$(LEGACY)/bin/python -m pip install --quiet 'x402==1.0.0'
	touch $(LEGACY_STAMP)

deps: $(STAMP) $(LEGACY_STAMP)

sandbox: $(RUN_STAMP)  ## the whole local world on SQLite; Ctrl-C stops it
	$(BIN)/python -m sandbox

# In one process first: the fast suite (its arc coverage test reads what its other tests
# recorded) and the API fuzz test (its cases share one test id, which pytest-xdist would run
# once). Then the other test files in parallel, a file per worker (its module-scoped world
# starts once): most of the end-to-end suite waits on timers and the chain, not on a CPU.
SERIAL_TESTS = tests/fast tests/test_openapi_fuzz.py
TEST_WORKERS ?= 4
test: deps  ## full suite: unit, Postgres, end to end on a local chain
	$(BIN)/python -m pytest -q $(SERIAL_TESTS)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(SERIAL_TESTS:%=--ignore=%)

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: deps
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: deps
	$(BIN)/mypy app sandbox $(wildcard bench)

check: lint typecheck

bench: deps  ## full benchmarks; writes docs/performance.md
	$(BIN)/python -m bench

bench-smoke: deps  ## seconds-long run that keeps the benchmarks working
	$(BIN)/python -m bench --smoke

# What operators install: the wheel in a fresh venv outside the checkout, then the same
# commands as the Dockerfile and docker-compose.yml (migrate, serve), and a paid edit.
INSTALLED := $(or $(TMPDIR),/tmp)/x402r-installed
installed-check: deps
	rm -rf $(INSTALLED) && mkdir -p $(INSTALLED)
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir $(INSTALLED)/dist . && rm -rf build
	$(PY) -m venv $(INSTALLED)/venv
	$(INSTALLED)/venv/bin/python -m pip install --quiet $(INSTALLED)/dist/*.whl
	$(BIN)/python scripts/check_installed.py --venv $(INSTALLED)/venv

clean:
	rm -rf .sandbox .pytest_cache .mypy_cache .ruff_cache $(LEGACY)
