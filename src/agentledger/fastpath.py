"""The agent loop's statements, sent straight through asyncpg on a connection of the engine's pool.

An agent turn costs two statements (read the tail, append the turn), each one round trip. On
asyncpg, the cost around that round trip was mostly SQLAlchemy's per-statement machinery: a
session and a connection object, switching the pooled connection to autocommit and back,
cursor adaptation and result objects, about 100-150 µs of CPU per statement against a ~300 µs
round trip (measured with ``python -m bench.profile``; see docs/performance.md). For those
few statements :class:`DriverStatements` keeps everything SQLAlchemy decides (the SQL text is
SQLAlchemy's own compilation of the repository's statement, bind values go through the same
type processors, the connection comes from and returns to the engine's pool with its events and
its reset) and only leaves out the execution layer: the statement runs through asyncpg on the
checked-out connection, outside any transaction, so it commits by itself exactly like the
autocommit unit of work it replaces.

It steps aside, and every statement goes through SQLAlchemy as before, while anything watches
or rewrites statements on the engine: ``echo`` / INFO logging of ``sqlalchemy.engine``,
``before_execute``/``after_execute``/``before_cursor_execute``/``after_cursor_execute``/
``handle_error`` listeners (tracing, statement counters) or a ``schema_translate_map``. It is
used only for single-statement units of work (``autocommit=True``) that own their connection,
never inside a transaction or a host's session.

Errors are translated here (the service only sees :class:`~agentledger.errors.LedgerError`);
a connection that failed other than by a plain SQL error, or whose statement was cancelled, is
invalidated rather than put back into the pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import greenlet_spawn

from .errors import translate_db_error

T = TypeVar("T")

#: Errors of the driver (or the network) that become LedgerErrors.
_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    asyncio.TimeoutError,
)

#: Engine events whose listeners must see every statement.
_STATEMENT_EVENTS = (
    "before_execute",
    "after_execute",
    "before_cursor_execute",
    "after_cursor_execute",
)

_Processor = Callable[[Any], Any] | None


class DriverStatements:
    """Runs compiled hot-path statements through asyncpg on connections of ``engine``'s pool."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sync_engine = engine.sync_engine
        self._dialect = engine.dialect
        self._compiled: dict[
            ClauseElement, tuple[str, tuple[str, ...], tuple[_Processor, ...]]
        ] = {}

    @classmethod
    def for_engine(cls, engine: AsyncEngine) -> DriverStatements | None:
        """A runner for ``engine`` when it drives PostgreSQL through asyncpg, else ``None``."""
        if engine.dialect.name == "postgresql" and engine.dialect.driver == "asyncpg":
            return cls(engine)
        return None

    @property
    def active(self) -> bool:
        """False while something observes or rewrites statements (then SQLAlchemy runs them)."""
        engine = self._sync_engine
        if engine.logger.isEnabledFor(logging.INFO):
            return False
        dispatch = engine.dispatch
        if any(getattr(dispatch, name) for name in _STATEMENT_EVENTS):
            return False
        if engine.dialect.dispatch.handle_error:  # listened to on the engine, kept by its dialect
            return False
        return "schema_translate_map" not in engine.get_execution_options()

    def sql(self, statement: ClauseElement) -> str:
        """The SQL text sent for ``statement`` (SQLAlchemy's compilation, ``$n`` parameters)."""
        return self._compile(statement)[0]

    def parameter_names(self, statement: ClauseElement) -> tuple[str, ...]:
        """The bind names of ``statement`` in ``$1, $2, ...`` order."""
        return self._compile(statement)[1]

    def _compile(
        self, statement: ClauseElement
    ) -> tuple[str, tuple[str, ...], tuple[_Processor, ...]]:
        compiled = self._compiled.get(statement)
        if compiled is None:
            result = statement.compile(dialect=self._dialect)
            assert isinstance(result, SQLCompiler)
            names = tuple(result.positiontup or ())
            processors = tuple(
                result.binds[name].type.dialect_impl(self._dialect).bind_processor(self._dialect)
                for name in names
            )
            compiled = (result.string, names, processors)
            self._compiled[statement] = compiled
        return compiled

    def _arguments(
        self, statement: ClauseElement, params: Mapping[str, Any]
    ) -> tuple[str, list[Any]]:
        sql, names, processors = self._compile(statement)
        arguments = [
            params[name] if process is None else process(params[name])
            for name, process in zip(names, processors, strict=True)
        ]
        return sql, arguments

    async def fetch(self, statement: ClauseElement, params: Mapping[str, Any]) -> Sequence[Any]:
        """All rows of ``statement`` (asyncpg records; ``json`` columns already decoded)."""
        sql, arguments = self._arguments(statement, params)
        rows: Sequence[Any] = await self._run(lambda driver: driver.fetch(sql, *arguments))
        return rows

    async def fetchval(self, statement: ClauseElement, params: Mapping[str, Any]) -> Any:
        """The first column of the first row of ``statement`` (``None`` without rows)."""
        sql, arguments = self._arguments(statement, params)
        return await self._run(lambda driver: driver.fetchval(sql, *arguments))

    async def _run(self, operation: Callable[[Any], Awaitable[T]]) -> T:
        try:
            return await self._run_once(operation)
        except _NotSent:
            # The pooled connection turned out dead before the statement left the client (the
            # server ended it moments ago and the driver had not noticed): nothing ran, so one
            # more try on a fresh connection is safe, and the caller never sees the dead one.
            pass
        try:
            return await self._run_once(operation)
        except _NotSent as retry:
            raise translate_db_error(retry.error) from retry.error

    async def _run_once(self, operation: Callable[[Any], Awaitable[T]]) -> T:
        try:
            connection = await self._engine.raw_connection()
        except SQLAlchemyError:
            raise
        except Exception as error:
            raise translate_db_error(error) from error
        try:
            driver: Any = connection.driver_connection
            try:
                return await operation(driver)
            except BaseException as error:
                # A plain SQL error leaves the connection usable (the statement was its own
                # transaction); anything else (lost connection, cancellation mid-statement)
                # may leave it in an unknown state, so it is not reused.
                if (
                    not isinstance(error, asyncpg.PostgresError)
                    or driver.is_closed()
                    or _ends_connection(error)
                ):
                    await greenlet_spawn(
                        connection.invalidate, error if isinstance(error, Exception) else None
                    )
                if _not_sent(error):
                    raise _NotSent(error) from error
                if isinstance(error, _DRIVER_ERRORS):
                    raise translate_db_error(error) from error
                raise
        finally:
            await greenlet_spawn(connection.close)


class _NotSent(Exception):
    """The statement failed before it was sent: the connection was already unusable."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _not_sent(error: BaseException) -> bool:
    """True for the driver's refusals to *start* an operation on a dead connection.

    asyncpg checks that the connection is open (``InterfaceError: connection is closed``) and
    that its protocol is idle (``InternalClientError: cannot switch to state ...``, seen when
    the server's termination notice arrived but the socket close was not yet processed)
    before it writes anything, so the server never received the statement.
    """
    message = str(error)
    if isinstance(error, asyncpg.InternalClientError):
        return message.startswith("cannot switch to state")
    if isinstance(error, asyncpg.InterfaceError):
        return message == "connection is closed"
    return False


def _ends_connection(error: asyncpg.PostgresError) -> bool:
    """A server error that ends the session (FATAL, e.g. 57P01 at a shutdown): the driver
    may not have seen the socket close yet, but the connection must not be reused."""
    code = getattr(error, "sqlstate", None) or ""
    severity = getattr(error, "severity", None)
    return severity in ("FATAL", "PANIC") or code.startswith(("08", "57P"))
