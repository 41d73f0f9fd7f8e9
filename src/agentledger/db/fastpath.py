"""How a unit of work runs its statements: through SQLAlchemy, or straight through asyncpg.

An agent turn costs two statements (read the tail, append the turn), each one round trip. On
asyncpg, the cost around that round trip was mostly SQLAlchemy's per-statement machinery: a
session and a connection object, switching the pooled connection to autocommit and back, cursor
adaptation and result objects, about 100-150 µs of CPU per statement against a ~300 µs round
trip (measured with ``python -m bench.profile``; see docs/performance.md).
:class:`DriverStatements` keeps everything SQLAlchemy decides (the SQL text is SQLAlchemy's own
compilation of the statement, bind values go through the same type processors and results
through the same result processors, the connection comes from and returns to the engine's pool
with its events and its reset) and only leaves out the execution layer: the statement runs
through asyncpg on the checked-out connection, outside any transaction, so it commits by
itself exactly like the autocommit unit of work it replaces.

**One decision point.** :meth:`FastPath.statements` is the only place that decides: a unit of
work of single statements (``autocommit``) on an asyncpg engine asks it once, on entry, and
runs every statement of its hot paths through what it gets: :class:`DriverStatements`, or
:class:`SessionStatements` (SQLAlchemy) when the fast path must step aside. It steps aside
while anything watches or rewrites statements on the engine: INFO logging of
``sqlalchemy.engine`` (or ``echo``), ``before_execute``/``after_execute``/
``before_cursor_execute``/``after_cursor_execute``/``handle_error`` listeners (tracing,
statement counters), an ``engine_connect`` listener (it may add such listeners to each
connection), any listener on SQLAlchemy's ``Connection`` class, or a ``schema_translate_map``,
so an instrumented host sees every statement. It never does so silently: it logs at INFO which
instrument made it step aside (once, and again whenever that changes), and
:attr:`FastPath.stepped_aside_for` says so.

**OpenTelemetry's SQLAlchemy instrumentation** is the one observer the fast path can stand in
for: what that instrumentation makes of a statement is a CLIENT span with the SQL text and the
database's attributes, which agentledger's own telemetry makes just as well. So when the
Ledger's telemetry is on (``statement_spans``) and the only statement listeners on the engine
are that instrumentation's (without its SQL commenter, which rewrites statements), the fast
path keeps running and the telemetry describes each of its statements
(:class:`StatementSpans`: on the operation's span, or a span of its own, see
:mod:`agentledger.services.telemetry`); statements of transactions still go through SQLAlchemy
and the instrumentation. :attr:`FastPath.covered` says when that happens (logged once at INFO too).
Any other listener still makes the fast path step aside: agentledger cannot know what it wants.

Errors are translated here (the service only sees :class:`~agentledger.errors.LedgerError`); a
connection that failed other than by a plain SQL error, or whose statement was cancelled, is
invalidated rather than put back into the pool; a statement the driver refused to *start* on a
connection the server had just ended is retried once on a fresh connection (nothing was sent).
"""

from __future__ import annotations

import asyncio
import logging
from collections import namedtuple
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, cast

import asyncpg
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import await_only, greenlet_spawn

from agentledger.db.types import NulSafeJSON, NulSafeText, UTCDateTime
from agentledger.domain.encoding import ESCAPE, map_strings, unescape_nul
from agentledger.domain.time import as_utc
from agentledger.translation import translate_db_error

T = TypeVar("T")

logger = logging.getLogger("agentledger")


class Statements(Protocol):
    """Runs a statement of a unit of work: rows with attribute access, or one value."""

    async def rows(
        self,
        statement: Executable,
        params: Mapping[str, Any],
        *,
        into: Callable[..., Any] | None = None,
    ) -> Sequence[Any]: ...

    async def scalar(self, statement: Executable, params: Mapping[str, Any]) -> Any: ...


class SessionStatements:
    """Statements through SQLAlchemy, on the unit of work's ``AsyncSession`` (made on first
    use by ``db``)."""

    def __init__(self, db: Callable[[], AsyncSession]) -> None:
        self._db = db

    async def rows(
        self,
        statement: Executable,
        params: Mapping[str, Any],
        *,
        into: Callable[..., Any] | None = None,
    ) -> Sequence[Any]:
        result = await self._db().execute(statement, params)
        return list(result) if into is None else [into(*row) for row in result]

    async def scalar(self, statement: Executable, params: Mapping[str, Any]) -> Any:
        return (await self._db().execute(statement, params)).scalar_one_or_none()


