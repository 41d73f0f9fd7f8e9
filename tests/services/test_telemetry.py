"""OpenTelemetry: operation spans and append metrics (SDK in-memory exporter and reader), the
fast path under OpenTelemetry's SQLAlchemy instrumentation, and agentledger without
opentelemetry installed.

Every test makes its own tracer and meter providers: nothing touches the global ones.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import event

from agentledger import Ledger, LedgerError, StaleSessionError
from agentledger.services.telemetry import Telemetry

SECRET = "my card number is 4111 1111 1111 1111"


@dataclass
class Otel:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider
    telemetry: Telemetry

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.finished() if span.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for found in scope.metrics
            if found.name == metric
            for point in found.data.data_points
        ]


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[metrics])
    telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield Otel(spans, metrics, tracer_provider, telemetry)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
async def traced(database_url: str, otel: Otel) -> AsyncIterator[Ledger]:
    async with Ledger.from_url(database_url, telemetry=otel.telemetry) as ledger:
        yield ledger


def attribute_values(spans: list[ReadableSpan]) -> list[str]:
    return [str(value) for span in spans for value in (span.attributes or {}).values()]


async def test_operations_are_spans_with_ids_counts_and_db_attributes_never_content(
    traced: Ledger, otel: Otel, backend: str
) -> None:
    service = traced.service
    session = await service.create_session("alice@example.com", "support")
    await service.add_items(
        session.id,
        [{"role": "user", "content": SECRET}, {"role": "assistant", "content": "noted"}],
        user_id="alice@example.com",
    )
    assert len(await service.get_items(session.id, 50, user_id="alice@example.com")) == 2

    (append,) = otel.named("agentledger.add_items")
    (read,) = otel.named("agentledger.get_items")
    assert otel.named("agentledger.create_session")
    for span, count in ((append, 2), (read, 2)):
        assert span.kind is SpanKind.INTERNAL
        assert span.status.status_code is StatusCode.UNSET
        attributes = dict(span.attributes or {})
        assert attributes["agentledger.session_id"] == str(session.id)
        assert attributes["agentledger.items"] == count
        assert attributes["db.system.name"] == backend
        assert ("db.namespace" in attributes) is (backend == "postgresql")
    # Never the content, never the user id (personal data), on any span.
    values = attribute_values(otel.finished())
    assert not any(SECRET in value or "alice@example.com" in value for value in values)
    assert all(not span.events for span in otel.finished())


async def test_a_failed_operation_is_an_error_span_with_its_type_not_its_message(
    traced: Ledger, otel: Otel
) -> None:
    service = traced.service
    session = await service.create_session("u1", "a")
    await service.add_items(session.id, [{"role": "user", "content": "one"}])
    with pytest.raises(StaleSessionError):
        await service.add_items(
            session.id, [{"role": "user", "content": SECRET}], expected_last_seq=0
        )
    failed = [
        span
        for span in otel.named("agentledger.add_items")
        if span.status.status_code is StatusCode.ERROR
    ]
    assert len(failed) == 1
    attributes = dict(failed[0].attributes or {})
    assert attributes["error.type"] == "agentledger.errors.StaleSessionError"
    assert failed[0].status.description == "StaleSessionError"
    assert "agentledger.items" not in attributes
    assert not failed[0].events  # no exception event: its message may quote input


async def test_appends_feed_the_duration_histogram_and_the_items_counter(
    traced: Ledger, otel: Otel, backend: str
) -> None:
    service = traced.service
    session = await service.create_session("u1", "a")
    await service.add_items(session.id, [{"role": "user", "content": "a"}] * 3)
    await service.add_messages(session.id, [{"role": "user", "content": "b"}], "batch-1")
    await service.add_messages(session.id, [{"role": "user", "content": "b"}], "batch-1")
    await service.add_message(session.id, "assistant", "c")
    await service.get_items(session.id)  # a read: not an append

    durations = otel.points("agentledger.append.duration")
    assert all(isinstance(point, HistogramDataPoint) for point in durations)
    by_operation = {point.attributes["agentledger.operation"]: point for point in durations}
    assert {name: point.count for name, point in by_operation.items()} == {
        "add_items": 1,
        "add_messages": 2,
        "add_message": 1,
    }
    assert all(point.attributes["db.system.name"] == backend for point in durations)
    assert all(0 < point.sum < 60 for point in durations)
    appended = otel.points("agentledger.items.appended")
    assert all(isinstance(point, NumberDataPoint) for point in appended)
    # The idempotent retry of batch-1 stored nothing new.
    assert sum(point.value for point in appended) == 3 + 1 + 1


async def test_the_session_id_is_recorded_in_one_spelling_and_only_when_valid(
    traced: Ledger, otel: Otel
) -> None:
    service = traced.service
    session = await service.create_session("u1", "a")
    canonical = str(session.id)
    for spelling in (canonical.upper(), f"{{{canonical}}}", session.id.hex, session.id.urn):
        await service.get_items(spelling)
    recorded = [
        dict(span.attributes or {}).get("agentledger.session_id")
        for span in otel.named("agentledger.get_items")
    ]
    assert recorded == [canonical] * 4
    otel.spans.clear()
    for wrong in ("alice@example.com", "x" * 100_000):
        with pytest.raises(LedgerError):
            await service.get_items(wrong)
    for span in otel.named("agentledger.get_items"):
        assert "agentledger.session_id" not in (span.attributes or {})
        assert span.status.status_code is StatusCode.ERROR
    assert not any("alice" in value for value in attribute_values(otel.finished()))


async def test_a_replayed_append_says_so_and_an_import_names_its_session(
    traced: Ledger, otel: Otel
) -> None:
    service = traced.service
    session = await service.create_session("u1", "a")
    items = [{"role": "user", "content": "hi"}]
    await service.add_items(session.id, items, idempotency_key="turn-1")
    await service.add_items(session.id, items, idempotency_key="turn-1")
    first, again = otel.named("agentledger.add_items")
    assert "agentledger.replayed" not in (first.attributes or {})
    assert dict(again.attributes or {})["agentledger.replayed"] is True
    transcript = await service.export_session(session.id)
    target = uuid.uuid4()
    await service.import_session(transcript, user_id="u2", session_id=target)
    (imported,) = otel.named("agentledger.import_session")
    assert dict(imported.attributes or {})["agentledger.session_id"] == str(target)


async def test_telemetry_covers_the_sdk_session_and_services_made_from_the_service(
    traced: Ledger, otel: Otel
) -> None:
    session = traced.agent_session("chat", user_id="u1")
    await session.add_items([{"role": "user", "content": "hi"}])
    await session.get_items()
    scoped = traced.service.for_user("u1")
    await scoped.get_items(session.ledger_session_id)
    async with traced.engine.connect() as connection:
        await traced.service.using(connection).get_items(session.ledger_session_id)
        await connection.commit()
    assert len(otel.named("agentledger.add_items")) == 1
    assert len(otel.named("agentledger.get_items")) == 2
    assert otel.named("agentledger.get_context_items")  # what the SDK session reads


# -- the fast path under OpenTelemetry's SQLAlchemy instrumentation -------------------------------


@pytest.fixture
def instrument(otel: Otel) -> Iterator[Any]:
    """Instrument an engine as a host does (SQLAlchemy 2.1 is outside the instrumentation's
    declared range, hence skip_dep_check)."""
    instrumentor = SQLAlchemyInstrumentor()

    def on(ledger: Ledger, **options: Any) -> None:
        instrumentor.instrument(
            engine=ledger.engine.sync_engine,
            tracer_provider=otel.tracer_provider,
            skip_dep_check=True,
            **options,
        )

    yield on
    instrumentor.uninstrument()


async def test_an_instrumented_host_keeps_the_fast_path_and_sees_every_statement(
    pg_database_url: str,
    otel: Otel,
    instrument: Any,
    counted_driver: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agentledger")
    async with Ledger.from_url(pg_database_url, telemetry=otel.telemetry) as ledger:
        instrument(ledger)
        service = ledger.service
        session = await service.create_session("u1", "a")  # a transaction: SQLAlchemy's
        otel.spans.clear()
        await service.add_items(session.id, [{"role": "user", "content": SECRET}])
        await service.get_items(session.id, 50)
        assert counted_driver == ["driver", "driver"]  # both hot paths took the fast path
        assert any("keeps running under OpenTelemetry" in r.getMessage() for r in caplog.records)

        # Each hot path runs one fast-path statement: its attributes (the SQL text; the
        # parameters, and so the content, never) are on the operation's span, which has no
        # statement span of its own (a span costs more than the statement's bookkeeping).
        for operation in ("agentledger.add_items", "agentledger.get_items"):
            (span,) = otel.named(operation)
            assert children_of(otel, span) == [], operation
            attributes = dict(span.attributes or {})
            assert attributes["db.system.name"] == "postgresql"
            assert attributes["db.namespace"] == ledger.engine.url.database
            assert attributes["server.address"] == ledger.engine.url.host
            assert attributes["server.port"] == ledger.engine.url.port
            assert "conversation_messages" in str(attributes["db.query.text"])
        get_items = dict(otel.named("agentledger.get_items")[0].attributes or {})
        assert get_items["db.operation.name"] == "SELECT"
        assert dict(otel.named("agentledger.get_items")[0].attributes or {})["agentledger.items"]
        assert not any(SECRET in value for value in attribute_values(otel.finished()))

        # A transaction still goes through SQLAlchemy, which the instrumentation traces.
        otel.spans.clear()
        counted_driver.clear()
        await service.fork_session(session.id)
        assert counted_driver == []
        traced_by_host = [
            span for span in otel.finished() if "db.statement" in (span.attributes or {})
        ]
        assert traced_by_host


def children_of(otel: Otel, parent: ReadableSpan) -> list[ReadableSpan]:
    return [
        span
        for span in otel.finished()
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


async def test_an_operation_of_several_statements_gets_a_client_span_for_each(
    pg_database_url: str, otel: Otel, instrument: Any, counted_driver: list[str]
) -> None:
    async with Ledger.from_url(pg_database_url, telemetry=otel.telemetry) as ledger:
        instrument(ledger)
        service = ledger.service
        session = await service.create_session("u1", "a")
        await service.add_items(session.id, [{"role": "user", "content": SECRET}])
        otel.spans.clear()
        counted_driver.clear()
        # What a model receives: the session, its newest checkpoint, then the messages after
        # it: three fast-path statements.
        context = await service.get_context(session.id)
        assert len(context.messages) == 1
        assert counted_driver == ["driver", "driver", "driver"]
        (operation,) = otel.named("agentledger.get_context")
        statements = children_of(otel, operation)
        assert [span.kind for span in statements] == [SpanKind.CLIENT] * 3
        assert "db.query.text" not in (operation.attributes or {})
        assert operation.start_time is not None
        assert operation.end_time is not None
        previous_end = operation.start_time
        for span in sorted(statements, key=lambda one: one.start_time or 0):
            # Timed as they ran: in order, inside the operation, each taking some time.
            assert span.start_time is not None
            assert span.end_time is not None
            assert previous_end <= span.start_time < span.end_time <= operation.end_time
            previous_end = span.end_time
            attributes = dict(span.attributes or {})
            assert attributes["db.operation.name"] == "SELECT"
            assert attributes["server.port"] == ledger.engine.url.port
            assert span.status.status_code is StatusCode.UNSET
        assert not any(SECRET in value for value in attribute_values(otel.finished()))


async def test_a_failed_statement_is_a_client_span_with_its_error(
    pg_database_url: str, otel: Otel, instrument: Any
) -> None:
    async with Ledger.from_url(pg_database_url, telemetry=otel.telemetry) as ledger:
        instrument(ledger)
        service = ledger.service
        session = await service.create_session("u1", "a")
        async with ledger.engine.begin() as connection:
            await connection.exec_driver_sql(
                "ALTER TABLE conversation_messages RENAME TO conversation_messages_gone"
            )
        otel.spans.clear()
        with pytest.raises(LedgerError):
            await service.get_items(session.id, 50)
        (operation,) = otel.named("agentledger.get_items")
        assert operation.status.status_code is StatusCode.ERROR
        (statement,) = children_of(otel, operation)
        assert statement.kind is SpanKind.CLIENT
        assert statement.status.status_code is StatusCode.ERROR
        attributes = dict(statement.attributes or {})
        assert attributes["error.type"] == "agentledger.errors.SchemaNotReadyError"
        assert "conversation_messages" in str(attributes["db.query.text"])


async def test_without_agentledger_telemetry_the_instrumentation_sees_statements_instead(
    pg_database_url: str, otel: Otel, instrument: Any, counted_driver: list[str]
) -> None:
    async with Ledger.from_url(pg_database_url) as ledger:
        instrument(ledger)
        session = ledger.agent_session("chat", user_id="u1")
        await session.add_items([{"role": "user", "content": "hi"}])
        await session.get_items()
        assert counted_driver == []  # stepped aside, and says how to keep it
        units_fast_path = ledger._units.fast_path
        assert units_fast_path is not None
        assert "turn agentledger's telemetry on" in (units_fast_path.stepped_aside_for or "")
        statements = [str((span.attributes or {}).get("db.statement")) for span in otel.finished()]
        assert any("INSERT INTO conversation_messages" in text for text in statements)
        assert not otel.named("agentledger.add_items")


async def test_other_listeners_and_the_sql_commenter_still_make_the_fast_path_step_aside(
    pg_database_url: str, otel: Otel, instrument: Any, counted_driver: list[str]
) -> None:
    seen: list[str] = []

    def counter(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    async with Ledger.from_url(pg_database_url, telemetry=otel.telemetry) as ledger:
        instrument(ledger)
        session = ledger.agent_session("chat", user_id="u1")
        event.listen(ledger.engine.sync_engine, "before_cursor_execute", counter)
        try:
            await session.add_items([{"role": "user", "content": "hi"}])
        finally:
            event.remove(ledger.engine.sync_engine, "before_cursor_execute", counter)
        assert counted_driver == []
        assert any("INSERT INTO conversation_messages" in text for text in seen)
    async with Ledger.from_url(pg_database_url, telemetry=otel.telemetry) as ledger:
        SQLAlchemyInstrumentor().uninstrument()
        instrument(ledger, enable_commenter=True)
        await ledger.agent_session("chat", user_id="u1").get_items()
        assert counted_driver == []
        fast_path = ledger._units.fast_path
        assert fast_path is not None
        assert "SQL commenter" in (fast_path.stepped_aside_for or "")
        assert not fast_path.covered


# -- without opentelemetry -----------------------------------------------------------------------

BLOCKER = """
import sys

