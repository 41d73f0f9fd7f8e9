"""Faults: killed connections, conflicts, timeouts, cancellation and a server restart.

Every test checks the two promises of docs/reliability.md: a failure reaches the caller as a
typed :class:`~agentledger.LedgerError` (never a driver exception), and an operation is all or
nothing (a batch is either stored whole or not at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.pool import QueuePool

from agentledger import Ledger, SessionService, UnitOfWork, translation
from agentledger.db.dialect import Dialect
from agentledger.errors import (
    ConflictError,
    ConnectionLostError,
    LedgerError,
    LedgerTimeoutError,
)


def _batch(size: int, tag: str = "m") -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{tag}{index} " + "x" * 200} for index in range(size)]


async def _admin(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))


def _pool(ledger: Ledger) -> QueuePool:
    """The ledger's connection pool, a queue pool on both backends (it counts connections)."""
    pool = ledger.engine.pool
    assert isinstance(pool, QueuePool), pool
    return pool


# -- a pooled connection killed by the server -------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("explicit_pre_ping", [False, True])
async def test_killed_pooled_connections_never_reach_the_next_caller(
    database_url: str, explicit_pre_ping: bool
) -> None:
    kwargs: dict[str, Any] = {"pool_pre_ping": True} if explicit_pre_ping else {}
    async with Ledger.from_url(database_url, **kwargs) as ledger:
        svc = ledger.service
        session = await svc.create_session(user_id="u", agent_name="a")
        # Fill the pool with a few connections.
        await asyncio.gather(*(svc.get_items(session.id) for _ in range(4)))
        assert _pool(ledger).checkedin() >= 1
        admin = await _admin(database_url)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            # The kill is complete once the backends have exited (their goodbye is then on the
            # wire); a kill racing an operation in flight is the restart test's subject.
            for _ in range(200):
                left = await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                if left == 0:
                    break
                await asyncio.sleep(0.01)
        finally:
            await admin.close()
        assert killed >= 1
        # Every operation after the kill succeeds: dead connections are replaced at checkout.
        for index in range(6):
            await svc.add_message(session.id, role="user", content=f"after {index}")
            assert len(await svc.get_items(session.id)) == index + 1
        record = await svc.get_session(session.id)
        assert record is not None
        assert len(record.messages) == 6


# -- serialization failures and deadlocks: bounded whole-operation retries -----------------


