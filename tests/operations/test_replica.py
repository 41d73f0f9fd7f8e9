"""Reads on a real streaming replica (``read_url``), with read-your-writes.

One throwaway primary + hot standby pair per test module (and xdist worker), built from
scratch (``initdb``, ``pg_basebackup -R``: see :mod:`tests.support.replica`) so nothing depends
on the system server's replication settings; both servers are stopped and removed afterwards.
The replica is slowed on purpose (``recovery_min_apply_delay``) to show that a read following
this ledger's write never misses it, stopped to show that reads fall back to the primary
without an error, and started again to show that reads return to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError
from sqlalchemy import event, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from agentledger import (
    ConfigurationError,
    DatabaseUnavailableError,
    Ledger,
    LedgerSettings,
    Telemetry,
)
from agentledger.db.fastpath import FastPath
from tests.conftest import run_sync
from tests.support.replica import ReplicaPair, replica_pair

#: The replica's replay of each commit is held back this long in the read-your-writes tests.
APPLY_DELAY = "3s"
#: Reads stay on the primary this long after the replica failed (LedgerSettings).
RETRY_AFTER = 2.0

PATHS = ("asyncpg fast path", "SQLAlchemy (fast path stepped aside)")


@pytest.fixture(scope="module")
def pair() -> Iterator[ReplicaPair]:
    """A primary at agentledger's head and its streaming replica (set up once per module)."""
    started = time.monotonic()
    with replica_pair() as servers:

        async def migrate() -> None:
            await servers.wait_until_streaming()
            async with Ledger.from_url(servers.primary_url) as ledger:
                await ledger.upgrade()
            await wait_for_schema(servers.replica_url)

        run_sync(migrate())
        logging.getLogger(__name__).info("replica pair ready in %.1f s", time.monotonic() - started)
        yield servers


@asynccontextmanager
async def replica_ledger(pair: ReplicaPair, path: str = PATHS[0]) -> AsyncIterator[Ledger]:
    """A Ledger writing to the primary and reading from the replica, on the given path."""
    settings = LedgerSettings(
        database_url=pair.primary_url, read_url=pair.replica_url, read_retry_after=RETRY_AFTER
    )
    async with Ledger.from_settings(settings) as ledger:
        for engine in (ledger.engine, ledger.read_engine):
            fast = FastPath.for_engine(engine)
            assert fast is not None
            if path != PATHS[0]:
                event.listen(engine.sync_engine, "before_cursor_execute", _seen)
                assert fast.stepped_aside_for == "a before_cursor_execute listener on the engine"
            else:
                assert fast.stepped_aside_for is None
        # Wait until the replica has the schema (and the ledger has checked it).
        await ledger.service.list_user_sessions("nobody")
        yield ledger


def _seen(*_args: Any) -> None:
    """A cursor listener, as a tracing host would add: the fast path steps aside for it."""


def count_checkouts(ledger: Ledger) -> Counter[str]:
    counter: Counter[str] = Counter()
    for name, engine in (("primary", ledger.engine), ("replica", ledger.read_engine)):
        _count(engine, counter, name)
    return counter


def _count(engine: AsyncEngine, counter: Counter[str], name: str) -> None:
    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(*_args: Any) -> None:
        counter[name] += 1


async def served_by(counter: Counter[str], call: Callable[[], Awaitable[Any]]) -> set[str]:
    """Which servers ``call`` took connections from."""
    counter.clear()
    await call()
    return {name for name, count in counter.items() if count}


async def replica_has(pair: ReplicaPair, session_id: uuid.UUID) -> int:
    """Messages of the session the replica shows now (asked directly, not via agentledger)."""
    connection = await asyncpg.connect(pair.replica_url)
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM conversation_messages WHERE session_id = $1", session_id
        )
    finally:
        await connection.close()
    return int(count)


