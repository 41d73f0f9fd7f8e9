"""The one place engines are made: every engine agentledger creates goes through
:func:`create_engine`, so they all get the same pool checks, JSON decoding, SQLite setup,
typed connection arguments and parameter hiding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from agentledger.db.urls import driver_arguments, normalize_url, safe_url
from agentledger.domain.encoding import load_stored_json
from agentledger.errors import ConfigurationError

logger = logging.getLogger("agentledger")


def create_engine(
    url: str | URL,
    engine_kwargs: Mapping[str, Any] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    sqlite_busy_timeout: float = 30.0,
    foreign: bool = False,
    pgbouncer: bool = False,
) -> AsyncEngine:
    """An engine for ``url``: ``defaults`` (the settings' pool options) overridden by the
    caller's ``engine_kwargs``. ``foreign``: a database agentledger only reads and does not
    own (an import source), whose SQLite file is left exactly as it is. ``pgbouncer``: the
    URL points at a transaction pooler (see :func:`transaction_pooler_arguments`)."""
    url = normalize_url(url)
    explicit = dict(engine_kwargs or {})
    kwargs = {**(defaults or {}), **explicit}
    if not _queue_pool(explicit.get("poolclass", QueuePool)):
        # NullPool, StaticPool, ...: the settings' queue sizes do not apply to them.
        for name in _QUEUE_POOL_ONLY:
            if name not in explicit:
                kwargs.pop(name, None)
    # One place decodes stored JSON, and a damaged row does not raise (see load_stored_json).
    kwargs.setdefault("json_deserializer", load_stored_json)
    # Parameters hold message content: never log them, whoever turns the engine logger up.
    kwargs.setdefault("hide_parameters", True)
    url, arguments = driver_arguments(url)
    if arguments:
        given = dict(kwargs.get("connect_args") or {})
        server_settings = {
            **arguments.pop("server_settings", {}),
            **given.get("server_settings", {}),
        }
        merged = {**arguments, **given}
        if server_settings:
            merged["server_settings"] = server_settings
        kwargs["connect_args"] = merged
    if pgbouncer:
        kwargs["connect_args"] = transaction_pooler_arguments(url, kwargs.get("connect_args"))
    # SQLAlchemy's pre-ping costs three round trips per checkout on asyncpg (BEGIN, ping,
    # ROLLBACK), more than the one statement of a hot path; the same guarantee comes free.
    # An explicit pool_pre_ping=... from the caller keeps SQLAlchemy's own.
    check_on_checkout = (
        url.get_backend_name() == "postgresql"
        and bool(kwargs.get("pool_pre_ping"))
        and "pool_pre_ping" not in explicit
    )
    if check_on_checkout:
        kwargs["pool_pre_ping"] = False
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "postgresql":
        keep_connections_on_their_loop(engine)
    if check_on_checkout:
        check_pooled_connections(engine)
    if url.get_backend_name() == "sqlite" and not foreign:
        configure_sqlite(engine, busy_timeout=sqlite_busy_timeout)
    logger.debug("agentledger engine created for %s", safe_url(url))
    return engine


#: Startup parameters PgBouncer accepts from a client (it tracks them per client and sets
#: them on whichever server connection serves it); any other one ends the connection.
POOLER_STARTUP_SETTINGS = frozenset(
    {"application_name", "client_encoding", "datestyle", "timezone", "standard_conforming_strings"}
)


def transaction_pooler_arguments(
    url: URL, connect_args: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``connect_args`` for a URL that points at a transaction pooler (PgBouncer with
    ``pool_mode = transaction``), where consecutive transactions of one client connection run
    on different server connections, so nothing may rely on a statement prepared earlier.

    * ``statement_cache_size=0`` (asyncpg): no named statements; asyncpg's statements are
      unnamed and, with its cache off, parsed again in the same message sequence as their
      execution, so a statement never runs on a server connection that did not just parse it.
      This covers the asyncpg fast path and SQLAlchemy's path alike: SQLAlchemy asks asyncpg
      to prepare without a name, which with the cache off is the unnamed statement.
    * ``prepared_statement_cache_size=0`` (SQLAlchemy): no prepared statement kept per
      client connection for reuse.

    Contradicting settings are refused rather than silently overridden: a non-zero cache
    size, a ``prepared_statement_name_func`` (named statements would pile up on the server
    connections, and could be executed on one that never saw them), and server settings
    other than those PgBouncer accepts at startup (it would close the connection)."""
    if url.get_backend_name() != "postgresql":
        raise ConfigurationError(
            "pgbouncer=True (AGENTLEDGER_PGBOUNCER) is for PostgreSQL URLs behind PgBouncer; "
            f"this URL is {url.get_backend_name()}: drop the setting"
        )
    arguments = dict(connect_args or {})
    for name in ("statement_cache_size", "prepared_statement_cache_size"):
        if arguments.get(name, 0) != 0:
            raise ConfigurationError(
                f"{name}={arguments[name]} contradicts pgbouncer=True: behind a transaction "
                "pooler a cached statement may run on a server connection that never prepared "
                f"it; remove {name} from the URL and connect_args"
            )
        arguments[name] = 0
    if "prepared_statement_name_func" in arguments:
        raise ConfigurationError(
            "prepared_statement_name_func contradicts pgbouncer=True: named statements pile up "
            "on PgBouncer's server connections; with pgbouncer=True agentledger uses unnamed "
            "statements only, so remove it from connect_args"
        )
    refused = sorted(
        name
        for name in arguments.get("server_settings") or {}
        if name.lower() not in POOLER_STARTUP_SETTINGS
    )
    if refused:
        raise ConfigurationError(
            f"PgBouncer refuses the server setting(s) {', '.join(refused)} at connection "
            "start (the URL's options=-c ... or connect_args server_settings); set them on "
            "the server instead (ALTER ROLE app_user SET statement_timeout = '5s') or remove "
            "them. Only " + ", ".join(sorted(POOLER_STARTUP_SETTINGS)) + " pass through PgBouncer"
        )
    return arguments


#: ``create_async_engine`` arguments only a queue pool takes (the settings give them defaults).
_QUEUE_POOL_ONLY = ("pool_size", "max_overflow", "pool_timeout", "pool_use_lifo")


def _queue_pool(poolclass: object) -> bool:
    return isinstance(poolclass, type) and issubclass(poolclass, QueuePool)


_LOOP = "agentledger_event_loop"


def keep_connections_on_their_loop(engine: AsyncEngine) -> None:
    """An asyncpg connection works only on the event loop that opened it.

    A pooled connection of a loop that is closed, or that is not running (``asyncio.run`` and
    ``Runner.run_sync`` use a loop per call, or the thread's default loop between calls), is
    closed and replaced, so sequential loops just work. One whose loop is running in another
    thread (threads sharing a Ledger, each with a loop of its own) cannot be taken over
    safely: the checkout fails with a :class:`~agentledger.ConfigurationError` naming the fix,
    instead of asyncpg's "attached to a different loop"."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _connected(_dbapi_connection: Any, record: Any) -> None:
        loop = _running_loop()
        if loop is not None:
            record.info[_LOOP] = weakref.ref(loop)

    @event.listens_for(sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        opened_on = record.info.get(_LOOP)
        loop = None if opened_on is None else opened_on()
        if loop is None or loop is _running_loop():
            return
        if loop.is_running():
            raise ConfigurationError(
                "this Ledger's pooled PostgreSQL connections belong to the event loop that "
                "opened them, and another event loop (another thread) is using the Ledger: give "
                "each event loop a Ledger of its own, or create it with "
                "Ledger.from_url(url, poolclass=sqlalchemy.pool.NullPool), which opens a "
                "connection per use"
            )
        _drop_orphaned(getattr(dbapi_connection, "driver_connection", None), loop)
        raise DisconnectionError("this pooled connection's event loop is not running")


def _drop_orphaned(connection: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Close an asyncpg connection whose event loop is idle or gone, without that loop, and
    mark it aborted, so the pool's terminate does not try (and fail loudly) to say goodbye on
    it. An idle loop's transport is aborted on it (asyncpg's ``terminate()``; the socket
    closes when that loop runs again); a closed loop's socket is closed here."""
    if connection is None:
        return
    if not loop.is_closed():
        connection.terminate()
        return
    transport = getattr(connection, "_transport", None)
    sock = getattr(transport, "_sock", None)
    if transport is not None and sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
        transport._sock = None  # closed here: nothing left for the transport to warn about
    if hasattr(connection, "_aborted"):
        connection._aborted = True


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


#: A pooled connection idle for longer than this (seconds) is pinged before it is handed out.
PING_AFTER_IDLE = 30.0
_IDLE_SINCE = "agentledger_idle_since"


def check_pooled_connections(
    engine: AsyncEngine, *, ping_after_idle: float = PING_AFTER_IDLE
) -> None:
    """``pool_pre_ping`` without a round trip on the hot path (what ``Ledger.from_url`` uses).

    A connection the server closed (restart, ``pg_terminate_backend``, idle timeout) is seen as
    closed by the driver as soon as the event loop reads the end of the stream, so checking
    that costs nothing; such a connection is replaced, never handed out. Only a connection idle
    for longer than ``ping_after_idle`` seconds, which a silent network drop could have killed
    without the driver noticing, is pinged first. A busy agent loop therefore pays one round
    trip per statement, instead of four with SQLAlchemy's pre-ping on asyncpg.
    """
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        driver_connection = getattr(dbapi_connection, "driver_connection", None)
        is_closed = getattr(driver_connection, "is_closed", None)
        if is_closed is not None and is_closed():
            raise DisconnectionError("the server closed this pooled connection")
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since <= ping_after_idle:
            return  # new, or in use moments ago
        try:
            sync_engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError(f"a pooled connection failed its ping: {error}") from error


class _WithoutStatementArguments(logging.Filter):
    """aiosqlite logs every call it runs at DEBUG, with the SQL's arguments: message contents
    and metadata would land in an application's debug logs. Those records are dropped; its
    other records (warnings, errors) pass."""

    _CALLS = ("executing %s", "operation %s completed", "returning exception %s")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self._CALLS


_AIOSQLITE_FILTER = _WithoutStatementArguments()


def configure_sqlite(engine: AsyncEngine, *, busy_timeout: float = 30.0) -> None:
    """Foreign keys on, WAL, a busy timeout, and transactions SQLAlchemy really controls.

    Applied to the engines agentledger creates; a host passing its own SQLite engine to
    ``Ledger(engine)`` calls it once, right after ``create_async_engine``. pysqlite's own
    transaction handling defers BEGIN and breaks SAVEPOINTs; the documented SQLAlchemy recipe
    turns it off and emits BEGIN from the ``begin`` event instead.
    """
    sync_engine = engine.sync_engine
    in_memory = engine.url.database in (None, "", ":memory:")
    aiosqlite_logger = logging.getLogger("aiosqlite")
    if _AIOSQLITE_FILTER not in aiosqlite_logger.filters:
        aiosqlite_logger.addFilter(_AIOSQLITE_FILTER)

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(_OUTSIDE_TRANSACTION):
            return  # a PRAGMA that only works outside a transaction (migration_connection)
        connection.exec_driver_sql("BEGIN")


_OUTSIDE_TRANSACTION = "agentledger_outside_transaction"


@asynccontextmanager
async def migration_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection of ``engine`` for schema changes, in no transaction yet (the caller begins
    one). On SQLite its foreign keys are off meanwhile: Alembic's batch mode rebuilds a table
    by copying it, dropping the original and renaming the copy, and dropping
    ``agent_sessions`` with foreign keys on would delete every message (and a host's rows)
    through ``ON DELETE CASCADE``. ``PRAGMA foreign_keys`` only takes effect outside a
    transaction; the connection goes back to the pool with it on again."""
    async with engine.connect() as connection:
        if engine.dialect.name != "sqlite":
            yield connection
            return
        await _pragma(connection, "PRAGMA foreign_keys=OFF")
        try:
            yield connection
        finally:
            if connection.in_transaction():
                await connection.rollback()
            await _pragma(connection, "PRAGMA foreign_keys=ON")


async def _pragma(connection: AsyncConnection, statement: str) -> None:
    outside = await connection.execution_options(**{_OUTSIDE_TRANSACTION: True})
    await outside.exec_driver_sql(statement)
    await outside.commit()
