"""Every code block of the README and the concept docs runs, in order, like a notebook.

Python blocks of one page share a namespace and may use top-level ``await``; the page may rely
on the names the reader is told about: ``url`` (a database at head), ``ledger`` (a Ledger on
it), ``agent`` (an ``agents.Agent``), and on the scaling page ``primary_url`` and
``replica_url`` (both the test database: a replica holds the same rows). No OpenAI key is
needed: the SDK's default model is replaced by the demo's offline model, built on
``agents.testing.ScriptedModel``. Bash blocks run in a shell with ``AGENTLEDGER_DATABASE_URL``
set, from the repository root, with the reader's venv already set up (``make`` is told not to
rebuild ``.venv``, and ``.venv/bin/`` is the venv running the tests) and the benchmark in smoke
mode (``AGENTLEDGER_BENCH_SMOKE=1``: every workload at a token size, files in a temporary
directory). SQL blocks run on PostgreSQL as written (one script, its own ``BEGIN``/``COMMIT``),
or, marked ``syntax-only``, are parsed statement by statement without running
(tests/support/docs.py). Pages with their own executed examples (the host-app guide, ...) are
tested by their own files.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, set_tracing_disabled
from agents.models.multi_provider import MultiProvider
from sqlalchemy import text

from agentledger import Ledger
from agentledger.cli.demo import OfflineModel
from tests.conftest import BACKENDS
from tests.support.docs import (
    OWN_TEST,
    REPO_ROOT,
    SYNTAX_ONLY,
    blocks,
    check_sql_syntax,
    run_doc_shell,
    run_sql_script,
)

PAGES = [
    "README.md",
    "docs/index.md",
    "docs/agents-sdk.md",
    "docs/frameworks.md",
    "docs/migrations.md",
    "docs/scaling.md",
    "docs/performance.md",
    "docs/observability.md",
    "docs/web.md",
]
#: Pages about PostgreSQL alone (SQL blocks, the benchmark): not run on SQLite.
POSTGRESQL_ONLY = {"docs/scaling.md", "docs/performance.md"}
RUNS = [
    (page, backend)
    for page in PAGES
    for backend in BACKENDS
    if backend == "postgresql" or page not in POSTGRESQL_ONLY
]
#: The README's commands for a newcomer; .ci/run executes them (they set up a whole venv).
NEWCOMER_COMMANDS = ["make demo", "make test"]
#: The reader's venv, which ``make`` must not rebuild in the middle of a test run.
VENV_STAMP = ".venv/.installed-stamp"


def test_every_block_is_of_a_kind_this_test_runs() -> None:
    for page in PAGES:
        for kind, body, _mark in blocks(page):
            assert kind in ("python", "bash", "text", "sql"), f"{page}: unknown block {kind!r}"
            if kind == "sql":
                assert page in POSTGRESQL_ONLY, f"{page}: SQL runs on PostgreSQL only"
            if kind == "bash" and page == "README.md":
                commands = [line.split("#")[0].strip() for line in body.splitlines()]
                assert commands == NEWCOMER_COMMANDS


#: Pages with runnable blocks that a test of their own executes (it names the page).
RUN_ELSEWHERE = {
    "docs/guide-host-app.md": "docs/test_docs_host_guide.py",
    "docs/lifecycle.md": "docs/test_docs_lifecycle.py",
    "docs/retention-search-export.md": "docs/test_docs_retention_search_export.py",
    "docs/security.md": "schema/test_row_security.py",
    "docs/operations.md": "operations/test_pgbouncer.py",
    # Its one SQL block is the append statement, compared with the code's (below).
    "docs/schema.md": "docs/test_docs_snippets.py",
}
RUNNABLE = ("python", "bash", "sql")


def test_every_page_with_code_has_a_test_that_runs_it() -> None:
    """A new page, or a first code block on a page, cannot go untested unnoticed."""
    pages = ["README.md", *(f"docs/{path.name}" for path in (REPO_ROOT / "docs").glob("*.md"))]
    for page in pages:
        if not any(block.kind in RUNNABLE for block in blocks(page)):
            continue
        if page in PAGES:
            continue
        assert page in RUN_ELSEWHERE, f"{page} has code blocks but no test runs them"
        runner = (REPO_ROOT / "tests" / RUN_ELSEWHERE[page]).read_text(encoding="utf-8")
        assert Path(page).name in runner, f"{RUN_ELSEWHERE[page]} does not name {page}"


def reader_shell(body: str) -> str:
    """A bash block as the reader's shell runs it: ``make`` with the venv already set up, and
    ``.venv/bin/`` standing for the venv that runs the tests."""
    bin_dir = Path(sys.executable).parent
    return (
        f'make() {{ command make --no-print-directory -o {VENV_STAMP} BIN="{bin_dir}" "$@"; }}\n'
        + body.replace(".venv/bin/", f"{bin_dir}/")
    )


@pytest.mark.parametrize(("page", "backend"), RUNS)
def test_page_runs(
    page: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("AGENTLEDGER_DATABASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr(MultiProvider, "get_model", lambda self, name: OfflineModel())
    set_tracing_disabled(True)

    loop = asyncio.new_event_loop()
    try:
        ledger = Ledger.from_url(database_url)
        namespace: dict[str, Any] = {
            "url": database_url,
            "ledger": ledger,
            "agent": Agent(name="Helper", instructions="Be brief."),
            "primary_url": database_url,
            "replica_url": database_url,
            "__name__": "__doc_snippet__",
        }
        shell: list[subprocess.CompletedProcess[str]] = []
        ran = 0
        for index, (kind, body, mark) in enumerate(blocks(page)):
            if mark == OWN_TEST:
                continue  # run by the test that prepares its database (tests/support/docs.py)
            if kind == "python":
                code = compile(
                    body, f"{page}:block{index}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
                )
                result = eval(code, namespace)
                if inspect.iscoroutine(result):
                    loop.run_until_complete(result)
                ran += 1
            elif kind == "sql":
                assert database_url.startswith("postgresql://"), f"{page}: SQL on {database_url}"
                if mark == SYNTAX_ONLY:
                    assert loop.run_until_complete(check_sql_syntax(database_url, body)) > 0
                else:
                    loop.run_until_complete(run_sql_script(database_url, body))
                ran += 1
            elif kind == "bash" and page != "README.md":
                done = run_doc_shell(
                    reader_shell(body),
                    database_url,
                    AGENTLEDGER_BENCH_SMOKE="1",
                    TMPDIR=str(tmp_path),
                )
                shell.append(done)
                ran += 1
        assert ran, f"{page} has no runnable block"
        loop.run_until_complete(ledger.dispose())
        if page == "docs/scaling.md":
            loop.run_until_complete(library_runs_on_partitions(database_url))
    finally:
        loop.close()
    if page == "README.md":
        out = capsys.readouterr().out
        assert "(1, 'user', 'Where is my order?')" in out
        assert "Alice" in out
    if page == "docs/performance.md":
        bench_commands_wrote_their_reports(shell, tmp_path)


async def library_runs_on_partitions(url: str) -> None:
    """After the scaling page's SQL: 16 hash partitions, and the public API still appends,
    reads each history in order and deletes a session with its messages (the cascade)."""
    async with Ledger.from_url(url) as ledger:
        svc = ledger.service
        sessions = [await svc.create_session(user_id="u1", agent_name="A") for _ in range(12)]
        for n, session in enumerate(sessions):
            turn = [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]
            await svc.add_messages(session.id, turn)
            await svc.add_message(session.id, role="user", content=f"again {n}")
        for n, session in enumerate(sessions):
            record = await svc.get_session(session.id, user_id="u1")
            assert record is not None
            got = [(m.seq, m.role, m.content) for m in record.messages]
            assert got == [
                (1, "user", f"q{n}"),
                (2, "assistant", f"a{n}"),
                (3, "user", f"again {n}"),
            ]
        gone = sessions[0].id
        assert await svc.delete_session(gone)
        assert await svc.get_session(gone) is None
        async with ledger.engine.connect() as connection:
            partitioned = await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_inherits "
                    "WHERE inhparent = CAST('conversation_messages' AS regclass)"
                )
            )
            homes = await connection.scalar(
                text("SELECT count(DISTINCT tableoid) FROM conversation_messages")
            )
            left = await connection.scalar(
                text("SELECT count(*) FROM conversation_messages WHERE session_id = :s"),
                {"s": gone},
            )
    assert partitioned == 16
    assert homes > 1  # the sessions' rows are spread over partitions
    assert left == 0


def bench_commands_wrote_their_reports(
    shell: list[subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """The performance page's commands, in smoke mode: each full run (``make bench``, ``make
    bench-quick``) wrote its JSON report, with every workload and the targets, and its plot;
    ``--only`` wrote just its workloads; the profile printed its round trips; the report printed
    its tables. Everything went to the temporary directory, nothing over the repository's."""
    stdout = "".join(done.stdout for done in shell)
    stderr = "".join(done.stderr for done in shell)
    reports = [Path(p) for p in re.findall(r"^results written to (.+)$", stderr, re.MULTILINE)]
    plots = [Path(p) for p in re.findall(r"^plot written to (.+)$", stderr, re.MULTILINE)]
    assert len(reports) == 3, stderr
    assert len(plots) == 2, stderr
    assert all(path.is_relative_to(tmp_path) and path.stat().st_size for path in reports + plots)
    results = [json.loads(path.read_text()) for path in reports]
    assert all(result["meta"]["plan"]["mode"] == "smoke" for result in results)
    workloads = {"turn_append", "concurrent_append", "tail50", "full_read", "listing", "sweep"}
    for full in results[:2]:
        assert workloads | {"cleanup", "targets", "adk"} <= full.keys()
    assert results[2].keys() == {"meta", "turn_append", "tail50"}
    assert "round trips of one append:" in stdout
    assert "| workload | contender | p50 ms |" in stdout