class StatementSpans(Protocol):
    """Telemetry that covers statements no SQLAlchemy listener sees (see the module's text)."""

    def statement(self, sql: str) -> AbstractContextManager[None]:
        """Around one statement: ``sql`` is its text (never its parameters); an error leaving
        the block is the statement's."""
        ...

    def serving(self) -> None:
        """The current operation's statements run on this telemetry's database (a routed
        read)."""
        ...


#: The module of OpenTelemetry's SQLAlchemy instrumentation's listeners.
_OTEL_SQLALCHEMY = "opentelemetry.instrumentation.sqlalchemy.engine"


def _otel_listener(listener: Any) -> bool:
    """Whether ``listener`` is OpenTelemetry's SQLAlchemy instrumentation's."""
    return getattr(listener, "__module__", None) == _OTEL_SQLALCHEMY


def _otel_commenter(listener: Any) -> bool:
    """Whether ``listener`` is that instrumentation's with its SQL commenter on (it rewrites
    statements, which the fast path would not do)."""
    return _otel_listener(listener) and bool(
        getattr(getattr(listener, "__self__", None), "enable_commenter", False)
    )


#: Engine events whose listeners must see every statement.
_STATEMENT_EVENTS = (
    "before_execute",
    "after_execute",
    "before_cursor_execute",
    "after_cursor_execute",
)

#: Errors of the driver (or the network) that become LedgerErrors.
_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    asyncio.TimeoutError,
)


class FastPath:
    """The asyncpg fast path of one engine, and the decision whether it may run now."""

    def __init__(
        self, engine: AsyncEngine, *, statement_spans: StatementSpans | None = None
    ) -> None:
        """``statement_spans``: the Ledger's telemetry, which may stand in for OpenTelemetry's
        SQLAlchemy instrumentation (see the module's text)."""
        self.driver = DriverStatements(engine)
        #: The driver whose statements each run in a span (used while :attr:`covered`).
        self.spanned = None if statement_spans is None else self.driver.spanned(statement_spans)
        self._engine = engine.sync_engine
        self._reported: tuple[str | None, bool] = (None, False)
        #: The statement listeners last judged, and the judgement.
        self._judged: tuple[tuple[tuple[Any, ...], ...] | None, tuple[str | None, bool]] = (
            None,
            (None, False),
        )

    @classmethod
    def for_engine(
        cls, engine: AsyncEngine, *, statement_spans: StatementSpans | None = None
    ) -> FastPath | None:
        """The fast path of ``engine`` when it drives PostgreSQL through asyncpg, else ``None``."""
        if engine.dialect.name == "postgresql" and engine.dialect.driver == "asyncpg":
            return cls(engine, statement_spans=statement_spans)
        return None

    @property
    def stepped_aside_for(self) -> str | None:
        """What makes the fast path step aside now (``None``: it runs)."""
        return self._observers()[0]

    @property
    def covered(self) -> bool:
        """Whether the fast path runs on an engine OpenTelemetry's SQLAlchemy instrumentation
        watches, its statements described by agentledger's telemetry instead."""
        return self._observers() == (None, True)

    def _observers(self) -> tuple[str | None, bool]:
        """Why the fast path must step aside (or ``None``), and whether it runs covered."""
        engine = self._engine
        if engine.logger.isEnabledFor(logging.INFO):
            return "INFO logging of sqlalchemy.engine (or echo)", False
        if "schema_translate_map" in engine.get_execution_options():
            return "a schema_translate_map", False
        if Connection._has_events:
            # Set by a listener on the Connection class (every connection's statements), and
            # never reset: the fast path makes no Connection, so it would bypass it.
            return "a listener on SQLAlchemy's Connection class", False
        dispatch = engine.dispatch
        if dispatch.engine_connect:
            return "an engine_connect listener (it may watch each connection's statements)", False
        # handle_error is listened to on the engine and kept by its dialect.
        listeners = (  # in the order of _STATEMENT_EVENTS
            tuple(dispatch.before_execute),
            tuple(dispatch.after_execute),
            tuple(dispatch.before_cursor_execute),
            tuple(dispatch.after_cursor_execute),
            tuple(engine.dialect.dispatch.handle_error),
        )
        if listeners == self._judged[0]:
            return self._judged[1]
        judged = self._judge(listeners)
        self._judged = (listeners, judged)
        return judged

    def _judge(self, listeners: tuple[tuple[Any, ...], ...]) -> tuple[str | None, bool]:
        """:meth:`_observers` for these listeners (per event, as in :data:`_STATEMENT_EVENTS`
        then ``handle_error``), judged once per change of them: hosts instrument at startup."""
        listened = zip((*_STATEMENT_EVENTS, "handle_error"), listeners, strict=True)
        instrumented = False
        for name, found in listened:
            if not found:
                continue
            if any(_otel_commenter(listener) for listener in found):
                return (
                    "OpenTelemetry's SQL commenter (enable_commenter=True), which rewrites "
                    "statements"
                ), False
            if all(_otel_listener(listener) for listener in found):
                if self.spanned is None:
                    return (
                        f"a {name} listener on the engine (OpenTelemetry's SQLAlchemy "
                        "instrumentation: turn agentledger's telemetry on to keep the fast path "
                        "and cover its statements with spans)"
                    ), False
                instrumented = True
            else:
                return f"a {name} listener on the engine", False
        return None, instrumented

    def statements(self) -> DriverStatements | None:
        """The one decision: the driver's statements (each in a span while :attr:`covered`),
        or ``None`` when something observes or rewrites statements on the engine (reported
        once at INFO, then on every change)."""
        state = self._observers()
        if state != self._reported:
            self._reported = state
            reason, covered = state
            if reason is not None:
                logger.info(
                    "agentledger: the asyncpg fast path steps aside (%s): every statement goes "
                    "through SQLAlchemy so it is seen; see docs/performance.md",
                    reason,
                )
            elif covered:
                logger.info(
                    "agentledger: the asyncpg fast path keeps running under OpenTelemetry's "
                    "SQLAlchemy instrumentation; agentledger's telemetry describes its "
                    "statements (on the operation's span, or a span each); see "
                    "docs/observability.md"
                )
        reason, covered = state
        if reason is not None:
            return None
        return self.spanned if covered else self.driver


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    bind_processors: tuple[Callable[[Any], Any] | None, ...]
    defaults: Mapping[str, Any]
    row_type: Any
    result_processors: tuple[Callable[[Any], Any] | None, ...]
    #: ``(column index, processor)`` of the columns that have one (found once, at compile).
    processed: tuple[tuple[int, Callable[[Any], Any]], ...]


