# The two commands of the README: `make run` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NPM_STAMP := frontend/node_modules/.installed
FLUXCHECK_STAMP := tests/fluxcheck/node_modules/.installed

.PHONY: install run test lint test-fast bench clean

install: $(STAMP) $(NPM_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

$(NPM_STAMP): frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(FLUXCHECK_STAMP): tests/fluxcheck/package.json tests/fluxcheck/package-lock.json
	cd tests/fluxcheck && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: install
	$(BIN)/tvflux serve

test: install $(FLUXCHECK_STAMP) lint
	$(BIN)/pytest -q --durations=15

# ruff (lint + format check) over the code, mypy over service/ and --strict over the core,
# the stores and loadgen: part of `make test`
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --strict service/core service/storage loadgen

bench: install
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) frontend/node_modules tests/fluxcheck/node_modules