def test_schema_page_shows_the_append_statement_the_library_runs() -> None:
    from agentledger.db.statements import pg_append_statement

    (sql,) = [body for kind, body, _mark in blocks("docs/schema.md") if kind == "sql"]
    running = str(pg_append_statement(create=False, owned=True))
    assert " ".join(sql.split()) == " ".join(running.split())


@pytest.mark.parametrize("backend", ["postgresql"])
def test_syntax_check_parses_without_running_and_fails_on_broken_sql(database_url: str) -> None:
    """The check the scaling page's Citus block gets: a function PostgreSQL does not have is
    fine (names are not looked up, nothing runs), a syntax error is not."""
    loop = asyncio.new_event_loop()
    try:
        check = loop.run_until_complete
        assert check(check_sql_syntax(database_url, "SELECT no_such_function('x', y => 1);")) == 1
        assert check(check_sql_syntax(database_url, "-- note\nDROP TABLE agent_sessions;\n")) == 1
        for broken in (
            "SELECT create_distributed_table('agent_sessions', 'id';",
            "CREATE EXTENSION IF NOT EXIST citus;",
            "SELECT 1;\nSELEC create_distributed_table('agent_sessions', 'id');",
        ):
            with pytest.raises(AssertionError, match="syntax error"):
                check(check_sql_syntax(database_url, broken))

        async def agent_sessions_still_there() -> int:
            async with Ledger.from_url(database_url) as ledger, ledger.engine.connect() as c:
                return int(await c.scalar(text("SELECT count(*) FROM agent_sessions")))

        assert check(agent_sessions_still_there()) == 0
    finally:
        loop.close()
