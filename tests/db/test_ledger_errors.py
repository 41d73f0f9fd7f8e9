"""Errors leave the library as LedgerErrors, never as raw driver exceptions, and never with a
password in them."""

from __future__ import annotations

import asyncio
import os
import traceback
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from agentledger import Ledger, LedgerError, SchemaNotReadyError

# The server the suite runs against (see conftest.py).
PG_ADMIN_URL = os.environ.get(
    "AGENTLEDGER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PASSWORD = "pw-Sup3rS3cret-7f2c"


def unreachable_url(backend: str, tmp_path: Path, kind: str) -> str:
    """A URL agentledger cannot use: a database that does not exist, or no server at all."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir' / f'{kind}.db'}"
    url = make_url(PG_ADMIN_URL).set(password=PASSWORD)
    if kind == "missing-database":
        url = url.set(database=f"agentledger_missing_{uuid.uuid4().hex[:12]}")
    else:
        url = url.set(host="127.0.0.1", port=1)  # nothing listens there
    return url.render_as_string(hide_password=False)


def assert_clean(error: BaseException) -> None:
    assert isinstance(error, LedgerError), f"raw {type(error).__module__}.{type(error).__name__}"
    assert not isinstance(error, SQLAlchemyError)
    rendered = "".join(traceback.format_exception_only(error)) + repr(error)
    assert PASSWORD not in rendered
    assert str(error), "an error must say what happened"


@pytest.mark.parametrize("kind", ["missing-database", "no-server"])
async def test_unusable_database_raises_ledger_error(
    backend: str, tmp_path: Path, kind: str
) -> None:
    async with Ledger.from_url(unreachable_url(backend, tmp_path, kind)) as ledger:
        assert PASSWORD not in repr(ledger)
        svc = ledger.service
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: svc.create_session("u1", "A"),
            lambda: svc.get_session(uuid.uuid4()),
            lambda: svc.list_user_sessions("u1"),
            lambda: svc.add_message(uuid.uuid4(), "user", "hi"),
            lambda: svc.cleanup_sessions(older_than=timedelta(days=1)),
            ledger.current_revisions,
            ledger.upgrade,
        ]
        for call in calls:
            with pytest.raises(LedgerError) as raised:
                await call()
            assert_clean(raised.value)
            # aiosqlite stops the worker thread of a failed connect asynchronously; let it
            # finish before the event loop closes (otherwise it warns from its thread).
            await asyncio.sleep(0.02)


async def test_unmigrated_database_names_the_fix(empty_database_url: str) -> None:
    async with Ledger.from_url(empty_database_url) as ledger:
        with pytest.raises(SchemaNotReadyError, match="agentledger db upgrade"):
            await ledger.service.create_session("u1", "A")
        with pytest.raises(SchemaNotReadyError):
            await ledger.service.get_session(uuid.uuid4())
        await ledger.upgrade()
        session = await ledger.service.create_session("u1", "A")
        assert await ledger.service.get_session(session.id) is not None


async def test_database_refusal_is_translated(ledger: Ledger) -> None:
    """A constraint violation (duplicate id) surfaces as a LedgerError, not IntegrityError."""
    session = await ledger.service.create_session("u1", "A")
    with pytest.raises(LedgerError) as raised:
        await ledger.service.create_session("u2", "B", session_id=session.id)
    assert_clean(raised.value)
    # The original session is untouched and the ledger keeps working.
    record = await ledger.service.get_session(session.id)
    assert record is not None
    assert record.user_id == "u1"
    assert (await ledger.service.add_message(session.id, "user", "hi")).seq == 1


async def test_password_is_not_shown_by_a_working_ledger(database_url: str, backend: str) -> None:
    url = make_url(database_url)
    if backend == "postgresql":  # trust authentication: the password is accepted and unused
        url = url.set(password=PASSWORD)
    async with Ledger.from_url(url.render_as_string(hide_password=False)) as ledger:
        session = await ledger.service.create_session("u1", "A")
        assert await ledger.service.get_session(session.id) is not None
        for shown in (repr(ledger), repr(ledger.settings), str(ledger.settings)):
            assert PASSWORD not in shown
        assert ledger.settings.url.drivername.endswith(("+asyncpg", "+aiosqlite"))
