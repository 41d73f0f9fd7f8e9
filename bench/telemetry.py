"""The telemetry workload: turn append and tail-50 read p50 of agentledger's SDK session on
four ledgers over the same database, interleaved:

* ``plain``: no instrumentation at all;
* ``host-instrumented``: the host instruments the engine with OpenTelemetry's SQLAlchemy
  instrumentation, agentledger's telemetry off (the fast path steps aside: what hosts got
  before agentledger's telemetry);
* ``host+telemetry``: the same host instrumentation with agentledger's telemetry on (the fast
  path keeps running; its statements get agentledger's spans);
* ``telemetry``: agentledger's telemetry on, no host instrumentation.

Spans go through the OpenTelemetry SDK as a production host configures it (``TracerProvider``
with a ``BatchSpanProcessor``; the ``SimpleSpanProcessor`` exports on the caller's thread and
is meant for debugging) to an exporter that drops them, so the cost measured is making and
ending the spans, not shipping them; metrics are aggregated by the SDK's ``MeterProvider`` (an
in-memory reader).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from agentledger import Ledger
from agentledger.services.telemetry import Telemetry

from . import data
from .contenders import LedgerSdk


class Dropped(SpanExporter):
    """Receives every ended span and keeps none."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


async def telemetry_workload(
    url: str,
    admin: asyncpg.Connection,
    *,
    pool_size: int,
    turns: int,
    tail_size: int,
    tail_reps: int,
    warmup: int,
    interleaved: Callable[..., Awaitable[dict[str, list[float]]]],
    summary: Callable[[Sequence[float]], dict[str, float]],
) -> dict[str, Any]:
    exporter = Dropped()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)

    def ledger(traced: bool) -> Ledger:
        return Ledger.from_url(
            url, telemetry=telemetry if traced else False, pool_size=pool_size, max_overflow=0
        )

    ledgers = {
        "plain": ledger(False),
        "host-instrumented": ledger(False),
        "host+telemetry": ledger(True),
        "telemetry": ledger(True),
    }
    instrumentor = SQLAlchemyInstrumentor()
    instrumentor.instrument(
        engines=[
            ledgers[name].engine.sync_engine for name in ("host-instrumented", "host+telemetry")
        ],
        tracer_provider=tracer_provider,
        skip_dep_check=True,  # SQLAlchemy 2.1 is outside its declared range; it works
    )
    try:
        contenders = [LedgerSdk(one, name) for name, one in ledgers.items()]
        handles = {c.name: await c.new_session("otel-user") for c in contenders}

        async def append(c: LedgerSdk, rep: int) -> None:
            await c.append(handles[c.name], data.turn_items(rep))

        await interleaved(contenders, warmup, append, lambda c: c.name)
        appends = await interleaved(contenders, turns, append, lambda c: c.name)
        tails = {c.name: await c.fill(admin, "otel-reader", tail_size) for c in contenders}

        async def tail(c: LedgerSdk, rep: int) -> None:
            items = await c.tail(tails[c.name], 50)
            assert len(items) == min(50, tail_size), (c.name, len(items))

        await interleaved(contenders, warmup, tail, lambda c: c.name)
        reads = await interleaved(contenders, tail_reps, tail, lambda c: c.name)
        fast_paths = {
            name: (one._units.fast_path.stepped_aside_for or "runs")
            if one._units.fast_path is not None
            else "none"
            for name, one in ledgers.items()
        }
    finally:
        instrumentor.uninstrument()
        for one in ledgers.values():
            await one.dispose()
        tracer_provider.shutdown()
        meter_provider.shutdown()
    append_p50 = {name: summary(values) for name, values in appends.items()}
    tail_p50 = {name: summary(values) for name, values in reads.items()}
    base_append, base_tail = append_p50["plain"]["p50_ms"], tail_p50["plain"]["p50_ms"]
    return {
        "turn_append": append_p50,
        "tail50": tail_p50,
        "vs_plain_p50": {
            name: {
                "turn_append": round(append_p50[name]["p50_ms"] / base_append, 3),
                "tail50": round(tail_p50[name]["p50_ms"] / base_tail, 3),
            }
            for name in ledgers
        },
        "fast_path": fast_paths,
        "spans_exported": exporter.count,
        "span_processor": "BatchSpanProcessor",
    }
