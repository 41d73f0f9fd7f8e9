"""agentledger.testing: the fixtures a host application's own test suite uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncpg

from agentledger.testing import pg_url, throwaway_ledger

HOST_TESTS = """
pytest_plugins = ["agentledger.testing"]


async def test_sqlite(agentledger_sqlite):
    s = await agentledger_sqlite.service.create_session(user_id="u", agent_name="a")
    await agentledger_sqlite.service.add_message(s.id, role="user", content="hi")
    record = await agentledger_sqlite.service.get_session(s.id)
    assert [m.content for m in record.messages] == ["hi"]


async def test_postgres(agentledger_postgres):
    assert agentledger_postgres.engine.dialect.name == "postgresql"
    s = await agentledger_postgres.service.create_session(user_id="u", agent_name="a")
    assert (await agentledger_postgres.service.get_session(s.id)) is not None


async def test_isolated(agentledger_postgres):
    assert len(await agentledger_postgres.service.list_user_sessions("u")) == 0
"""


def test_a_host_suite_uses_the_plugin(tmp_path: Path) -> None:
    (tmp_path / "test_host.py").write_text(HOST_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout


async def test_throwaway_postgres_database_is_dropped() -> None:
    async with throwaway_ledger("postgresql") as ledger:
        name = ledger.engine.url.database
        assert name is not None
        assert await ledger.current_revisions()
    connection = await asyncpg.connect(pg_url("postgres"))
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
    finally:
        await connection.close()
    assert exists is None
