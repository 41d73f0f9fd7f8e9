"""The optional read engine (``read_url``): history reads and listings go there, writes never.

Two ways of seeing which engine served a call: two engines on the same database with a counter
of pooled-connection checkouts on each (this also covers the asyncpg fast path, which checks
connections out of the same pools), and a read database that is a *copy* of the primary taken
at one moment, whose stale answers prove the reads came from it. Neither is a streaming
standby, so after a write through the ledger its reads go to the primary (read-your-writes,
docs/scaling.md); a real streaming replica is tested in tests/operations/test_replica.py.
"""

from __future__ import annotations

import shutil
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from agentledger import Ledger, LedgerSettings, SchemaNotReadyError
from agentledger.db.urls import driver_arguments
from agentledger.domain.records import Usage
from agentledger.testing import create_pg_database, drop_pg_database, pg_url


def count_checkouts(engine: AsyncEngine, counter: Counter[str], name: str) -> None:
    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(*_args: Any) -> None:
        counter[name] += 1


def record_statements(engine: AsyncEngine, statements: list[str]) -> None:
    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _executing(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        statements.append(" ".join(statement.split()))


@pytest.fixture
async def two_engines(database_url: str) -> AsyncIterator[tuple[Ledger, Counter[str]]]:
    """A Ledger whose read engine is a second engine on the same database, with checkouts
    counted per engine (reset after a first call has run the one-time schema check)."""
    ledger = Ledger.from_url(database_url, read_url=database_url)
    assert ledger.read_engine is not ledger.engine
    counter: Counter[str] = Counter()
    count_checkouts(ledger.engine, counter, "primary")
    count_checkouts(ledger.read_engine, counter, "read")
    try:
        await ledger.service.list_user_sessions("nobody")
        counter.clear()
        yield ledger, counter
    finally:
        await ledger.dispose()


async def served_by(counter: Counter[str], call: Callable[[], Awaitable[Any]]) -> set[str]:
    """Which engines ``call`` checked connections out of."""
    counter.clear()
    await call()
    return {name for name, count in counter.items() if count}


async def test_reads_go_to_the_read_engine_and_writes_never(
    two_engines: tuple[Ledger, Counter[str]], database_url: str
) -> None:
    ledger, counter = two_engines
    svc = ledger.service
    # Written by another ledger (another process, say): not this ledger's writes.
    async with Ledger.from_url(database_url) as writer:
        sid = (await writer.service.create_session("u1", "A")).id
        await writer.service.add_messages(
            sid, [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
        )
        await writer.service.record_usage(sid, Usage(1, 2, 3, 5), user_id="u1")
        await writer.agent_session("named", user_id="u1").add_items(
            [{"role": "user", "content": "x"}]
        )
    sdk = ledger.agent_session("named", user_id="u1", agent_name="A")
    await sdk.get_items()  # resolves the name once (on the primary, as a write would)

    reads: dict[str, Callable[[], Awaitable[Any]]] = {
        "get_items": lambda: svc.get_items(sid, user_id="u1"),
        "get_items(limit)": lambda: svc.get_items(sid, 2),
        "sdk get_items": sdk.get_items,
        "get_session": lambda: svc.get_session(sid),
        "list_user_sessions": lambda: svc.list_user_sessions("u1"),
        "get_usage": lambda: svc.get_usage(sid, user_id="u1"),
        "get_user_usage": lambda: svc.get_user_usage("u1"),
    }
    for name, call in reads.items():
        assert await served_by(counter, call) == {"read"}, name

    writes: dict[str, Callable[[], Awaitable[Any]]] = {
        "create_session": lambda: svc.create_session("u1", "A"),
        "add_message": lambda: svc.add_message(sid, "user", "again"),
        "add_messages": lambda: svc.add_messages(sid, [{"role": "assistant", "content": "ok"}]),
        "add_items": lambda: svc.add_items(sid, [{"role": "user", "content": "more"}]),
        "sdk add_items": lambda: sdk.add_items([{"role": "user", "content": "y"}]),
        "record_usage": lambda: svc.record_usage(sid, Usage(1, 2, 3, 5), user_id="u1"),
        "pop_item": lambda: svc.pop_item(sid, user_id="u1"),
        "sdk pop_item": sdk.pop_item,
    }
    for name, call in writes.items():
        assert await served_by(counter, call) == {"primary"}, name

    # Read-your-writes: this read database is no streaming standby (a second engine on the
    # primary's database here), so nothing shows whether it has this ledger's writes: from
    # now on, this ledger's reads go to the primary. (On PostgreSQL the first read after a
    # write asks the read database for its replay position once, and learns it has none.)
    await svc.get_items(sid)
    for name, call in reads.items():
        assert await served_by(counter, call) == {"primary"}, name
    assert [m.content for m in (await svc.get_session(sid)).messages] == [  # type: ignore[union-attr]
        "hello",
        "hi",
        "again",
        "ok",
    ]
    for name, call in {
        "clear_session": lambda: svc.clear_session(sid),
        "delete_session": lambda: svc.delete_session(sid),
        "sdk clear_session": sdk.clear_session,
    }.items():
        assert await served_by(counter, call) == {"primary"}, name


async def test_the_read_engine_only_ever_sees_reads(
    two_engines: tuple[Ledger, Counter[str]],
) -> None:
    ledger, _counter = two_engines
    seen: list[str] = []
    record_statements(ledger.read_engine, seen)
    svc = ledger.service
    sdk = ledger.agent_session("chat", user_id="u1")
    for turn in range(3):
        await sdk.get_items()
        await sdk.add_items([{"role": "user", "content": f"q{turn}"}])
    await sdk.pop_item()
    page = await svc.list_user_sessions("u1")
    await svc.get_session(page.sessions[0].id)
    await svc.get_usage(page.sessions[0].id)
    await sdk.clear_session()
    assert seen, "the read engine served nothing"
    # (SQLite reads in a transaction of its own: agentledger emits its BEGIN explicitly.)
    queries = [statement for statement in seen if statement.upper() != "BEGIN"]
    assert all(statement.upper().startswith("SELECT") for statement in queries), seen


async def copy_database(
    backend: str, url: str, tmp_path: Path
) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A copy of the database at ``url`` as it is now; returns its URL and a remover."""
    if backend == "sqlite":
        source = Path(make_url(url).database or "")
        target = tmp_path / "replica.db"
        shutil.copyfile(source, target)

        async def nothing() -> None:
            pass

        return f"sqlite+aiosqlite:///{target}", nothing
    name = await create_pg_database(template=make_url(url).database)
    return pg_url(name), lambda: drop_pg_database(name)


async def test_a_read_database_that_is_no_standby_serves_reads_until_this_ledger_writes(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    async with Ledger.from_url(database_url) as primary_only:
        sdk = primary_only.agent_session("chat", user_id="u1")
        await sdk.add_items([{"role": "user", "content": "before the copy"}])
        sid = sdk.ledger_session_id
    # The "replica" is frozen at this moment: it lags behind everything written from now on,
    # and, being a copy rather than a streaming standby, cannot say how far it got.
    replica_url, remove = await copy_database(backend, database_url, tmp_path)
    try:
        async with (
            Ledger.from_url(database_url, read_url=replica_url) as ledger,
            Ledger.from_url(replica_url) as replica,
            Ledger.from_url(database_url) as other_process,
        ):
            other_sdk = other_process.agent_session("chat", user_id="u1")
            await other_sdk.add_items([{"role": "user", "content": "by another process"}])
            sdk = ledger.agent_session("chat", user_id="u1")
            # Until this ledger writes, its reads come from the copy, which lacks the other
            # process's write (not this ledger's own, so not one it waits for).
            assert await sdk.get_items() == [{"role": "user", "content": "before the copy"}]
            listed = await ledger.service.list_user_sessions("u1")
            assert [s.id for s in listed.sessions] == [sid]

            # Its own writes go to the primary, and so do its reads from then on: they never
            # miss those writes (nor, now, the other process's).
            await sdk.add_items([{"role": "user", "content": "mine"}])
            other = await ledger.service.create_session("u1", "A")
            assert await sdk.get_items() == [
                {"role": "user", "content": "before the copy"},
                {"role": "user", "content": "by another process"},
                {"role": "user", "content": "mine"},
            ]
            listed = await ledger.service.list_user_sessions("u1")
            assert {s.id for s in listed.sessions} == {sid, other.id}
            assert await ledger.service.get_session(other.id) is not None
            # The writes never reached the read database.
            assert len(await replica.service.get_items(sid)) == 1
            assert (await replica.service.list_user_sessions("u1")).sessions[0].id == sid
            assert await sdk.pop_item() == {"role": "user", "content": "mine"}
    finally:
        await remove()


async def test_read_database_must_be_at_head(
    backend: str, database_url: str, empty_database_url: str
) -> None:
    async with Ledger.from_url(database_url, read_url=empty_database_url) as ledger:
        with pytest.raises(SchemaNotReadyError, match="read database"):
            await ledger.service.get_items(uuid.uuid4())


def test_read_url_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLEDGER_DATABASE_URL", "postgresql://app:pw-primary@db1/app")
    monkeypatch.setenv("AGENTLEDGER_READ_URL", "postgres://app:pw-replica@db2/app?sslmode=require")
    settings = LedgerSettings()
    assert settings.read_url is not None
    read = settings.read_engine_url
    assert read is not None
    assert read.drivername == "postgresql+asyncpg"
    assert driver_arguments(read)[1]["ssl"] == "require"  # libpq's sslmode, as asyncpg's ssl
    assert "pw-replica" not in repr(settings)
    assert "pw-primary" not in repr(settings)
    ledger = Ledger.from_settings()
    assert ledger.read_engine is not ledger.engine
    assert ledger.read_engine.url.host == "db2"
    assert "pw-replica" not in repr(ledger)
    # from_url takes the read URL from its argument only.
    assert Ledger.from_url("postgresql://app:pw@db1/app").read_engine.url.host == "db1"
    monkeypatch.setenv("AGENTLEDGER_READ_URL", "")
    assert LedgerSettings().read_url is None
    assert LedgerSettings().read_engine_url is None
