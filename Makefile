# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck check postgres venv bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

## Run the two-process memory demo on the embedded SQLite default (./agentledger.db).
demo: venv
	$(BIN)/agentledger demo

## Lint, type-check, then run the whole suite against PostgreSQL and SQLite.
test: venv postgres lint typecheck
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: venv
	$(BIN)/mypy src

check: lint typecheck

## Make sure the local PostgreSQL answers (starts the Debian cluster when it is down).
postgres:
	@bash scripts/ensure-postgres.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache dist build agentledger.db*