class _SerializationFailure(Exception):
    """Stands in for the driver's exception; SQLAlchemy wraps it as it would asyncpg's."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__("could not serialize access")
        self.sqlstate = sqlstate


class _ConflictingUnitOfWork:
    """A real unit of work whose commit fails with a conflict while ``failures`` remain."""

    def __init__(self, inner: UnitOfWork, factory: _ConflictingFactory) -> None:
        self._inner = inner
        self._factory = factory

    async def __aenter__(self) -> _ConflictingUnitOfWork:
        await self._inner.__aenter__()
        self.sessions = self._inner.sessions
        self.messages = self._inner.messages
        self.usage = self._inner.usage
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._inner.__aexit__(*exc_info)

    @property
    def db(self) -> AsyncSession:
        return self._inner.db

    @property
    def dialect(self) -> Dialect:
        return self._inner.dialect

    async def commit(self) -> None:
        self._factory.attempts += 1
        if self._factory.failures > 0:
            self._factory.failures -= 1
            # The statements ran; the database aborts the transaction at commit.
            raise sa_exc.OperationalError(
                "COMMIT", None, _SerializationFailure(self._factory.sqlstate)
            )
        await self._inner.commit()

    async def rollback(self) -> None:
        await self._inner.rollback()


class _ConflictingFactory:
    """Units of work in a real transaction (the autocommit hint is ignored, as allowed)."""

    def __init__(self, ledger: Ledger, failures: int, sqlstate: str = "40001") -> None:
        self._ledger = ledger
        self.failures = failures
        self.sqlstate = sqlstate
        self.attempts = 0

    def __call__(self, *, autocommit: bool = False, tenant: str | None = None) -> UnitOfWork:
        # A stand-in with the parts of a UnitOfWork the service's writes use.
        inner = self._ledger.unit_of_work(tenant=tenant)
        return cast(UnitOfWork, _ConflictingUnitOfWork(inner, self))


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(translation, "CONFLICT_RETRY", translation.RetryPolicy(backoff=0.0))


@pytest.mark.usefixtures("no_backoff")
@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
async def test_conflicts_are_retried_as_whole_operations(ledger: Ledger, sqlstate: str) -> None:
    session = await ledger.service.create_session(user_id="u", agent_name="a")
    factory = _ConflictingFactory(ledger, failures=2, sqlstate=sqlstate)
    svc = SessionService(factory)
    result = await svc.add_messages(session.id, _batch(5))
    assert factory.attempts == 3
    assert (result.first_seq, result.count) == (1, 5)
    record = await ledger.service.get_session(session.id)
    assert record is not None
    # Nothing of the two failed attempts remains: exactly one copy, seqs 1..5.
    assert [m.seq for m in record.messages] == [1, 2, 3, 4, 5]
    assert [m.content for m in record.messages] == [m["content"] for m in _batch(5)]


@pytest.mark.usefixtures("no_backoff")
async def test_a_lasting_conflict_surfaces_as_conflict_error_after_the_bound(
    ledger: Ledger,
) -> None:
    session = await ledger.service.create_session(user_id="u", agent_name="a")
    factory = _ConflictingFactory(ledger, failures=1_000)
    svc = SessionService(factory)
    with pytest.raises(ConflictError) as caught:
        await svc.add_messages(session.id, _batch(3))
    assert caught.value.retryable
    assert caught.value.sqlstate == "40001"
    assert factory.attempts == translation.CONFLICT_RETRY.attempts
    assert await ledger.service.get_items(session.id) == []
    # Without retries (e.g. a service over a host's transactions) the first conflict surfaces.
    once = _ConflictingFactory(ledger, failures=1)
    with pytest.raises(ConflictError):
        await SessionService(once, retry_conflicts=False).add_messages(session.id, _batch(3))
    assert once.attempts == 1
    assert await ledger.service.get_items(session.id) == []


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_real_serialization_failure_inside_using_is_not_retried(
    ledger: Ledger, database_url: str
) -> None:
    session = await ledger.service.create_session(user_id="u", agent_name="a")
    appends = 0

    async with ledger.engine.connect() as connection:

        def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            nonlocal appends
            if "conversation_messages" in statement and "INSERT" in statement:
                appends += 1

        event.listen(connection.sync_connection, "before_cursor_execute", count)
        await connection.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ")
        try:
            # The host's snapshot is taken here...
            await connection.exec_driver_sql("SELECT count(*) FROM agent_sessions")
            # ...then another client changes the session row and commits...
            await ledger.service.add_message(session.id, role="user", content="other client")
            # ...so appending to it in the host's snapshot is a serialization failure.
            with pytest.raises(ConflictError):
                await ledger.service.using(connection).add_message(
                    session.id, role="user", content="host"
                )
            assert appends == 1
        finally:
            await connection.rollback()
    items = await ledger.service.get_items(session.id)
    assert [item["content"] for item in items] == ["other client"]


# -- lock and statement timeouts ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize(
    "settings",
    [
        {"lock_timeout": "200ms"},
        {"statement_timeout": "200ms"},
    ],
)
async def test_pg_timeouts_surface_typed_and_leave_no_partial_batch(
    database_url: str, settings: dict[str, str]
) -> None:
    async with Ledger.from_url(database_url, connect_args={"server_settings": settings}) as ledger:
        svc = ledger.service
        session = await svc.create_session(user_id="u", agent_name="a")
        await svc.add_message(session.id, role="user", content="before")
        holder = await _admin(database_url)
        try:
            async with holder.transaction():
                await holder.execute(
                    "SELECT 1 FROM agent_sessions WHERE id = $1 FOR UPDATE", session.id
                )
                with pytest.raises(LedgerTimeoutError) as caught:
                    await svc.add_messages(session.id, _batch(50))
                assert caught.value.sqlstate in ("55P03", "57014")
                with pytest.raises(LedgerTimeoutError):
                    await svc.clear_session(session.id)
        finally:
            await holder.close()
        items = await svc.get_items(session.id)
        assert [item["content"] for item in items] == ["before"]
        assert _pool(ledger).checkedout() == 0
        # The ledger serves again once the lock is gone.
        await svc.add_messages(session.id, _batch(3))
        assert len(await svc.get_items(session.id)) == 4


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_sqlite_busy_timeout_surfaces_typed_and_leaves_no_partial_batch(
    database_url: str,
) -> None:
    from agentledger import LedgerSettings

    settings = LedgerSettings(database_url=database_url, sqlite_busy_timeout=0.2)
    async with Ledger.from_settings(settings) as ledger:
        svc = ledger.service
        session = await svc.create_session(user_id="u", agent_name="a")
        path = make_url(database_url).database
        assert path is not None
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(LedgerTimeoutError):
                await svc.add_messages(session.id, _batch(50))
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        assert await svc.get_items(session.id) == []
        await svc.add_messages(session.id, _batch(2))
        assert len(await svc.get_items(session.id)) == 2


# -- cancellation ------------------------------------------------------------------------------


async def _settle(ledger: Ledger) -> None:
    """Let cancelled tasks finish returning their connections (no timing assumption: poll)."""
    for _ in range(200):
        if _pool(ledger).checkedout() == 0:
            return
        await asyncio.sleep(0.01)


@pytest.mark.slow
async def test_cancelled_appends_are_all_or_nothing_and_leak_no_connection(
    ledger: Ledger,
) -> None:
    svc = ledger.service
    size = 2_000
    session = await svc.create_session(user_id="u", agent_name="a")
    expected = 0
    for timeout in (0.0, 0.001, 0.003, 0.01, 0.03, 0.1):
        try:
            await asyncio.wait_for(svc.add_messages(session.id, _batch(size)), timeout)
            expected += size
        except TimeoutError:
            pass
        await _settle(ledger)
        assert _pool(ledger).checkedout() == 0
        stored = len(await svc.get_items(session.id))
        assert stored % size == 0  # whole batches only
        expected = stored
    for delay in (0.0, 0.002, 0.02):
        # The service's methods are typed as returning an Awaitable; they are coroutines, which
        # ensure_future schedules exactly as create_task does.
        task = asyncio.ensure_future(svc.add_messages(session.id, _batch(size, "t")))
        await asyncio.sleep(delay)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await _settle(ledger)
        assert _pool(ledger).checkedout() == 0
        stored = len(await svc.get_items(session.id))
        assert stored - expected in (0, size)
        expected = stored
    record = await svc.get_session(session.id)
    assert record is not None
    assert [m.seq for m in record.messages] == list(range(1, expected + 1))
    # The service still works on the same ledger.
    await svc.add_message(session.id, role="user", content="after")
    assert len(await svc.get_items(session.id)) == expected + 1
    assert _pool(ledger).checkedout() == 0


# -- a PostgreSQL restart during a load run ----------------------------------------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(*command: str) -> None:
    subprocess.run(
        ["runuser", "-u", "postgres", "--", *command],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def private_postgres() -> Iterator[tuple[str, Callable[[], None]]]:
    """A PostgreSQL server of this test's own on a spare port: ``(url, restart)``."""
    folder = Path(tempfile.mkdtemp(prefix="agentledger-restart-"))
    data = folder / "data"
    port = _free_port()
    shutil.chown(folder, "postgres", "postgres")
    ctl = str(PG_BIN / "pg_ctl")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    log = str(folder / "server.log")
    try:
        _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
        _as_postgres(ctl, "-D", str(data), "-o", options, "-l", log, "-w", "start")

        def restart() -> None:
            _as_postgres(
                ctl, "-D", str(data), "-o", options, "-l", log, "-w", "-m", "fast", "restart"
            )

        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", restart
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", ctl, "-D", str(data), "-m", "immediate", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
            check=False,
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
async def test_a_server_restart_mid_load_loses_no_acknowledged_write(
    private_postgres: tuple[str, Callable[[], None]],
) -> None:
    url, restart = private_postgres
    writers, per_writer_after = 8, 5
    async with Ledger.from_url(url, pool_size=4, max_overflow=4) as ledger:
        await ledger.upgrade()
        svc = ledger.service
        sessions = [
            (await svc.create_session(user_id="u", agent_name="a")).id for _ in range(writers)
        ]
        acknowledged: dict[int, list[int]] = {index: [] for index in range(writers)}
        failures: list[LedgerError] = []
        restarted = asyncio.Event()
        warmed_up = asyncio.Event()

        async def writer(index: int) -> None:
            number = 0
            successes_after = 0
            for _attempt in range(2_000):
                if restarted.is_set() and successes_after >= per_writer_after:
                    return
                number += 1
                try:
                    await svc.add_message(sessions[index], role="user", content=f"w{number}")
                except LedgerError as error:
                    failures.append(error)
                    await asyncio.sleep(0.05)
                    continue
                acknowledged[index].append(number)
                if sum(map(len, acknowledged.values())) >= 40:
                    warmed_up.set()
                if restarted.is_set():
                    successes_after += 1
            raise AssertionError(f"writer {index} never got going again after the restart")

        async def restarter() -> None:
            await warmed_up.wait()
            await asyncio.to_thread(restart)
            restarted.set()

        await asyncio.gather(restarter(), *(writer(index) for index in range(writers)))

        # Failed writes were typed and retryable: the connection was lost, nothing else.
        assert all(isinstance(error, ConnectionLostError) for error in failures), {
            type(error).__name__ for error in failures
        }
        assert all(error.retryable for error in failures)
        # Every acknowledged write is there, in order; an unacknowledged one may be there too
        # (its commit may have happened just before the connection went), but only once.
        for index, sid in enumerate(sessions):
            contents = [item["content"] for item in await svc.get_items(sid)]
            stored = [int(content[1:]) for content in contents]
            assert stored == sorted(set(stored))
            assert set(acknowledged[index]) <= set(stored)
        # The same Ledger (no new one) serves reads and writes again.
        record = await svc.get_session(sessions[0])
        assert record is not None
        assert [m.seq for m in record.messages] == list(range(1, len(record.messages) + 1))


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_pop_waiting_on_a_concurrent_append_removes_the_newest_item(
    ledger: Ledger, database_url: str
) -> None:
    """Found by `make soak`: a pop that waits for an append's row lock must see that append."""
    svc = ledger.service
    session = await svc.create_session(user_id="u", agent_name="a")
    await svc.add_message(session.id, role="user", content="first")
    admin = await _admin(database_url)
    try:
        async with ledger.engine.connect() as host:
            await host.begin()
            await svc.using(host).add_message(session.id, role="user", content="second")
            pop = asyncio.ensure_future(svc.pop_item(session.id))
            for _ in range(500):  # until the pop waits for the row lock (no timing assumption)
                waiting = await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
                if waiting:
                    break
                await asyncio.sleep(0.01)
            await host.commit()
            popped = await pop
    finally:
        await admin.close()
    assert popped is not None
    assert popped["content"] == "second"
    await svc.add_message(session.id, role="user", content="third")
    assert [item["content"] for item in await svc.get_items(session.id)] == ["first", "third"]
