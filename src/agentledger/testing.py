"""Test helpers for applications that embed agentledger (and for agentledger's own suite).

In a host application's ``conftest.py``::

    pytest_plugins = ["agentledger.testing"]

    async def test_history(agentledger_sqlite):            # or agentledger_postgres
        s = await agentledger_sqlite.service.create_session(user_id="u", agent_name="a")

Each fixture yields a :class:`~agentledger.Ledger` on a fresh database at agentledger's head
revision and removes the database afterwards, so tests never share rows or rely on leftovers.
PostgreSQL databases are created on the server named by ``AGENTLEDGER_TEST_PG_URL`` (default:
the local server, user ``postgres``); when it cannot be reached the fixture fails with that
message rather than skipping silently. Needs ``pytest`` and ``pytest-asyncio``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url

from agentledger.errors import LedgerError
from agentledger.ledger import Ledger

#: Environment variable naming the PostgreSQL server (any database on it) for test databases.
PG_URL_ENV = "AGENTLEDGER_TEST_PG_URL"
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def pg_admin_url() -> str:
    """The URL used to create and drop test databases (``AGENTLEDGER_TEST_PG_URL``)."""
    return os.environ.get(PG_URL_ENV, DEFAULT_PG_ADMIN_URL)


def pg_url(database: str) -> str:
    """A plain ``postgresql://`` URL of ``database`` on the test server."""
    return make_url(pg_admin_url()).set(database=database).render_as_string(hide_password=False)


async def _admin(*statements: str) -> None:
    try:
        connection = await asyncpg.connect(pg_admin_url())
    except (OSError, asyncpg.PostgresError) as error:
        raise LedgerError(
            f"cannot reach the test PostgreSQL server ({error.__class__.__name__}); start it or "
            f"point {PG_URL_ENV} at one (e.g. postgresql://postgres@127.0.0.1:5432/postgres)"
        ) from error
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def create_pg_database(template: str | None = None) -> str:
    """Create a throwaway database (optionally a copy of ``template``); return its name."""
    name = f"agentledger_test_{uuid.uuid4().hex[:12]}"
    suffix = f' TEMPLATE "{template}"' if template else ""
    await _admin(f'CREATE DATABASE "{name}"{suffix}')
    return name


async def drop_pg_database(name: str) -> None:
    """Drop a database made by :func:`create_pg_database` (connections are terminated)."""
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def throwaway_ledger(
    backend: str = "sqlite", *, directory: Path | None = None
) -> AsyncIterator[Ledger]:
    """A Ledger on a new database at head, removed on exit (``backend``: sqlite|postgresql).

    SQLite files go to ``directory`` (a temporary directory by default).
    """
    if backend == "sqlite":
        import tempfile

        with tempfile.TemporaryDirectory(dir=directory) as folder:
            async with Ledger.from_url(
                f"sqlite+aiosqlite:///{Path(folder) / 'ledger.db'}"
            ) as ledger:
                await ledger.upgrade()
                yield ledger
        return
    if backend != "postgresql":
        raise ValueError(f"backend must be 'sqlite' or 'postgresql', not {backend!r}")
    name = await create_pg_database()
    try:
        async with Ledger.from_url(pg_url(name)) as ledger:
            await ledger.upgrade()
            yield ledger
    finally:
        await drop_pg_database(name)


@pytest_asyncio.fixture
async def agentledger_sqlite(tmp_path: Path) -> AsyncIterator[Ledger]:
    """A Ledger on a fresh SQLite file at agentledger's head."""
    async with throwaway_ledger("sqlite", directory=tmp_path) as ledger:
        yield ledger


@pytest_asyncio.fixture
async def agentledger_postgres() -> AsyncIterator[Ledger]:
    """A Ledger on a fresh PostgreSQL database at agentledger's head, dropped afterwards."""
    async with throwaway_ledger("postgresql") as ledger:
        yield ledger


@pytest.fixture(params=["sqlite", "postgresql"])
def agentledger_backend(request: pytest.FixtureRequest) -> str:
    """Parametrizes a test over both backends (use with :func:`throwaway_ledger`)."""
    return str(request.param)


__all__ = [
    "DEFAULT_PG_ADMIN_URL",
    "PG_URL_ENV",
    "agentledger_backend",
    "agentledger_postgres",
    "agentledger_sqlite",
    "create_pg_database",
    "drop_pg_database",
    "pg_admin_url",
    "pg_url",
    "throwaway_ledger",
]