class NoOpenTelemetry:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoOpenTelemetry())
"""


def run_python(script: str, **env: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_agentledger_works_without_opentelemetry_and_says_which_extra_turns_it_on(
    tmp_path: Any,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}"
    report = run_python(
        BLOCKER
        + f"""
import asyncio, json
from agentledger import ConfigurationError, Ledger

async def main():
    async with Ledger.from_url({url!r}) as ledger:
        await ledger.upgrade()
        # The service, not an SDK session: the Agents SDK itself loads opentelemetry (mcp).
        session = await ledger.service.create_session("u1", "a")
        await ledger.service.add_items(session.id, [{{"role": "user", "content": "hi"}}])
        items = await ledger.service.get_items(session.id)
    try:
        Ledger.from_url({url!r}, telemetry=True)
        refused = None
    except ConfigurationError as error:
        refused = str(error)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
    print(json.dumps({{"items": len(items), "refused": refused, "loaded": loaded}}))

asyncio.run(main())
"""
    )
    assert report["items"] == 1
    assert "agentledger[otel]" in report["refused"]
    assert report["loaded"] == []


def test_the_telemetry_setting_traces_on_the_global_providers(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'traced.db'}"
    report = run_python(
        """
import asyncio, json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from agentledger import Ledger, LedgerSettings

spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(provider)

async def main():
    async with Ledger.from_settings() as ledger:
        await ledger.upgrade()
        session = ledger.agent_session("chat", user_id="u1")
        await session.add_items([{"role": "user", "content": "x"}])
    async with Ledger.from_settings(LedgerSettings(telemetry=False)) as ledger:
        session = ledger.agent_session("chat", user_id="u1")
        await session.add_items([{"role": "user", "content": "y"}])
    print(json.dumps({"spans": [span.name for span in spans.get_finished_spans()]}))

asyncio.run(main())
""",
        AGENTLEDGER_DATABASE_URL=url,
        AGENTLEDGER_TELEMETRY="true",
    )
    assert report["spans"] == ["agentledger.add_items"]
