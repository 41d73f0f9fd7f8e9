"""Shared fixtures: a fresh, migrated database per test on PostgreSQL and on SQLite.

PostgreSQL: one template database is migrated per test run; each test gets its own database
cloned from it (``CREATE DATABASE ... TEMPLATE``) and dropped afterwards. SQLite: the same with a
file copy. Nothing relies on leftovers, and tests never share rows.

``AGENTLEDGER_TEST_PG_URL`` points the suite at another server (default: the local one, user
``postgres``). If PostgreSQL cannot be reached the PostgreSQL tests fail — they are never skipped.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agentledger import Ledger
from agentledger.db.fastpath import DriverStatements
from agentledger.testing import create_pg_database, drop_pg_database, pg_url

__all__ = ["create_pg_database", "drop_pg_database", "pg_url", "run_sync"]

T = TypeVar("T")

BACKENDS = ("sqlite", "postgresql")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even while an event loop is running."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A PostgreSQL database at agentledger's head, used as a template for each test."""

    async def build() -> str:
        name = await create_pg_database()
        ledger = Ledger.from_url(pg_url(name))
        try:
            await ledger.upgrade()
        finally:
            await ledger.dispose()
        return name

    name = run_sync(build())
    yield name
    run_sync(drop_pg_database(name))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at agentledger's head, copied for each test."""
    path = tmp_path_factory.mktemp("template") / "template.db"

    async def build() -> None:
        ledger = Ledger.from_url(f"sqlite+aiosqlite:///{path}")
        try:
            await ledger.upgrade()
        finally:
            await ledger.dispose()

    run_sync(build())
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """URL of a fresh database at head, on the parametrized backend."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "ledger.db"
        shutil.copyfile(template, target)
        yield f"sqlite+aiosqlite:///{target}"
        return
    name = await create_pg_database(template=request.getfixturevalue("pg_template"))
    try:
        yield pg_url(name)
    finally:
        await drop_pg_database(name)


@pytest.fixture
async def empty_database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """URL of a fresh, never-migrated database on the parametrized backend."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    name = await create_pg_database()
    try:
        yield pg_url(name)
    finally:
        await drop_pg_database(name)


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    async with Ledger.from_url(database_url) as opened:
        yield opened


@pytest.fixture
async def pg_database_url(pg_template: str) -> AsyncIterator[str]:
    """URL of a fresh PostgreSQL database at head, for behaviour only PostgreSQL has."""
    name = await create_pg_database(template=pg_template)
    try:
        yield pg_url(name)
    finally:
        await drop_pg_database(name)


@pytest.fixture
def counted_driver(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Statements that went through the asyncpg fast path, one ``"driver"`` each."""
    sent: list[str] = []
    real = DriverStatements._run_once

    async def counting(self: DriverStatements, operation: Any) -> Any:
        sent.append("driver")
        return await real(self, operation)

    monkeypatch.setattr(DriverStatements, "_run_once", counting)
    return sent
