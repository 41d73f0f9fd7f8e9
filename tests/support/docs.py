"""The code blocks of the README and the docs pages, and how their SQL runs (for the doc tests).

A block is a fenced block. The line right before its fence may mark it for the tests:
``<!-- docs-test: syntax-only -->`` is SQL that cannot run here (it needs Citus, say), so only
the syntax of each of its statements is checked, by PostgreSQL's own parser; nothing runs.
``<!-- docs-test: own-test -->`` is a block that needs a database prepared for it (the time
partitions of the scaling page): the page's runner leaves it to the test that prepares one
(``tests/schema/test_time_partitions.py``), which runs it as written.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import asyncpg

REPO_ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(
    r"^(?:<!-- docs-test: ([\w-]+) -->\n)?```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE
)
SYNTAX_ONLY = "syntax-only"
OWN_TEST = "own-test"
MARKS = ("", SYNTAX_ONLY, OWN_TEST)
#: The page whose SQL hash-partitions conversation_messages
#: (tests/schema/test_partitioning.py runs it).
PARTITIONING_PAGE = "docs/scaling.md"


class Block(NamedTuple):
    kind: str
    body: str
    mark: str


def blocks(page: str) -> list[Block]:
    """The fenced blocks of ``page`` (relative to the repository root), in order."""
    found = BLOCK.findall((REPO_ROOT / page).read_text(encoding="utf-8"))
    result = [Block(kind, body, mark) for mark, kind, body in found]
    for block in result:
        assert block.mark in MARKS, f"{page}: unknown docs-test mark {block.mark!r}"
        assert block.mark != SYNTAX_ONLY or block.kind == "sql", f"{page}: {block.mark} on code"
    return result


def partitioning_sql() -> str:
    """The one SQL block of the scaling page that partitions the messages, as written."""
    (sql,) = [
        block.body
        for block in blocks(PARTITIONING_PAGE)
        if block.kind == "sql" and block.mark == "" and "PARTITION BY HASH" in block.body
    ]
    return sql


def time_partitioning_sql() -> str:
    """The SQL block of the scaling page that partitions the messages by month, as written."""
    (sql,) = [
        block.body
        for block in blocks(PARTITIONING_PAGE)
        if block.kind == "sql" and block.mark == OWN_TEST and "PARTITION BY RANGE" in block.body
    ]
    return sql


def time_partitioning_python() -> str:
    """The scaling page's Python block that retires a month."""
    (code,) = [
        block.body
        for block in blocks(PARTITIONING_PAGE)
        if block.kind == "python" and block.mark == OWN_TEST
    ]
    return code


async def run_sql_script(url: str, sql: str) -> None:
    """Run ``sql`` as psql would send a file: all of it, in one simple-protocol query (its own
    ``BEGIN``/``COMMIT`` included), on the PostgreSQL database ``url`` (``postgresql://``)."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def sql_statements(sql: str) -> list[str]:
    """The statements of ``sql``: whole-line ``--`` comments dropped, split at a ``;`` that ends
    a line (enough for the documentation's blocks; the syntax check refuses anything else)."""
    code = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [part.strip() for part in re.split(r";[ \t]*(?:\n|$)", code) if part.strip()]


async def check_sql_syntax(url: str, sql: str) -> int:
    """Have PostgreSQL parse every statement of ``sql`` without running it; the count.

    Each statement becomes the body of a PL/pgSQL function in ``pg_temp``. With
    ``check_function_bodies`` on, ``CREATE FUNCTION`` runs PL/pgSQL's validator, which parses
    each embedded SQL statement (a syntax error fails it) but neither runs it nor looks up the
    names in it: a Citus function the server does not have is no error. Rolled back.
    """
    statements = sql_statements(sql)
    connection = await asyncpg.connect(url)
    try:
        for statement in statements:
            assert "$syntax_check$" not in statement
            transaction = connection.transaction()
            await transaction.start()
            try:
                await connection.execute("SET LOCAL check_function_bodies = on")
                await connection.execute(
                    "CREATE FUNCTION pg_temp.docs_syntax_check() RETURNS void LANGUAGE plpgsql "
                    f"AS $syntax_check$ BEGIN\n{statement};\nEND $syntax_check$"
                )
            except asyncpg.PostgresSyntaxError as error:
                raise AssertionError(f"syntax error in {statement!r}: {error}") from error
            finally:
                await transaction.rollback()
    finally:
        await connection.close()
    return len(statements)


def run_doc_shell(commands: str, database_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a documented shell block as a reader would, from the repository root: strict bash,
    the ``agentledger`` of the venv running the tests first on ``PATH``, the database named by
    ``AGENTLEDGER_DATABASE_URL`` (plus ``env``). It must exit 0; its output is returned."""
    environment = {**os.environ, "AGENTLEDGER_DATABASE_URL": database_url, **env}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"{commands!r} failed: {done.stderr}"
    return done