async def wait_for_replica(pair: ReplicaPair, session_id: uuid.UUID, messages: int) -> None:
    deadline = time.monotonic() + 20
    while await replica_has(pair, session_id) < messages:
        assert time.monotonic() < deadline, "the replica never caught up"
        await asyncio.sleep(0.1)


async def back_on_the_replica(counter: Counter[str], call: Callable[[], Awaitable[Any]]) -> None:
    """Repeat ``call`` until it is served by the replica alone (it has replayed past the
    position of this ledger's writes, which other commits since may have moved on)."""
    deadline = time.monotonic() + 20
    while await served_by(counter, call) != {"replica"}:
        assert time.monotonic() < deadline, "reads never returned to the replica"
        await asyncio.sleep(0.1)


async def wait_for_schema(url: str) -> None:
    """Wait until the database at ``url`` shows agentledger's migrations."""
    deadline = time.monotonic() + 20
    while True:
        connection = await asyncpg.connect(url)
        try:
            found = await connection.fetchval(
                "SELECT to_regclass('agentledger_alembic_version') IS NOT NULL"
            )
        finally:
            await connection.close()
        if found:
            return
        assert time.monotonic() < deadline, "the replica never got the schema"
        await asyncio.sleep(0.05)


async def test_reads_run_on_the_replica(pair: ReplicaPair) -> None:
    user = f"u-{uuid.uuid4()}"
    async with Ledger.from_url(pair.primary_url) as writer:  # another process's writes
        sid = (await writer.service.create_session(user, "A")).id
        await writer.service.add_items(sid, [{"role": "user", "content": "hello"}])
    await wait_for_replica(pair, sid, 1)
    async with replica_ledger(pair) as ledger:
        async with ledger.read_engine.connect() as connection:
            assert (await connection.execute(text("SELECT pg_is_in_recovery()"))).scalar()
        async with ledger.engine.connect() as connection:
            assert not (await connection.execute(text("SELECT pg_is_in_recovery()"))).scalar()
        counter = count_checkouts(ledger)
        svc = ledger.service
        reads: dict[str, Callable[[], Awaitable[Any]]] = {
            "get_items": lambda: svc.get_items(sid),
            "get_session": lambda: svc.get_session(sid),
            "list_user_sessions": lambda: svc.list_user_sessions(user),
            "get_usage": lambda: svc.get_usage(sid),
        }
        for name, call in reads.items():
            assert await served_by(counter, call) == {"replica"}, name
        assert await svc.get_items(sid) == [{"role": "user", "content": "hello"}]


async def test_a_read_the_replica_served_names_the_replica_in_its_span(pair: ReplicaPair) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    user = f"u-{uuid.uuid4()}"
    async with Ledger.from_url(pair.primary_url) as writer:
        sid = (await writer.service.create_session(user, "A")).id
        await writer.service.add_items(sid, [{"role": "user", "content": "hello"}])
    await wait_for_replica(pair, sid, 1)
    replica, primary = make_url(pair.replica_url), make_url(pair.primary_url)
    async with Ledger.from_url(
        pair.primary_url,
        read_url=pair.replica_url,
        telemetry=Telemetry(tracer_provider=provider),
    ) as ledger:
        await ledger.service.list_user_sessions("nobody")  # the schema checks, done
        counter = count_checkouts(ledger)
        assert await served_by(counter, lambda: ledger.service.get_items(sid)) == {"replica"}
        await ledger.service.add_items(sid, [{"role": "assistant", "content": "hi"}])
        exporter.clear()
        # Right after this ledger's write, before the replica replayed it: the primary.
        await ledger.service.get_items(sid)
        exporter.clear()
        await wait_for_replica(pair, sid, 2)
        assert await served_by(counter, lambda: ledger.service.get_items(sid)) == {"replica"}
        (span,) = [one for one in exporter.get_finished_spans() if one.name.endswith("get_items")]
        attributes = dict(span.attributes or {})
        assert attributes["server.port"] == replica.port != primary.port
        assert attributes["db.namespace"] == replica.database
        assert attributes["agentledger.session_id"] == str(sid)
        # An append (on the primary) says nothing of the replica.
        exporter.clear()
        await ledger.service.add_items(sid, [{"role": "user", "content": "again"}])
        (append,) = exporter.get_finished_spans()
        assert "server.port" not in (append.attributes or {})
    provider.shutdown()


