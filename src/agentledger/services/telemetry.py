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
such an instrumented engine and each of its statements is a CLIENT span of its own from
:meth:`DatabaseTelemetry.statement`, with the attributes that instrumentation gives its spans
(the SQL text, never the parameters), so the host's traces still show every statement.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.engine import URL

from agentledger._version import __version__
from agentledger.domain.records import AppendResult, Items, MessageRecord
from agentledger.errors import ConfigurationError

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
            from opentelemetry import metrics, trace
            from opentelemetry.trace import SpanKind, Status, StatusCode
        except ImportError as error:
            raise ConfigurationError(_MISSING) from error
        self._trace = trace
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

    async def operation(self, name: str, call: Callable[[], Awaitable[T]], session_id: object) -> T:
        """Run ``call`` (the operation ``name``) in its span; appends also feed the metrics."""
        telemetry = self.telemetry
        attributes: dict[str, str | int] = dict(self.attributes)
        if isinstance(session_id, (uuid.UUID, str)):
            attributes["agentledger.session_id"] = str(session_id)
        with telemetry.tracer.start_as_current_span(
            f"agentledger.{name}",
            kind=telemetry._internal,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            began = time.perf_counter()
            try:
                result = await call()
            except BaseException as error:
                kind = _error_type(error)
                span.set_attribute("error.type", kind)
                span.set_status(telemetry._status(telemetry._error, type(error).__name__))
                if name in APPENDS:
                    telemetry.append_duration.record(
                        time.perf_counter() - began,
                        {
                            **self._metric_attributes,
                            "agentledger.operation": name,
                            "error.type": kind,
                        },
                    )
                raise
            count = _count(result)
            if count is not None:
                span.set_attribute("agentledger.items", count)
            if name in APPENDS:
                metric = {**self._metric_attributes, "agentledger.operation": name}
                telemetry.append_duration.record(time.perf_counter() - began, metric)
                stored = _stored(result)
                if stored:
                    telemetry.items_appended.add(stored, metric)
            return result

    @contextmanager
    def statement(self, sql: str) -> Iterator[None]:
        """A CLIENT span for one statement the fast path runs (its SQL text, not parameters)."""
        telemetry = self.telemetry
        verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        attributes: dict[str, str | int] = {**self.attributes, **self.server}
        attributes["db.query.text"] = sql
        if verb in _VERBS:
            attributes["db.operation.name"] = verb
        target = self.attributes.get("db.namespace") or self.attributes["db.system.name"]
        with telemetry.tracer.start_as_current_span(
            f"{verb} {target}" if verb in _VERBS else target,
            kind=telemetry._client,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except BaseException as error:
                span.set_attribute("error.type", _error_type(error))
                span.set_status(telemetry._status(telemetry._error, type(error).__name__))
                raise


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
