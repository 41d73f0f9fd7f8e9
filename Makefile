# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck check docs package postgres pgbouncer chromium venv bench bench-quick bench-partitions soak clean

# The bench extra (matplotlib, pyinstrument) too: the suite runs the benchmark's documented
# commands in smoke mode (tests/docs/test_docs_snippets.py, docs/performance.md).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,docs,release,bench]"
	touch $(STAMP)

venv: $(STAMP)

## Run the two-process memory demo on the embedded SQLite default (./agentledger.db).
demo: venv
	$(BIN)/agentledger demo

## Lint, type-check, build the docs strictly, then run the suite on PostgreSQL and SQLite, on
## up to 4 cores (pytest-xdist; every test has its own databases).
test: venv postgres pgbouncer chromium lint typecheck docs package
	$(BIN)/pytest --numprocesses auto --maxprocesses 4

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: venv
	$(BIN)/mypy

check: lint typecheck

## squawk on every revision's offline PostgreSQL SQL (no server needed); findings in released
## revisions are justified in tests/schema/migration_lint.toml. `make test` runs it too.
.PHONY: migrations-lint
migrations-lint: venv
	$(BIN)/pytest -q -p no:xdist tests/schema/test_migration_lint.py

## The documentation site (mkdocs-material, API reference from docstrings) into build/site.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

## Wheel and sdist into dist/, checked by twine.
package: venv
	rm -rf dist
	$(BIN)/python -m build --outdir dist . >/dev/null
	$(BIN)/twine check --strict dist/*

## Benchmark on the local PostgreSQL (throwaway databases, dropped after): agentledger vs
## hand-written asyncpg vs the Agents SDK's SQLAlchemySession; writes bench/results/latest.json
## and docs/performance-session-size.png. See docs/performance.md. With
## AGENTLEDGER_BENCH_SMOKE=1 (both targets): every workload at a token size, in seconds, the
## files in a new temporary directory; it checks that the suite runs, its numbers mean nothing.
bench: venv postgres pgbouncer
	$(BIN)/python -m bench

## The same in a couple of minutes (smaller sizes); writes bench/results/quick.json.
bench-quick: venv postgres pgbouncer
	$(BIN)/python -m bench --quick

## Retiring a month of history on tables of 1 and 10 million messages partitioned by month
## (docs/scaling.md), against deleting the same rows; minutes (it builds the tables). Not part
## of `make bench` or `make test`; writes bench/results/partitions.json.
bench-partitions: venv postgres
	$(BIN)/python -m bench.partitions

## Soak (not part of `make test`): 64 agents on 16 shared sessions for SOAK_SECONDS (default
## 60, at most 300) on a throwaway PostgreSQL database, then the invariants of
## docs/reliability.md are checked; exits non-zero on a violation.
SOAK_SECONDS ?= 60
soak: venv postgres
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS)

## Make sure the local PostgreSQL answers (starts the Debian cluster when it is down).
postgres:
	@bash scripts/ensure-postgres.sh

## Make sure the pgbouncer program is installed (apt-get when missing): tests/operations and
## the pgbouncer benchmark start a throwaway PgBouncer in front of the local PostgreSQL.
pgbouncer:
	@bash scripts/ensure-pgbouncer.sh

## Make sure chromium and chromium-driver are installed (apt-get when missing): the transcript
## browser's end-to-end tests drive a headless Chromium (tests/web/ui/test_browser.py).
chromium:
	@bash scripts/ensure-chromium.sh

## The transcript browser's screenshots in docs/ (docs/web.md), taken by headless Chromium.
.PHONY: screenshots
screenshots: venv postgres chromium
	$(BIN)/python -m scripts.screenshots

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache dist build agentledger.db*
