# Developer entry points. `make dev` and `make test` need only python3 (3.11+) with pip and venv.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Rewritten only when a pyproject changes, so `make install` is instant when nothing did.
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: dev install test lint gen gen-check bench chaos fuzz

dev: install
	$(BIN)/plait dev $(ARGS)

install: $(STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "make: Plait needs Python 3.11 or newer as $(PYTHON) (try PYTHON=python3.11)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]' -e clients/python
	@touch $@

# The compat suite's TypeScript app needs the npm packages of tests/compat/ts (node 20+).
NODE_DEPS := tests/compat/ts/node_modules/.package-lock.json

test: install $(NODE_DEPS)
	$(BIN)/pytest -q $(ARGS)

$(NODE_DEPS): tests/compat/ts/package-lock.json
	@if command -v node >/dev/null 2>&1; then npm ci --prefix tests/compat/ts --no-audit --no-fund; \
	else echo "make: node is not installed: the TypeScript compat tests will be skipped"; fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy server clients/python/plait

gen: install
	$(BIN)/python scripts/generate.py

gen-check: install
	$(BIN)/python scripts/generate.py --check
	$(BIN)/buf lint proto

bench: install
	$(BIN)/python bench/run.py $(ARGS)

# The long crash and fuzz suites (tests/chaos, tests/fuzz; CI runs short versions in `make test`).
# Each prints JSON lines: chaos one per backend, fuzz one per API surface and backend.
CHAOS_RUNS ?= 1000
CHAOS_KILLS ?= 10
FUZZ_EXAMPLES ?= 10000

chaos: install
	PLAIT_CHAOS_RUNS=$(CHAOS_RUNS) PLAIT_CHAOS_KILLS=$(CHAOS_KILLS) \
		$(BIN)/pytest -q -p no:cacheprovider --timeout=0 tests/chaos $(ARGS)

fuzz: install
	PLAIT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -p no:cacheprovider --timeout=0 tests/fuzz $(ARGS)