#: Compiled statements kept per engine (the reused ones number a few dozen).
_MAX_COMPILED = 256


class DriverStatements:
    """Runs compiled statements through asyncpg on connections of ``engine``'s pool."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sync_engine = engine.sync_engine
        self._dialect = engine.dialect
        self._compiled: dict[Executable, _Compiled] = {}
        self._spans: StatementSpans | None = None

    def spanned(self, spans: StatementSpans) -> DriverStatements:
        """The same driver (and compiled statements), each statement inside
        ``spans.statement(sql)``."""
        other = object.__new__(DriverStatements)
        other.__dict__.update(self.__dict__)
        other._spans = spans
        return other

    def sql(self, statement: Executable) -> str:
        """The SQL text sent for ``statement`` (SQLAlchemy's compilation, ``$n`` parameters)."""
        return self._compile(statement).sql

    def parameter_names(self, statement: Executable) -> tuple[str, ...]:
        """The bind names of ``statement`` in ``$1, $2, ...`` order."""
        return self._compile(statement).names

    def _compile(self, statement: Executable) -> _Compiled:
        compiled = self._compiled.get(statement)
        if compiled is None:
            if len(self._compiled) >= _MAX_COMPILED:
                # Statements are built once and reused (agentledger.db.statements); one built
                # per call must not grow this cache without bound.
                self._compiled.clear()
            compiled = self._compiled[statement] = self._build(statement)
        return compiled

    def _build(self, statement: Executable) -> _Compiled:
        dialect = self._dialect
        result = cast(ClauseElement, statement).compile(dialect=dialect)
        assert isinstance(result, SQLCompiler)
        names = tuple(result.positiontup or ())
        binds = tuple(
            result.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
        )
        defaults = {
            name: result.binds[name].value for name in names if result.binds[name].value is not None
        }
        # The same result processors SQLAlchemy applies (NulSafeText's unescape, UTC times,
        # ...); columns the driver already decodes (json on asyncpg) have none.
        columns = result._result_columns
        keys = [column.keyname for column in columns]
        processors = tuple(_result_processor(column.type, dialect) for column in columns)
        row_type = namedtuple("Row", keys, rename=True) if keys else None
        processed = tuple(
            (index, process) for index, process in enumerate(processors) if process is not None
        )
        return _Compiled(result.string, names, binds, defaults, row_type, processors, processed)

    def _arguments(self, compiled: _Compiled, params: Mapping[str, Any]) -> list[Any]:
        arguments = []
        for name, process in zip(compiled.names, compiled.bind_processors, strict=True):
            value = params[name] if name in params else compiled.defaults.get(name)
            arguments.append(value if process is None else process(value))
        return arguments

    async def rows(
        self,
        statement: Executable,
        params: Mapping[str, Any],
        *,
        into: Callable[..., Any] | None = None,
    ) -> Sequence[Any]:
        """All rows of ``statement``, result processors applied, with attribute access; or,
        with ``into``, ``into(*values)`` of each row (records made straight from the values,
        without a row in between)."""
        compiled = self._compile(statement)
        arguments = self._arguments(compiled, params)
        records: Sequence[Any] = await self._run(
            lambda driver: driver.fetch(compiled.sql, *arguments), compiled.sql
        )
        if compiled.row_type is None and into is None:
            return records
        processed = compiled.processed
        if into is not None:
            if not processed:
                return [into(*record) for record in records]
        else:
            make = compiled.row_type._make
            if not processed:
                return [make(record) for record in records]
            into = compiled.row_type
        rows = []
        for record in records:
            values = list(record)
            for index, process in processed:
                value = values[index]
                if value is not None:
                    values[index] = process(value)
            rows.append(into(*values))
        return rows

    async def scalar(self, statement: Executable, params: Mapping[str, Any]) -> Any:
        """The first column of the first row (``None`` without rows), processed."""
        compiled = self._compile(statement)
        arguments = self._arguments(compiled, params)
        value = await self._run(
            lambda driver: driver.fetchval(compiled.sql, *arguments), compiled.sql
        )
        process = compiled.result_processors[0] if compiled.result_processors else None
        return value if process is None or value is None else process(value)

    async def _run(self, operation: Callable[[Any], Awaitable[T]], sql: str) -> T:
        if self._spans is None:
            return await self._attempts(operation)
        with self._spans.statement(sql):
            return await self._attempts(operation)

    async def _attempts(self, operation: Callable[[Any], Awaitable[T]]) -> T:
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
        # Checkout, statement and checkin in one greenlet: the pool is SQLAlchemy's (sync code
        # that may await), and one switch into it costs less than one per step.
        return await greenlet_spawn(self._checked_out, operation)

    def _checked_out(self, operation: Callable[[Any], Awaitable[T]]) -> T:
        try:
            connection = self._sync_engine.raw_connection()
        except SQLAlchemyError:
            raise
        except Exception as error:
            raise translate_db_error(error) from error
        try:
            driver: Any = connection.driver_connection
            try:
                return await_only(operation(driver))
            except BaseException as error:
                # A plain SQL error leaves the connection usable (the statement was its own
                # transaction); anything else (lost connection, cancellation mid-statement)
                # may leave it in an unknown state, so it is not reused.
                if (
                    not isinstance(error, asyncpg.PostgresError)
                    or driver.is_closed()
                    or _ends_connection(error)
                ):
                    connection.invalidate(error if isinstance(error, Exception) else None)
                if _not_sent(error):
                    raise _NotSent(error) from error
                if isinstance(error, _DRIVER_ERRORS):
                    raise translate_db_error(error) from error
                raise
        finally:
            connection.close()


def _result_processor(column_type: Any, dialect: Any) -> Callable[[Any], Any] | None:
    """What SQLAlchemy would apply to a column's value, as one plain function where agentledger's
    own types allow (they only wrap values asyncpg already decoded): SQLAlchemy's generic
    TypeDecorator wrapper costs several calls per value, which a listing pays per row and
    column. Anything else gets SQLAlchemy's processor. Values are never ``None`` here."""
    generic = column_type.dialect_impl(dialect).result_processor(dialect, None)
    if generic is None or not isinstance(column_type, TypeDecorator):
        return cast(Callable[[Any], Any] | None, generic)
    impl = column_type.impl_instance.dialect_impl(dialect).result_processor(dialect, None)
    if impl is not None:
        return cast(Callable[[Any], Any], generic)
    if isinstance(column_type, UTCDateTime):
        return _utc
    if isinstance(column_type, NulSafeText):
        return unescape_nul
    if isinstance(column_type, NulSafeJSON):
        return _unescape_json
    return cast(Callable[[Any], Any], generic)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is UTC else as_utc(value)


def _unescape_json(value: Any) -> Any:
    """NulSafeJSON's unescape, rebuilding the value only when a string in it was escaped."""
    return map_strings(value, unescape_nul) if _holds_escape(value) else value


def _holds_escape(value: Any) -> bool:
    """Whether a key or string in decoded JSON holds the escape character. Decoded JSON has
    exact types only, so each container is one loop over its members; most values (metadata)
    are one flat object of scalars."""
    pending = [value]
    while pending:
        current = pending.pop()
        if type(current) is dict:
            for key, member in current.items():
                if ESCAPE in key:
                    return True
                kind = type(member)
                if kind is str:
                    if ESCAPE in member:
                        return True
                elif kind is dict or kind is list:
                    pending.append(member)
        elif type(current) is list:
            for member in current:
                kind = type(member)
                if kind is str:
                    if ESCAPE in member:
                        return True
                elif kind is dict or kind is list:
                    pending.append(member)
        elif type(current) is str and ESCAPE in current:
            return True
    return False


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
