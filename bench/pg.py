"""Throwaway PostgreSQL databases for one benchmark run (created, then always dropped)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.engine import make_url

#: The server to benchmark on: a maintenance database URL of a role that may CREATE DATABASE.
ADMIN_URL = os.environ.get(
    "AGENTLEDGER_BENCH_PG_URL",
    os.environ.get("AGENTLEDGER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
)


def database_url(name: str, *, driver: str | None = None) -> str:
    """``ADMIN_URL`` pointed at database ``name`` (``driver``: e.g. ``"asyncpg"``)."""
    url = make_url(ADMIN_URL).set(database=name)
    if driver is not None:
        url = url.set(drivername=f"postgresql+{driver}")
    return url.render_as_string(hide_password=False)


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(ADMIN_URL)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@asynccontextmanager
async def throwaway_databases(*roles: str) -> AsyncIterator[dict[str, str]]:
    """One new database per role (``{"ledger": name, ...}``), dropped on the way out."""
    tag = uuid.uuid4().hex[:10]
    names = {role: f"agentledger_bench_{tag}_{role}" for role in roles}
    created: list[str] = []
    try:
        for name in names.values():
            await _admin(f'CREATE DATABASE "{name}"')
            created.append(name)
        yield names
    finally:
        for name in created:
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
