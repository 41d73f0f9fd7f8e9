"""OpenTelemetry spans and metrics for agentledger's operations (the extra ``agentledger[otel]``).

Off unless asked for (``Ledger.from_url(url, telemetry=True)``, ``AGENTLEDGER_TELEMETRY=true``
or ``telemetry=Telemetry(...)`` with providers of your own). Off, the only cost is one attribute
test per operation in :func:`agentledger.services.base.operation`, and ``opentelemetry`` is
never imported: this module imports it when a :class:`Telemetry` is made, and says which extra
to install when it is missing.

On, every public operation of the service is one span named ``agentledger.<operation>``
(``agentledger.add_items``, ``agentledger.get_items``, ...) carrying the session id, the number
of items written or returned and the database's ``db.system.name`` and ``db.namespace``
(semantic conventions v1.33 and later, where the database conventions are stable). A failed
operation has status ERROR and ``error.type`` (the exception's class), never its message.
Appends also record the histogram ``agentledger.append.duration`` (seconds) and the counter
``agentledger.items.appended``. Spans never hold message content, metadata, or user ids (a
user id is often personal data; a host that wants it on its traces adds it to its own span).

Statements that skip SQLAlchemy's execution layer (the asyncpg fast path) are invisible to
OpenTelemetry's SQLAlchemy instrumentation; with telemetry on, the fast path keeps running on
such an instrumented engine and :meth:`DatabaseTelemetry.statement` describes each of its
statements with the attributes that instrumentation gives its spans (the SQL text, never the
parameters), so the host's traces still show every statement. A span costs far more than the
attributes (on a slow machine, a sixth of a tail read), and both hot paths run one statement
per operation, so a statement inside an operation is only timed while it runs: when the
operation ends, a single successful statement's attributes go on the operation's span, and
otherwise (several statements, or one that failed) each becomes a CLIENT span of its own,
parented to the operation and carrying the times it really started and ended.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from sqlalchemy.engine import URL

from agentledger._version import __version__
from agentledger.domain.records import AppendResult, Items, MessageRecord
from agentledger.domain.validation import parse_session_id
from agentledger.errors import ConfigurationError, InvalidInputError

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

T = TypeVar("T")

#: The instrumentation scope of agentledger's tracer and meter.
SCOPE = "agentledger"
#: The semantic conventions the attributes follow.
SCHEMA_URL = "https://opentelemetry.io/schemas/1.33.0"

#: Operations whose duration and item count feed the append metrics.
APPENDS = frozenset({"add_items", "add_messages", "add_message"})

_MISSING = (
    "agentledger's telemetry needs the OpenTelemetry API: install the extra "
    "(pip install 'agentledger[otel]'), or leave telemetry off"
)

#: ``db.system.name`` of SQLAlchemy's dialect names.
_SYSTEMS = {"postgresql": "postgresql", "sqlite": "sqlite"}
#: Statement verbs that are a ``db.operation.name`` of their own.
_VERBS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
#: Statement descriptions kept per database (the fast path's statements number a few dozen).
_MAX_DESCRIBED = 256


class _Ran:
    """One fast-path statement run inside an operation, as the context manager around it:
    timed now, described when the operation ends (a class, not a generator: it is on the hot
    path)."""

    __slots__ = ("_running", "database", "ended", "error", "sql", "started")

    def __init__(self, database: DatabaseTelemetry, sql: str, running: _Running) -> None:
        self.database, self.sql, self._running = database, sql, running
        self.started = self.ended = 0
        self.error: BaseException | None = None

    def __enter__(self) -> None:
        self.started = time.time_ns()
        self._running.statements.append(self)

    def __exit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        self.ended = time.time_ns()
        self.error = error


@dataclass(slots=True)
class _Running:
    """The statements of the operation running in this context (until it ends)."""

    statements: list[_Ran] = field(default_factory=list)
    open: bool = True
    #: Where its statements ran, when routed (see :meth:`DatabaseTelemetry.serving`).
    database: DatabaseTelemetry | None = None


#: The innermost operation of this context that collects its statements.
_RUNNING: ContextVar[_Running | None] = ContextVar("agentledger_operation", default=None)


class Telemetry:
    """agentledger's tracer and instruments, from the global providers unless given others
    (the SDK's ``TracerProvider``/``MeterProvider``, e.g. with an in-memory exporter in tests).

    Raises :class:`~agentledger.errors.ConfigurationError` when ``opentelemetry-api`` is not
    installed."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        try:
            from opentelemetry import context, metrics, trace
            from opentelemetry.trace import SpanKind, Status, StatusCode
        except ImportError as error:
            raise ConfigurationError(_MISSING) from error
        self._trace, self._context = trace, context
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider, schema_url=SCHEMA_URL)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider, schema_url=SCHEMA_URL)
        self.append_duration = meter.create_histogram(
            "agentledger.append.duration",
            unit="s",
            description="Duration of appends (add_items, add_messages, add_message).",
        )
        self.items_appended = meter.create_counter(
            "agentledger.items.appended",
            unit="{item}",
            description="Items (messages) newly stored by appends.",
        )
        self._internal, self._client = SpanKind.INTERNAL, SpanKind.CLIENT
        self._status, self._error = Status, StatusCode.ERROR

    def on(self, url: URL) -> DatabaseTelemetry:
        """This telemetry for the database at ``url`` (its attributes on every span)."""
        return DatabaseTelemetry(self, url)

    @contextmanager
    def _client_span(self, database: DatabaseTelemetry, sql: str) -> Iterator[None]:
        """A CLIENT span around a statement that runs outside any operation."""
        name, attributes, _own = database.described(sql)
        with self.tracer.start_as_current_span(
            name,
            kind=self._client,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except BaseException as error:
                self._failed(span, error)
                raise

    def _describe(
        self, operation: Any, statements: list[_Ran], database: DatabaseTelemetry
    ) -> None:
        """The statements an operation on ``database`` ran, on its span (``operation``, still
        open): a single successful one as its attributes, otherwise a CLIENT span each, timed
        as they ran."""
        if len(statements) == 1 and statements[0].error is None and statements[0].ended:
            ran = statements[0]
            described = ran.database.described(ran.sql)
            # The operation's span has its database's attributes already; a statement on
            # another database (a replica's read) gives all of its own.
            operation.set_attributes(
                described.own if ran.database is database else described.attributes
            )
            return
        parent = self._trace.set_span_in_context(operation)
        for ran in statements:
            name, attributes, _own = ran.database.described(ran.sql)
            span = self.tracer.start_span(
                name,
                context=parent,
                kind=self._client,
                attributes=attributes,
                start_time=ran.started,
                record_exception=False,
                set_status_on_exception=False,
            )
            if ran.error is not None:
                self._failed(span, ran.error)
            span.end(end_time=ran.ended or time.time_ns())

    def _failed(self, span: Any, error: BaseException) -> str:
        """Mark ``span`` failed by ``error`` (its type, never its message); the type's name."""
        kind = _error_type(error)
        span.set_attribute("error.type", kind)
        span.set_status(self._status(self._error, type(error).__name__))
        return kind


class DatabaseTelemetry:
    """:class:`Telemetry` bound to one database: the operation spans of a service, and the
    statement spans of a fast path (:class:`agentledger.db.fastpath.StatementSpans`)."""

    def __init__(self, telemetry: Telemetry, url: URL) -> None:
        self.telemetry = telemetry
        system = _SYSTEMS.get(url.get_backend_name(), url.get_backend_name())
        self.attributes: dict[str, str] = {"db.system.name": system}
        if system != "sqlite" and url.database:
            # A SQLite "database" is a file path: not a name worth exporting.
            self.attributes["db.namespace"] = url.database
        self.server: dict[str, str | int] = {}
        if url.host:
            self.server["server.address"] = url.host
            if url.port is not None:
                self.server["server.port"] = url.port
        self._metric_attributes = {"db.system.name": system}
        self._described: dict[str, _Described] = {}

    async def operation(self, name: str, call: Callable[[], Awaitable[T]], session_id: object) -> T:
        """Run ``call`` (the operation ``name``) in its span; appends also feed the metrics."""
        telemetry = self.telemetry
        attributes: dict[str, str | int] = dict(self.attributes)
        if isinstance(session_id, uuid.UUID):
            attributes["agentledger.session_id"] = str(session_id)
        elif isinstance(session_id, str):
            # One spelling per session, and never what a caller passed that is not a UUID
            # (the operation refuses it; it may be anything, personal data included).
            with suppress(InvalidInputError):
                attributes["agentledger.session_id"] = str(parse_session_id(session_id))
        # start_span and attach by hand: what start_as_current_span does, minus its two
        # generator-based context managers (measurable on a hot path).
        span = telemetry.tracer.start_span(
            f"agentledger.{name}",
            kind=telemetry._internal,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        running = _Running()
        token = telemetry._context.attach(telemetry._trace.set_span_in_context(span))
        statements = _RUNNING.set(running)
        began = time.perf_counter()
        try:
            result = await call()
        except BaseException as error:
            kind = telemetry._failed(span, error)
            if name in APPENDS:
                telemetry.append_duration.record(
                    time.perf_counter() - began, self._metric(name, kind)
                )
            raise
        else:
            count = _count(result)
            if count is not None:
                span.set_attribute("agentledger.items", count)
            if isinstance(result, AppendResult) and not result.created:
                # The batch's idempotency key was known: nothing was stored this time.
                span.set_attribute("agentledger.replayed", True)
            if name in APPENDS:
                metric = self._metric(name)
                telemetry.append_duration.record(time.perf_counter() - began, metric)
                stored = _stored(result)
                if stored:
                    telemetry.items_appended.add(stored, metric)
            return result
        finally:
            _RUNNING.reset(statements)
            telemetry._context.detach(token)
            running.open = False
            served = running.database or self
            if served is not self:
                # A read the read replica served: its database, not the primary's.
                span.set_attributes({**served.attributes, **served.server})
            if running.statements:
                telemetry._describe(span, running.statements, served)
            span.end()

    def _metric(self, name: str, error: str | None = None) -> dict[str, str]:
        """The attributes of an append's measurements."""
        attributes = {**self._metric_attributes, "agentledger.operation": name}
        if error is not None:
            attributes["error.type"] = error
        return attributes

    def serving(self) -> None:
        """The operation running in this context runs its statements on this database (a
        read routed to the read replica, or back to the primary)."""
        running = _RUNNING.get()
        if running is not None and running.open:
            running.database = self

    def statement(self, sql: str) -> AbstractContextManager[None]:
        """Around one statement the fast path runs: timed for the operation running in this
        context (which describes it when it ends), or a CLIENT span now outside any."""
        running = _RUNNING.get()
        if running is None or not running.open:
            return self.telemetry._client_span(self, sql)
        return _Ran(self, sql, running)

    def described(self, sql: str) -> _Described:
        """The span name and attributes of statement ``sql``, as OpenTelemetry's SQLAlchemy
        instrumentation gives them (stable names; the SQL text, never its parameters)."""
        known = self._described.get(sql)
        if known is None:
            if len(self._described) >= _MAX_DESCRIBED:
                self._described.clear()
            verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
            own: dict[str, str | int] = {**self.server, "db.query.text": sql}
            if verb in _VERBS:
                own["db.operation.name"] = verb
            target = self.attributes.get("db.namespace") or self.attributes["db.system.name"]
            known = self._described[sql] = _Described(
                f"{verb} {target}" if verb in _VERBS else target, {**self.attributes, **own}, own
            )
        return known


class _Described(NamedTuple):
    """What a span of one statement says."""

    name: str
    attributes: dict[str, str | int]
    #: The attributes an operation's span on the same database lacks.
    own: dict[str, str | int]


def _error_type(error: BaseException) -> str:
    kind = type(error)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _count(result: object) -> int | None:
    """Items written (an append) or returned (a read) by an operation, where it has some."""
    if isinstance(result, AppendResult):
        return result.count
    if isinstance(result, MessageRecord):
        return 1
    if isinstance(result, (list, tuple, Items)):
        return len(result)
    return None


def _stored(result: object) -> int:
    """Items an append newly stored (an idempotent retry stores none)."""
    if isinstance(result, AppendResult):
        return result.count if result.created else 0
    return 1 if isinstance(result, MessageRecord) else 0


__all__ = ["APPENDS", "DatabaseTelemetry", "Telemetry"]