@pytest.mark.parametrize("path", PATHS)
async def test_read_your_writes_on_a_slowed_replica(pair: ReplicaPair, path: str) -> None:
    await pair.set_apply_delay(APPLY_DELAY)
    try:
        async with replica_ledger(pair, path) as ledger:
            counter = count_checkouts(ledger)
            svc = ledger.service
            user = f"u-{uuid.uuid4()}"
            sid = (await svc.create_session(user, "A")).id
            sdk = ledger.agent_session("chat", user_id=user, agent_name="A")

            await svc.add_items(sid, [{"role": "user", "content": "q1"}])
            assert await svc.get_items(sid) == [{"role": "user", "content": "q1"}]
            record = await svc.get_session(sid)
            assert record is not None
            assert [m.content for m in record.messages] == ["q1"]
            listed = await svc.list_user_sessions(user)
            assert [s.id for s in listed.sessions] == [sid]
            await sdk.add_items([{"role": "user", "content": "hi"}])
            assert await sdk.get_items() == [{"role": "user", "content": "hi"}]
            assert "primary" in await served_by(counter, sdk.get_items)

            # The replica still lacks those writes now, after the reads that saw them: the
            # reads did not come from it.
            assert await replica_has(pair, sid) == 0
            assert await replica_has(pair, sdk.ledger_session_id) == 0

            # Once the replica has replayed the writes, reads return to it, and the next ones
            # cost no check on the primary.
            await back_on_the_replica(counter, sdk.get_items)
            assert await served_by(counter, lambda: svc.get_items(sid)) == {"replica"}
            assert counter["replica"] == 1
            assert await svc.get_items(sid) == [{"role": "user", "content": "q1"}]
    finally:
        await pair.set_apply_delay("0")


