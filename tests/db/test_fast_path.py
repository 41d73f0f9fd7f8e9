"""The asyncpg fast path of the agent loop's statements, and pooled-connection health checks.

The whole suite runs agentledger's hot paths (append, tail read, pop) through the fast path on
PostgreSQL; these tests cover what is particular to it: when it steps aside, what happens when
the connection dies or the task is cancelled in the middle of a statement, and the cheap
replacement of SQLAlchemy's pre-ping (a connection the server closed is never handed out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from agents.items import TResponseInputItem
from sqlalchemy import event, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from agentledger import ConnectionLostError, Ledger
from agentledger.db.fastpath import DriverStatements, FastPath
from agentledger.db.models import messages_table
from agentledger.ledger import check_pooled_connections
from agentledger.testing import create_pg_database, drop_pg_database, pg_url
from tests.support.items import content, contents


@pytest.fixture
async def pg_ledger(pg_template: str) -> AsyncIterator[Ledger]:
    name = await create_pg_database(template=pg_template)
    try:
        async with Ledger.from_url(pg_url(name)) as ledger:
            yield ledger
    finally:
        await drop_pg_database(name)


async def admin(ledger: Ledger) -> asyncpg.Connection:
    url = ledger.engine.url.set(drivername="postgresql")
    return await asyncpg.connect(url.render_as_string(hide_password=False))


async def terminate_pooled(ledger: Ledger, connection: asyncpg.Connection) -> int:
    """Terminate every server backend of the ledger's database except ``connection``'s."""
    terminated = await connection.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return int(terminated)


def test_fast_path_steps_aside_while_statements_are_observed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = create_async_engine("postgresql+asyncpg://u@localhost/db")
    fast_path = FastPath.for_engine(engine)
    assert fast_path is not None
    assert fast_path.statements() is fast_path.driver

    def listener(*_args: Any) -> None:
        pass

    caplog.set_level(logging.INFO, logger="agentledger")
    for name in ("before_cursor_execute", "after_cursor_execute", "before_execute"):
        event.listen(engine.sync_engine, name, listener)
        assert fast_path.statements() is None, name
        assert name in (fast_path.stepped_aside_for or "")
        event.remove(engine.sync_engine, name, listener)
        assert fast_path.statements() is fast_path.driver
    # Never silently: each time it steps aside, the reason is logged once.
    reasons = [r.getMessage() for r in caplog.records if "fast path steps aside" in r.getMessage()]
    assert len(reasons) == 3
    event.listen(engine.sync_engine, "handle_error", listener)
    assert fast_path.statements() is None
    event.remove(engine.sync_engine, "handle_error", listener)
    echoing = FastPath.for_engine(create_async_engine(engine.url, echo=True))
    assert echoing is not None
    assert echoing.statements() is None
    logger = logging.getLogger("sqlalchemy.engine")
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert fast_path.statements() is None
    finally:
        logger.setLevel(level)
    translated = FastPath.for_engine(engine.execution_options(schema_translate_map={None: "x"}))
    assert translated is not None
    assert translated.statements() is None
    assert FastPath.for_engine(create_async_engine("sqlite+aiosqlite://")) is None


def test_the_listeners_are_judged_again_whenever_they_change() -> None:
    """The judgement is kept while the listeners stay the same ones: swapping a listener the
    fast path may run beside (OpenTelemetry's) for another, one for one, is noticed."""
    engine = create_async_engine("postgresql+asyncpg://u@localhost/db")

    class Spans:
        def statement(self, sql: str) -> contextlib.nullcontext[None]:
            return contextlib.nullcontext()

        def serving(self) -> None:
            pass

    fast_path = FastPath.for_engine(engine, statement_spans=Spans())
    assert fast_path is not None

    def traced(*args: Any) -> Any:
        return args[2], args[3]  # the statement and parameters, unchanged (retval=True)

    def counted(*args: Any) -> Any:
        return args[2], args[3]

    traced.__module__ = "opentelemetry.instrumentation.sqlalchemy.engine"
    event.listen(engine.sync_engine, "before_cursor_execute", traced, retval=True)
    for _ in range(2):  # judged, then the same judgement kept
        assert fast_path.statements() is fast_path.spanned
        assert fast_path.covered
    event.remove(engine.sync_engine, "before_cursor_execute", traced)
    event.listen(engine.sync_engine, "before_cursor_execute", counted, retval=True)
    assert fast_path.statements() is None
    assert "before_cursor_execute" in (fast_path.stepped_aside_for or "")
    event.remove(engine.sync_engine, "before_cursor_execute", counted)
    assert fast_path.statements() is fast_path.driver


def test_connection_level_listeners_make_the_fast_path_step_aside(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Listeners the fast path's statements would bypass: one on each connection (added by an
    engine_connect listener), and one on SQLAlchemy's Connection class."""
    engine = create_async_engine("postgresql+asyncpg://u@localhost/db")
    fast_path = FastPath.for_engine(engine)
    assert fast_path is not None

    def per_connection(connection: Connection) -> None:
        event.listen(connection, "before_cursor_execute", lambda *_args: None)

    event.listen(engine.sync_engine, "engine_connect", per_connection)
    assert fast_path.statements() is None
    assert "engine_connect" in (fast_path.stepped_aside_for or "")
    event.remove(engine.sync_engine, "engine_connect", per_connection)
    assert fast_path.statements() is fast_path.driver

    def everywhere(*args: Any) -> None:
        pass

    # SQLAlchemy never resets the class's flag: restore it for the tests after this one.
    monkeypatch.setattr(Connection, "_has_events", Connection._has_events)
    event.listen(Connection, "before_cursor_execute", everywhere)
    try:
        assert fast_path.statements() is None
        assert "Connection class" in (fast_path.stepped_aside_for or "")
    finally:
        event.remove(Connection, "before_cursor_execute", everywhere)


async def test_the_hot_paths_take_the_fast_path(
    pg_ledger: Ledger, counted_driver: list[str]
) -> None:
    """Appends and tail reads of the agent loop go through the driver (a mutation that turns the
    fast path off fails here), and only they: a transaction never does."""
    sent = counted_driver
    session = pg_ledger.agent_session("chat", user_id="u1")
    await session.add_items([{"role": "user", "content": "hi"}])  # the append
    await session.get_items()  # the tail read
    assert sent == ["driver", "driver"]
    sent.clear()
    await pg_ledger.service.fork_session(session.ledger_session_id)  # a transaction
    assert sent == []


async def test_the_driver_applies_result_processors(pg_ledger: Ledger) -> None:
    """A column whose type decodes on the way out (U+0000 escaped in text, UTC times) comes
    back through the driver exactly as through SQLAlchemy."""
    service = pg_ledger.service
    session = await service.create_session("u1", "a")
    await service.add_message(session.id, "user", "nul\x00 and esc\ue000 inside")
    query = select(messages_table.c.content, messages_table.c.created_at).where(
        messages_table.c.session_id == session.id
    )
    driver = DriverStatements(pg_ledger.engine)
    (row,) = await driver.rows(query, {})
    async with pg_ledger.engine.connect() as connection:
        (expected,) = (await connection.execute(query)).all()
    assert row.content == expected.content == "nul\x00 and esc\ue000 inside"
    assert row.created_at == expected.created_at
    assert row.created_at.tzinfo is not None


async def test_a_statement_refused_on_a_dead_connection_is_retried_on_a_fresh_one(
    pg_ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg refuses to start a statement on a connection the server already ended
    ("connection is closed"): nothing was sent, so the fast path retries once on a fresh
    connection, and never puts the dead one back into the pool. (Removing the retry or the
    invalidation fails this test.)"""
    session = pg_ledger.agent_session("chat", user_id="u1")
    await session.add_items([{"role": "user", "content": "one"}])
    used: list[Any] = []
    real = DriverStatements._run_once

    async def first_on_a_dead_connection(self: DriverStatements, operation: Any) -> Any:
        async def refused(driver: Any) -> Any:
            used.append(driver)
            if len(used) == 1:
                raise asyncpg.InterfaceError("connection is closed")
            return await operation(driver)

        return await real(self, refused)

    monkeypatch.setattr(DriverStatements, "_run_once", first_on_a_dead_connection)
    assert contents(await session.get_items()) == ["one"]
    assert len(used) == 2
    assert used[0].is_closed()  # invalidated: closed, not returned to the pool
    assert not used[1].is_closed()
    assert used[0] is not used[1]


async def test_a_connection_the_server_closed_is_replaced(pg_ledger: Ledger) -> None:
    ledger = pg_ledger
    session = ledger.agent_session("chat", user_id="u1")
    await session.add_items([{"role": "user", "content": "one"}])
    connection = await admin(ledger)
    try:
        assert await terminate_pooled(ledger, connection) >= 1
    finally:
        await connection.close()
    await asyncio.sleep(0.1)  # the event loop reads the end of the stream
    # Neither the fast path nor SQLAlchemy's path is handed the dead connection.
    await session.add_items([{"role": "user", "content": "two"}])
    assert contents(await session.get_items()) == ["one", "two"]
    assert (await ledger.service.list_user_sessions("u1")).sessions


async def test_connection_lost_mid_statement_is_a_retryable_ledger_error(
    pg_ledger: Ledger,
) -> None:
    ledger = pg_ledger
    session = ledger.agent_session("chat", user_id="u1")
    await session.add_items([{"role": "user", "content": "one"}])
    blocker = await admin(ledger)
    try:
        # Hold the session row: the next append waits inside its statement...
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute(
            "SELECT 1 FROM agent_sessions WHERE id = $1 FOR UPDATE", session.ledger_session_id
        )
        append = asyncio.create_task(session.add_items([{"role": "user", "content": "two"}]))
        await asyncio.sleep(0.3)
        assert not append.done()
        # ...when its connection is killed.
        await blocker.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND wait_event_type = 'Lock'"
        )
        with pytest.raises(ConnectionLostError) as caught:
            await append
        assert caught.value.retryable
        await transaction.rollback()
    finally:
        await blocker.close()
    # The dead connection was discarded; the ledger keeps working.
    await session.add_items([{"role": "user", "content": "three"}])
    assert contents(await session.get_items()) == ["one", "three"]


async def test_a_cancelled_append_is_all_or_nothing_and_the_pool_stays_healthy(
    pg_ledger: Ledger,
) -> None:
    ledger = pg_ledger
    session = ledger.agent_session("chat", user_id="u1")
    await session.add_items([{"role": "user", "content": "one"}])
    blocker = await admin(ledger)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute(
            "SELECT 1 FROM agent_sessions WHERE id = $1 FOR UPDATE", session.ledger_session_id
        )
        turn: list[TResponseInputItem] = [
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "2"},
        ]
        append = asyncio.create_task(session.add_items(turn))
        await asyncio.sleep(0.3)
        append.cancel()
        with pytest.raises(asyncio.CancelledError):
            await append
        await transaction.rollback()
    finally:
        await blocker.close()
    await asyncio.sleep(0.2)
    stored = contents(await session.get_items())
    assert stored in (["one"], ["one", "two", "2"])
    for n in range(5):  # every pooled connection still works
        await session.add_items([{"role": "user", "content": f"after {n}"}])
    assert content((await session.get_items())[-1]) == "after 4"


async def test_pooled_connections_idle_too_long_are_pinged_first(pg_template: str) -> None:
    name = await create_pg_database(template=pg_template)
    engine = create_async_engine(pg_url(name).replace("postgresql://", "postgresql+asyncpg://"))
    try:
        check_pooled_connections(engine, ping_after_idle=0.05)
        pings: list[bool] = []
        original = engine.sync_engine.dialect.do_ping

        def counting_ping(dbapi_connection: Any) -> bool:
            pings.append(True)
            if len(pings) == 2:
                raise OSError("simulated dead connection")
            return bool(original(dbapi_connection))

        engine.sync_engine.dialect.do_ping = counting_ping  # type: ignore[method-assign]

        async def select_one() -> int:
            async with engine.connect() as connection:
                return int((await connection.execute(text("SELECT 1"))).scalar_one())

        assert await select_one() == 1  # a new connection: no ping
        assert await select_one() == 1  # used moments ago: no ping
        assert pings == []
        await asyncio.sleep(0.1)
        assert await select_one() == 1  # idle: pinged, alive
        assert len(pings) == 1
        await asyncio.sleep(0.1)
        assert await select_one() == 1  # idle: pinged, "dead", replaced by a new one
        assert len(pings) == 2
    finally:
        await engine.dispose()
        await drop_pg_database(name)


async def test_a_unit_of_work_never_holds_two_pooled_connections(database_url: str) -> None:
    # Regression: an SDK read of an emptied session checked ownership through SQLAlchemy (whose
    # session keeps its connection until the unit ends) and then read the checkpoint through
    # the driver on a second connection; with a pool of one it waited for itself until
    # pool_timeout, and with many tasks on a small pool (PgBouncer's) every task did.
    async with Ledger.from_url(database_url, pool_size=1, max_overflow=0, pool_timeout=3) as ledger:
        chat = ledger.agent_session("emptied", user_id="u1")
        await chat.add_items([{"role": "user", "content": "a"}])
        await chat.clear_session()

        assert await asyncio.wait_for(chat.get_items(), timeout=2) == []
        assert await asyncio.wait_for(chat.get_items(1), timeout=2) == []
        # The same from many tasks at once on the one connection.
        reads = [chat.get_items() for _ in range(16)]
        assert await asyncio.wait_for(asyncio.gather(*reads), timeout=10) == [[]] * 16
        # Another user's session reads as empty the same way (ownership, then nothing).
        other = ledger.agent_session("emptied", user_id="u2")
        assert await asyncio.wait_for(other.get_items(), timeout=2) == []