@pytest.mark.parametrize("path", PATHS)
async def test_a_replica_that_is_down_leaves_reads_to_the_primary(
    pair: ReplicaPair, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentledger")
    async with replica_ledger(pair, path) as ledger:
        counter = count_checkouts(ledger)
        svc = ledger.service
        user = f"u-{uuid.uuid4()}"
        sdk = ledger.agent_session("chat", user_id=user)
        await sdk.add_items([{"role": "user", "content": "before"}])
        sid = sdk.ledger_session_id
        # The first read after a write positions it on the primary, then asks the replica.
        assert "primary" in await served_by(counter, sdk.get_items)
        await back_on_the_replica(counter, sdk.get_items)

        pair.stop_replica()
        try:
            # No error: the reads run on the primary, and the warning says why.
            assert await sdk.get_items() == [{"role": "user", "content": "before"}]
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1
            assert "read replica" in warnings[0].getMessage()
            assert f"127.0.0.1:{pair.replica_port}" in warnings[0].getMessage()
            await sdk.add_items([{"role": "user", "content": "while it is down"}])
            for call in (
                sdk.get_items,
                lambda: svc.get_session(sid),
                lambda: svc.list_user_sessions(user),
            ):
                # Within the back-off, the replica is not even tried.
                assert await served_by(counter, call) == {"primary"}
            assert len(await sdk.get_items()) == 2
        finally:
            if not pair.replica_running():
                pair.start_replica()
        await pair.wait_until_streaming()
        await asyncio.sleep(RETRY_AFTER)
        # After the back-off, reads return to the replica once it has every write.
        await back_on_the_replica(counter, sdk.get_items)
        assert await served_by(counter, sdk.get_items) == {"replica"}
        assert counter["replica"] == 1
        assert await sdk.get_items() == [
            {"role": "user", "content": "before"},
            {"role": "user", "content": "while it is down"},
        ]
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


async def test_a_replica_that_is_down_at_startup_fails_nothing(
    pair: ReplicaPair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentledger")
    user = f"u-{uuid.uuid4()}"
    pair.stop_replica()
    try:
        settings = LedgerSettings(database_url=pair.primary_url, read_url=pair.replica_url)
        async with Ledger.from_settings(settings) as ledger:
            # The first read (and the replica's schema check with it) finds the replica down.
            assert (await ledger.service.list_user_sessions(user)).sessions == ()
            sdk = ledger.agent_session("chat", user_id=user)
            await sdk.add_items([{"role": "user", "content": "hello"}])
            assert await sdk.get_items() == [{"role": "user", "content": "hello"}]
    finally:
        if not pair.replica_running():
            pair.start_replica()
    await pair.wait_until_streaming()
    # (One warning per back-off period: importing the Agents SDK may take longer than one.)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings
    assert all("read replica" in warning and "cannot be reached" in warning for warning in warnings)


async def test_read_your_writes_across_concurrent_tasks(pair: ReplicaPair) -> None:
    await pair.set_apply_delay(APPLY_DELAY)
    try:
        async with replica_ledger(pair) as ledger:
            user = f"u-{uuid.uuid4()}"

            async def turn(number: int) -> list[Any]:
                sdk = ledger.agent_session(f"chat-{number}", user_id=user)
                await sdk.add_items([{"role": "user", "content": f"q{number}"}])
                return list(await sdk.get_items())

            results = await asyncio.gather(*(turn(number) for number in range(8)))
            for number, items in enumerate(results):
                assert items == [{"role": "user", "content": f"q{number}"}]
            listed = await ledger.service.list_user_sessions(user, limit=20)
            assert len(listed.sessions) == 8
    finally:
        await pair.set_apply_delay("0")


async def test_a_replica_still_replaying_the_migrations_leaves_reads_to_the_primary(
    pair: ReplicaPair,
) -> None:
    database = f"fresh_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pair.primary_url)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        # The replica has the (empty) database before its replay is slowed down...
        deadline = time.monotonic() + 20
        while not await _replica_has_database(pair, database):
            assert time.monotonic() < deadline, "the replica never got the database"
            await asyncio.sleep(0.05)
        await pair.set_apply_delay(APPLY_DELAY)
        try:
            # ...and lags behind the migrations run now: it is not at head for a while.
            primary, replica = (
                pair.url(pair.primary_port, database),
                pair.url(pair.replica_port, database),
            )
            async with Ledger.from_url(primary) as deploy:
                await deploy.upgrade()
            settings = LedgerSettings(database_url=primary, read_url=replica)
            async with Ledger.from_settings(settings) as ledger:
                counter = count_checkouts(ledger)
                listed = await ledger.service.list_user_sessions("u1")
                assert listed.sessions == ()
                assert "primary" in await served_by(
                    counter, lambda: ledger.service.list_user_sessions("u1")
                )
                # Once the replica has the migrations, it serves the reads.
                await wait_for_schema(replica)
                await back_on_the_replica(counter, lambda: ledger.service.list_user_sessions("u1"))
        finally:
            await pair.set_apply_delay("0")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


async def _replica_has_database(pair: ReplicaPair, database: str) -> bool:
    connection = await asyncpg.connect(pair.replica_url)
    try:
        return bool(
            await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        )
    finally:
        await connection.close()


@pytest.mark.parametrize("path", PATHS)
async def test_a_read_on_a_connection_opened_meanwhile_is_checked_again(
    pair: ReplicaPair, path: str
) -> None:
    # Regression: the decision to trust the replica was taken before the read checked out a
    # connection; when that checkout opened a new one (the pool replacing a dead connection
    # after a replica restart), the read ran unchecked on a server that may have resumed from
    # an older position, and a session this ledger had just created read as missing.
    async with replica_ledger(pair, path) as ledger:
        counter = count_checkouts(ledger)
        svc = ledger.service
        user = f"u-{uuid.uuid4()}"
        sid = (await svc.create_session(user, "A")).id
        await svc.add_items(sid, [{"role": "user", "content": "kept"}])
        await back_on_the_replica(counter, lambda: svc.get_items(sid))  # trusted, cached

        checks: list[str] = []

        def replica_statement(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
            checks.append(statement)

        # A restart: the standby may resume from an older position than the one trusted.
        await asyncio.to_thread(pair.stop_replica)
        await asyncio.to_thread(pair.start_replica)
        await pair.wait_until_streaming()
        await ledger.read_engine.dispose()  # the next read opens a new connection
        event.listen(ledger.read_engine.sync_engine, "before_cursor_execute", replica_statement)
        try:
            record = await svc.get_session(sid, user)
        finally:
            event.remove(ledger.read_engine.sync_engine, "before_cursor_execute", replica_statement)
        assert record is not None
        assert [m.content for m in record.messages] == ["kept"]
        assert any("pg_last_wal_replay_lsn" in statement for statement in checks), checks


async def test_concurrent_reads_that_grow_the_pool_all_succeed(pair: ReplicaPair) -> None:
    # Regression: every new connection to the replica counted as a possible restart, so while
    # concurrent reads grew the pool (default size 5, overflow 10), each read in flight was run
    # again, and reads failed with ReadReplicaUnavailableError. A new connection to the same
    # server process now changes nothing.
    user = f"u-{uuid.uuid4()}"
    async with Ledger.from_url(pair.primary_url) as writer:
        sid = (await writer.service.create_session(user, "A")).id
        await writer.service.add_items(sid, [{"role": "user", "content": "hello"}])
    await wait_for_replica(pair, sid, 1)
    async with replica_ledger(pair) as ledger:
        counter = count_checkouts(ledger)
        svc = ledger.service

        async def reader() -> None:
            for _ in range(5):
                assert await svc.get_items(sid) == [{"role": "user", "content": "hello"}]
                assert [s.id for s in await svc.list_user_sessions(user)] == [sid]

        await asyncio.gather(*(reader() for _ in range(16)))
        assert counter["replica"] >= 16 * 10
        assert counter["primary"] == 0


def test_read_database_errors_name_the_read_url_and_backends_must_match(
    pair: ReplicaPair, tmp_path: Any
) -> None:
    async def scenario() -> None:
        wrong = pair.replica_url.rsplit("/", 1)[0] + "/no_such_database"
        settings = LedgerSettings(database_url=pair.primary_url, read_url=wrong)
        async with Ledger.from_settings(settings) as ledger:
            with pytest.raises(DatabaseUnavailableError, match=r"read database at .*read_url"):
                await ledger.service.list_user_sessions("nobody")
            # Writes are unaffected.
            await ledger.service.create_session(f"u-{uuid.uuid4()}", "A")

        with pytest.raises(ConfigurationError, match="same backend"):
            Ledger.from_url(pair.primary_url, read_url=f"sqlite+aiosqlite:///{tmp_path}/r.db")

    run_sync(scenario())


def test_read_retry_after_must_be_finite() -> None:
    with pytest.raises(ValidationError):
        LedgerSettings(read_retry_after=float("inf"))


async def test_one_warning_per_outage(pair: ReplicaPair, caplog: pytest.LogCaptureFixture) -> None:
    settings = LedgerSettings(
        database_url=pair.primary_url,
        read_url="postgresql://postgres@127.0.0.1:1/nothing_listens_here",
        read_retry_after=0.05,
    )
    async with Ledger.from_settings(settings) as ledger:
        with caplog.at_level(logging.WARNING, logger="agentledger"):
            for _ in range(6):
                await ledger.service.list_user_sessions("nobody")
                await asyncio.sleep(0.06)  # past read_retry_after: the replica is tried again
    warnings = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(warnings) == 1
