"""Run the benchmark: every contender, every workload, one PostgreSQL, interleaved.

``python -m bench`` (what ``make bench`` runs) or ``python -m bench --quick`` (smaller sizes and
fewer repetitions, for a sanity check in a couple of minutes). With ``AGENTLEDGER_BENCH_SMOKE=1``
in the environment every workload runs at a token size instead (seconds; the numbers mean
nothing) and the files go to a new temporary directory: the test suite runs the documented
commands that way, to check that they work. Two throwaway databases are
created on the server (agentledger's schema, shared by agentledger and the asyncpg floor; the
SDK peer's own tables) and dropped at the end, whatever happens.

Contenders take turns: repetition ``k`` runs each contender once, in an order shuffled each
round (see :func:`interleaved`), so a burst of load from anything else on the machine hits all
of them alike. What counts are the ratios between contenders measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import sqlalchemy
from sqlalchemy import event

import agentledger
from agentledger import Ledger
from agentledger.testing_pgbouncer import running_pgbouncer

from . import cpu, data, pg, smoke_mode
from .contenders import Contender, Floor, LedgerSdk, LedgerService, Lister, Peer

ROOT = Path(__file__).resolve().parent.parent
C = TypeVar("C")


@dataclass(frozen=True)
class Plan:
    """How much of everything to run."""

    mode: str
    pool_size: int
    warmup: int
    append_turns: int
    concurrent_sessions: int
    concurrent_turns: int
    concurrent_rounds: int
    tail_size: int
    tail_reps: int
    full_size: int
    full_reps: int
    list_users: tuple[int, ...]
    list_reps: int
    sweep_sizes: tuple[int, ...]
    sweep_reps: int
    cleanup_messages: int
    cleanup_batch: int
    cpu_calls: int
    cpu_rounds: int
    records_size: int
    records_reps: int
    compacted_size: int
    compacted_reps: int


FULL = Plan(
    mode="full",
    pool_size=16,
    warmup=50,
    append_turns=2000,
    concurrent_sessions=32,
    concurrent_turns=200,
    concurrent_rounds=5,
    tail_size=10_000,
    tail_reps=1000,
    full_size=1000,
    full_reps=300,
    list_users=(100, 1000, 10_000),
    list_reps=600,
    sweep_sizes=(100, 1000, 10_000, 100_000),
    sweep_reps=300,
    cleanup_messages=1_000_000,
    cleanup_batch=500,
    cpu_calls=400,
    cpu_rounds=7,
    records_size=3000,
    records_reps=30,
    compacted_size=100_000,
    compacted_reps=300,
)

QUICK = Plan(
    mode="quick",
    pool_size=16,
    warmup=20,
    append_turns=300,
    concurrent_sessions=32,
    concurrent_turns=50,
    concurrent_rounds=3,
    tail_size=10_000,
    tail_reps=200,
    full_size=1000,
    full_reps=60,
    list_users=(100, 1000, 10_000),
    list_reps=150,
    sweep_sizes=(100, 1000, 10_000),
    sweep_reps=80,
    cleanup_messages=100_000,
    cleanup_batch=500,
    cpu_calls=150,
    cpu_rounds=3,
    records_size=3000,
    records_reps=8,
    compacted_size=20_000,
    compacted_reps=80,
)

#: Every workload at a token size (``AGENTLEDGER_BENCH_SMOKE=1``): checks that the suite runs.
SMOKE = Plan(
    mode="smoke",
    pool_size=4,
    warmup=2,
    append_turns=5,
    concurrent_sessions=4,
    concurrent_turns=2,
    concurrent_rounds=1,
    tail_size=60,
    tail_reps=5,
    full_size=20,
    full_reps=5,
    list_users=(5, 30),
    list_reps=5,
    sweep_sizes=(10, 100),
    sweep_reps=5,
    cleanup_messages=500,
    cleanup_batch=5,
    cpu_calls=3,
    cpu_rounds=1,
    records_size=30,
    records_reps=2,
    compacted_size=200,
    compacted_reps=3,
)


# -- measuring -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(samples_ms: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(samples_ms),
        "p50_ms": round(percentile(samples_ms, 50), 4),
        "p99_ms": round(percentile(samples_ms, 99), 4),
        "mean_ms": round(statistics.fmean(samples_ms), 4),
        "max_ms": round(max(samples_ms), 4),
    }


async def interleaved(
    contenders: Sequence[C],
    reps: int,
    operation: Callable[[C, int], Awaitable[Any]],
    name: Callable[[C], str],
    *,
    after: Callable[[C, int], Awaitable[Any]] | None = None,
) -> dict[str, list[float]]:
    """Run ``operation(contender, rep)`` ``reps`` times for each contender, one of each per
    round, in an order shuffled every round (seeded by the round, so runs repeat it); return
    the latencies in milliseconds per contender name. ``after`` runs untimed after each
    operation.

    Shuffled, not rotated: a call pays for what the call before it left behind (garbage to
    collect, a span exporter's thread woken up), and in a rotation each contender follows the
    same one in all rounds but one, so a light contender placed after a heavy one was charged
    for it (measured: 1.28 against 1.10 times the plain tail read for the same code)."""
    samples: dict[str, list[float]] = {name(c): [] for c in contenders}
    for rep in range(reps):
        order = list(contenders)
        random.Random(rep).shuffle(order)
        for contender in order:
            began = time.perf_counter()
            await operation(contender, rep)
            samples[name(contender)].append((time.perf_counter() - began) * 1000)
            if after is not None:
                await after(contender, rep)
    return samples


#: Sessions per (contender, size) in the session-size sweep; repetitions alternate between them.
SWEEP_SESSIONS = 2


@dataclass(frozen=True)
class AtSize:
    """A contender on its sessions of one size (one line of the session-size sweep)."""

    contender: Contender
    size: int
    handles: list[str]
    admin: asyncpg.Connection

    def handle(self, rep: int) -> str:
        return self.handles[rep % len(self.handles)]

    def label(self) -> str:
        return f"{self.contender.name}@{self.size}"


async def captured_statement(ledger: Ledger, call: Callable[[], Awaitable[Any]]) -> tuple[str, Any]:
    """The (last) SQL text and driver parameters ``call`` sends through ``ledger``'s engine."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        seen.append((statement, parameters))

    engine = ledger.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        await call()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen[-1]


@dataclass(frozen=True)
class _Reader:
    """A named SDK session, for the compacted-read workload."""

    name: str
    session: Any


def _name(contender: Contender | Lister | _Reader) -> str:
    return contender.name


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the run ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, plan: Plan, urls: dict[str, str]) -> None:
        self.plan = plan
        self.urls = urls
        self.ledger = Ledger.from_url(
            pg.database_url(urls["ledger"]), pool_size=plan.pool_size, max_overflow=0
        )
        self.sdk = LedgerSdk(self.ledger)
        self.service = LedgerService(self.ledger)
        self.floor = Floor(pg.database_url(urls["ledger"]), plan.pool_size)
        self.peer = Peer(pg.database_url(urls["peer"], driver="asyncpg"), plan.pool_size)
        self.all: list[Contender] = [self.sdk, self.service, self.floor, self.peer]
        self.admin: dict[str, asyncpg.Connection] = {}

    async def __aenter__(self) -> Bench:
        await self.ledger.upgrade()
        for contender in self.all:
            await contender.open()
        for role, name in self.urls.items():
            self.admin[role] = await asyncpg.connect(pg.database_url(name))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for connection in self.admin.values():
            await connection.close()
        for contender in self.all:
            await contender.close()
        await self.ledger.dispose()

    async def vacuum(self) -> None:
        """Settle bulk-loaded tables (visibility map, statistics) as autovacuum would."""
        for connection in self.admin.values():
            await connection.execute("VACUUM ANALYZE")

    async def adk(self) -> dict[str, Any]:
        """Google ADK: LedgerSessionService against ADK's DatabaseSessionService, which gets a
        database of its own (bench/adk.py)."""
        from . import adk

        return await adk.measure(self.plan.mode, self.ledger, self.urls["adk"], self.vacuum)

    async def fill(self, contender: Contender, user_id: str, count: int) -> str:
        return await contender.fill(self.admin[contender.database], user_id, count)

    # -- workloads ---------------------------------------------------------------------------

    async def turn_append(self) -> dict[str, Any]:
        plan = self.plan
        log(f"turn append: {plan.append_turns} sequential turns per contender")
        handles = {c.name: await c.new_session("seq-user") for c in self.all}

        async def append(c: Contender, rep: int) -> None:
            await c.append(handles[c.name], data.turn_items(rep))

        await interleaved(self.all, plan.warmup, append, _name)
        samples = await interleaved(self.all, plan.append_turns, append, _name)
        for c in self.all:  # every turn is there, in order
            items = await c.read_all(handles[c.name])
            assert len(items) == 2 * (plan.warmup + plan.append_turns), (c.name, len(items))
        return {name: summary(values) for name, values in samples.items()}

    async def concurrent_append(self) -> dict[str, Any]:
        plan = self.plan
        sessions, turns = plan.concurrent_sessions, plan.concurrent_turns
        rounds = plan.concurrent_rounds
        log(f"concurrent append: {sessions} sessions x {turns} turns, {rounds} rounds")
        rates: dict[str, list[float]] = {c.name: [] for c in self.all}

        async def round_of(c: Contender, rep: int) -> None:
            handles = [await c.new_session(f"conc-{rep}-{i}") for i in range(sessions)]
            await asyncio.gather(*(c.append(h, data.turn_items(0)) for h in handles))

            async def worker(handle: str) -> None:
                for turn in range(1, turns + 1):
                    await c.append(handle, data.turn_items(turn))

            began = time.perf_counter()
            await asyncio.gather(*(worker(h) for h in handles))
            elapsed = time.perf_counter() - began
            rates[c.name].append(sessions * turns * 2 / elapsed)

        await interleaved(self.all, 1, round_of, _name)  # warm-up round
        for values in rates.values():
            values.clear()
        await interleaved(self.all, plan.concurrent_rounds, round_of, _name)
        return {
            name: {
                "items_per_s": round(statistics.median(values), 1),
                "rounds": [round(v, 1) for v in values],
            }
            for name, values in rates.items()
        }

    async def reads(self, size: int, reps: int, limit: int | None) -> dict[str, Any]:
        what = f"tail read (limit={limit})" if limit else "full read"
        log(f"{what} on a {size:,}-item session, {reps} reads per contender")
        handles = {c.name: await self.fill(c, f"read-user-{size}", size) for c in self.all}
        await self.vacuum()
        expected = size if limit is None else min(size, limit)

        async def read(c: Contender, rep: int) -> None:
            handle = handles[c.name]
            items = await (c.read_all(handle) if limit is None else c.tail(handle, limit))
            if rep == 0:
                assert len(items) == expected, (c.name, len(items))

        await interleaved(self.all, max(5, plan_warmup(self.plan, reps)), read, _name)
        samples = await interleaved(self.all, reps, read, _name)
        return {name: summary(values) for name, values in samples.items()}

    async def pgbouncer(self) -> dict[str, Any]:
        """Turn append and tail-50 read through a throwaway PgBouncer in transaction mode (the
        test suite's launcher, ``plan.pool_size`` server connections), for agentledger with
        ``pgbouncer=True`` and hand-written asyncpg with ``statement_cache_size=0``, both
        through that PgBouncer; agentledger's SDK session and the floor straight to
        PostgreSQL run in the same round-robin, for what PgBouncer itself costs."""
        plan = self.plan
        with running_pgbouncer(pool_size=plan.pool_size) as bouncer:
            url = bouncer.url(self.urls["ledger"])
            ledger = Ledger.from_url(url, pgbouncer=True, pool_size=plan.pool_size, max_overflow=0)
            floor = Floor(url, plan.pool_size, "asyncpg-floor@pgbouncer", statement_cache_size=0)
            contenders: list[Contender] = [
                LedgerSdk(ledger, "agentledger-sdk@pgbouncer"),
                LedgerService(ledger, "agentledger-service@pgbouncer"),
                floor,
                self.sdk,
                self.floor,
            ]
            await floor.open()
            try:
                log(f"pgbouncer: {plan.append_turns} turn appends per contender")
                handles = {c.name: await c.new_session("bouncer-user") for c in contenders}

                async def append(c: Contender, rep: int) -> None:
                    await c.append(handles[c.name], data.turn_items(rep))

                await interleaved(contenders, plan.warmup, append, _name)
                appends = await interleaved(contenders, plan.append_turns, append, _name)
                for c in contenders:
                    items = await c.read_all(handles[c.name])
                    assert len(items) == 2 * (plan.warmup + plan.append_turns), (c.name, len(items))

                log(f"pgbouncer: {plan.tail_reps} tail reads (50 of {plan.tail_size:,})")
                filled = {
                    c.name: await self.fill(c, "bouncer-reader", plan.tail_size) for c in contenders
                }
                await self.vacuum()

                async def tail(c: Contender, rep: int) -> None:
                    items = await c.tail(filled[c.name], 50)
                    if rep == 0:
                        assert len(items) == min(50, plan.tail_size), (c.name, len(items))

                await interleaved(contenders, plan_warmup(plan, plan.tail_reps), tail, _name)
                tails = await interleaved(contenders, plan.tail_reps, tail, _name)
            finally:
                await floor.close()
                await ledger.dispose()
            pgbouncer_log = bouncer.log()
        append_p50 = {name: summary(values)["p50_ms"] for name, values in appends.items()}
        tail_p50 = {name: summary(values)["p50_ms"] for name, values in tails.items()}
        return {
            "pgbouncer": _pgbouncer_version(),
            "server_connections": plan.pool_size,
            "turn_append": {name: summary(values) for name, values in appends.items()},
            "tail50": {name: summary(values) for name, values in tails.items()},
            "ratios": {
                "append_p50 agentledger-sdk/floor @pgbouncer": ratio(
                    append_p50["agentledger-sdk@pgbouncer"], append_p50["asyncpg-floor@pgbouncer"]
                ),
                "tail50_p50 agentledger-sdk/floor @pgbouncer": ratio(
                    tail_p50["agentledger-sdk@pgbouncer"], tail_p50["asyncpg-floor@pgbouncer"]
                ),
                "append_p50 agentledger-sdk pgbouncer/direct": ratio(
                    append_p50["agentledger-sdk@pgbouncer"], append_p50[self.sdk.name]
                ),
                "tail50_p50 agentledger-sdk pgbouncer/direct": ratio(
                    tail_p50["agentledger-sdk@pgbouncer"], tail_p50[self.sdk.name]
                ),
            },
            "pgbouncer_errors": [line for line in pgbouncer_log.splitlines() if " ERROR " in line],
        }

    async def listing(self) -> dict[str, Any]:
        plan = self.plan
        listers: list[Lister] = [self.service, self.floor]
        admin = self.admin["ledger"]
        for count in plan.list_users:
            await data.add_empty_ledger_sessions(admin, f"list-user-{count}", count)
        # Other users' sessions around them, as in a shared table.
        for other in range(200):
            await data.add_empty_ledger_sessions(admin, f"other-user-{other}", 50)
        await self.vacuum()
        results: dict[str, Any] = {}
        for count in plan.list_users:
            log(f"listing: 20 most recent of a user with {count:,} sessions")
            user = f"list-user-{count}"

            async def page(c: Lister, rep: int, user: str = user, count: int = count) -> None:
                rows = await c.list_recent(user, 20)
                assert len(rows) == min(20, count)

            await interleaved(listers, plan.warmup, page, _name)
            samples = await interleaved(listers, plan.list_reps, page, _name)
            results[str(count)] = {name: summary(values) for name, values in samples.items()}
        # The plan of the statement agentledger issues for the largest user: a bounded scan.
        statement = await captured_statement(
            self.ledger, lambda: self.service.list_recent(f"list-user-{plan.list_users[-1]}", 20)
        )
        async with self.ledger.engine.connect() as connection:
            rows = await connection.exec_driver_sql(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + statement[0],
                statement[1],
            )
        results["plan"] = [row[0] for row in rows]
        return results

    async def sweep(self) -> dict[str, Any]:
        """Tail read and turn append against the session size, for agentledger, the floor and
        the peer. Every (contender, size) pair takes its turn in the same round-robin, so
        machine noise hits all sizes alike; after each timed append the session is cut back
        to its size (untimed), so sizes stay exact however many repetitions run."""
        plan = self.plan
        contenders: list[Contender] = [self.sdk, self.floor, self.peer]
        log(f"session sizes {', '.join(f'{s:,}' for s in plan.sweep_sizes)}: building")
        pairs: list[AtSize] = []
        for size in plan.sweep_sizes:
            for c in contenders:
                handles = [await self.fill(c, f"sweep-{size}", size) for _ in range(SWEEP_SESSIONS)]
                pairs.append(AtSize(c, size, handles, self.admin[c.database]))
        await self.vacuum()

        async def tail(pair: AtSize, rep: int) -> None:
            await pair.contender.tail(pair.handle(rep), 50)

        async def append(pair: AtSize, rep: int) -> None:
            await pair.contender.append(pair.handle(rep), data.turn_items(rep))

        async def cut_back(pair: AtSize, rep: int) -> None:
            await pair.contender.truncate(pair.admin, pair.handle(rep), pair.size)

        log(f"session sizes: {plan.sweep_reps} tail reads and appends per contender and size")
        await interleaved(pairs, plan.warmup, tail, AtSize.label)
        reads = await interleaved(pairs, plan.sweep_reps, tail, AtSize.label)
        appends = await interleaved(pairs, plan.sweep_reps, append, AtSize.label, after=cut_back)
        results: dict[str, Any] = {}
        for pair in pairs:
            entry = results.setdefault(str(pair.size), {"tail50": {}, "append": {}})
            entry["tail50"][pair.contender.name] = summary(reads[pair.label()])
            entry["append"][pair.contender.name] = summary(appends[pair.label()])
        return results

    async def client_cpu(self) -> dict[str, Any]:
        plan = self.plan
        log(f"client CPU: {plan.cpu_rounds} rounds of {plan.cpu_calls} calls per contender")
        return await cpu.client_cpu(
            pg.database_url(self.urls["ledger"]),
            self.ledger,
            self.floor.pool,
            plan.cpu_calls,
            plan.cpu_rounds,
        )

    async def records(self) -> dict[str, Any]:
        plan = self.plan
        log(f"records: get_session vs get_items on {plan.records_size:,} messages")
        return await cpu.records(
            self.ledger, self.admin["ledger"], self.floor.pool, plan.records_size, plan.records_reps
        )

    async def telemetry(self) -> dict[str, Any]:
        """OpenTelemetry: plain vs a host's SQLAlchemy instrumentation vs agentledger's
        telemetry (bench/telemetry.py)."""
        from .telemetry import telemetry_workload

        plan = self.plan
        log(f"telemetry: {plan.append_turns} turns and {plan.tail_reps} tail reads per ledger")
        return await telemetry_workload(
            pg.database_url(self.urls["ledger"]),
            self.admin["ledger"],
            pool_size=plan.pool_size,
            turns=plan.append_turns,
            tail_size=plan.tail_size,
            tail_reps=plan.tail_reps,
            warmup=plan.warmup,
            interleaved=interleaved,
            summary=summary,
        )

    async def web(self) -> dict[str, Any]:
        """The HTTP API's overhead over a direct service call (bench/web.py)."""
        from .web import web_workload

        plan = self.plan
        log(f"web: {plan.append_turns} turns and {plan.tail_reps} tail reads per contender")
        return await web_workload(
            pg.database_url(self.urls["ledger"]),
            pool_size=plan.pool_size,
            turns=plan.append_turns,
            tail_size=plan.tail_size,
            tail_reps=plan.tail_reps,
            warmup=plan.warmup,
            interleaved=interleaved,
            summary=summary,
        )

    async def compacted(self) -> dict[str, Any]:
        """What the model receives (``LedgerSession.get_items()``) from a compacted session of
        ``compacted_size`` messages whose checkpoint leaves the last 40 verbatim, against a
        session of 40 messages, in a table holding ten times as many messages of other
        sessions: the long history should cost about nothing."""
        plan = self.plan
        kept = 40
        log(
            f"compacted read: get_items() on {plan.compacted_size:,} messages with a "
            f"checkpoint {kept} from the end, and on {kept} messages"
        )
        long_id, short_id = uuid.uuid4(), uuid.uuid4()
        await data.fill_ledger_sessions(
            self.admin["ledger"],
            [(long_id, "compacted-user", plan.compacted_size), (short_id, "compacted-user", kept)],
        )
        # Other users' sessions around them, ten times the long one, as in a shared table
        # (where a session's rows are a small share of the table and its index is selective).
        others = [(uuid.uuid4(), f"other-{n}", plan.compacted_size // 10) for n in range(100)]
        for first in range(0, len(others), 10):
            await data.fill_ledger_sessions(self.admin["ledger"], others[first : first + 10])
        summary_item = {"role": "user", "content": "Summary of the earlier conversation: ..."}
        await self.ledger.service.add_checkpoint(
            long_id, [summary_item], upto_seq=plan.compacted_size - kept
        )
        await self.vacuum()
        readers = [
            _Reader("compacted", self.ledger.agent_session(str(long_id), user_id="compacted-user")),
            _Reader("short", self.ledger.agent_session(str(short_id), user_id="compacted-user")),
        ]

        async def read(reader: _Reader, rep: int) -> None:
            items = await reader.session.get_items()
            if rep == 0:
                assert len(items) == (kept + 1 if reader.name == "compacted" else kept)

        await interleaved(readers, max(5, plan_warmup(plan, plan.compacted_reps)), read, _name)
        samples = await interleaved(readers, plan.compacted_reps, read, _name)
        results: dict[str, Any] = {name: summary(values) for name, values in samples.items()}
        results["size"] = plan.compacted_size
        results["ratio_p50"] = round(
            ratio(results["compacted"]["p50_ms"], results["short"]["p50_ms"]), 2
        )
        return results

    async def cleanup(self) -> dict[str, Any]:
        """agentledger's batched cleanup of ``cleanup_messages`` idle messages, while a live
        session keeps appending (its latencies show whether cleanup blocks the agent loop).

        Sessions have mixed sizes, as in production: nine in ten hold 50 messages, one in ten
        500 and one in a hundred 5,000, so some batches are much heavier than others.
        """
        plan = self.plan
        sizes: list[int] = []
        while sum(sizes) < plan.cleanup_messages:
            i = len(sizes)
            sizes.append(5000 if i % 100 == 99 else 500 if i % 10 == 9 else 50)
        log(f"cleanup: building {len(sizes):,} idle sessions, {sum(sizes):,} messages")
        admin = self.admin["ledger"]
        began = time.perf_counter()
        chunk = 1000
        for first in range(0, len(sizes), chunk):
            batch = [
                (uuid.uuid4(), f"idle-user-{i % 1000}", sizes[i])
                for i in range(first, min(len(sizes), first + chunk))
            ]
            await data.fill_ledger_sessions(admin, batch, idle_days=60)
        await self.vacuum()
        build_s = time.perf_counter() - began
        idle_sessions, idle_messages = await self.ledger.service.count_idle_sessions(
            timedelta(days=30)
        )
        log(f"cleanup: built in {build_s:.1f}s; deleting {idle_messages:,} messages")

        live = await self.sdk.new_session("live-user")
        live_latencies: list[float] = []
        stop = asyncio.Event()

        async def live_agent() -> None:
            turn = 0
            while not stop.is_set():
                t0 = time.perf_counter()
                await self.sdk.append(live, data.turn_items(turn))
                live_latencies.append((time.perf_counter() - t0) * 1000)
                turn += 1
                await asyncio.sleep(0.02)

        marks: list[float] = []
        agent = asyncio.create_task(live_agent())
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        marks.append(started)
        deleted = await self.ledger.service.cleanup_sessions(
            timedelta(days=30),
            batch_size=plan.cleanup_batch,
            on_progress=lambda _total: marks.append(time.perf_counter()),
        )
        finished = time.perf_counter()
        stop.set()
        await agent
        batches_ms = [(b - a) * 1000 for a, b in itertools.pairwise(marks)]
        left, _ = await self.ledger.service.count_idle_sessions(timedelta(days=30))
        assert deleted == idle_sessions, (deleted, idle_sessions)
        assert left == 0, left
        return {
            "messages": idle_messages,
            "sessions": idle_sessions,
            "batch_size_sessions": plan.cleanup_batch,
            "build_s": round(build_s, 2),
            "total_s": round(finished - started, 3),
            "messages_per_s": round(idle_messages / (finished - started)),
            "batches": len(batches_ms),
            "batch_p50_ms": round(percentile(batches_ms, 50), 2),
            "batch_max_ms": round(max(batches_ms), 2),
            "live_append": summary(live_latencies) if live_latencies else None,
        }


def plan_warmup(plan: Plan, reps: int) -> int:
    return min(plan.warmup, reps)


# -- ratios and targets ----------------------------------------------------------------------


def ratio(a: float, b: float) -> float:
    return round(a / b, 3)


def evaluate(results: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Ratios against the floor and the peer, and the issue's targets."""
    floor, peer = "asyncpg-floor", "sdk-sqlalchemy"
    ours = ("agentledger-sdk", "agentledger-service")
    ratios: dict[str, Any] = {}
    for workload in ("turn_append", "tail50", "full_read"):
        entry = results[workload]
        ratios[workload] = {
            name: {
                "vs_floor_p50": ratio(entry[name]["p50_ms"], entry[floor]["p50_ms"]),
                "vs_floor_p99": ratio(entry[name]["p99_ms"], entry[floor]["p99_ms"]),
                "vs_peer_p50": ratio(entry[name]["p50_ms"], entry[peer]["p50_ms"]),
            }
            for name in (*ours, peer)
        }
    conc = results["concurrent_append"]
    ratios["concurrent_append"] = {
        name: {
            "vs_floor": ratio(conc[name]["items_per_s"], conc[floor]["items_per_s"]),
            "vs_peer": ratio(conc[name]["items_per_s"], conc[peer]["items_per_s"]),
        }
        for name in (*ours, peer)
    }
    listing = {k: v for k, v in results["listing"].items() if k != "plan"}
    counts = sorted(listing, key=int)
    ratios["listing"] = {
        "agentledger-service": {
            "vs_floor_p50": {
                c: ratio(listing[c]["agentledger-service"]["p50_ms"], listing[c][floor]["p50_ms"])
                for c in counts
            },
            "largest_vs_smallest_user": ratio(
                listing[counts[-1]]["agentledger-service"]["p50_ms"],
                listing[counts[0]]["agentledger-service"]["p50_ms"],
            ),
        }
    }
    sweep = results["sweep"]
    sizes = sorted(sweep, key=int)
    flat: dict[str, Any] = {}
    for name in ("agentledger-sdk", floor, peer):
        flat[name] = {}
        for op in ("tail50", "append"):
            p50s = [sweep[s][op][name]["p50_ms"] for s in sizes]
            flat[name][op] = {
                "largest_vs_smallest": ratio(p50s[-1], p50s[0]),
                "max_vs_min": ratio(max(p50s), min(p50s)),
            }
    ratios["sweep"] = flat

    targets: list[dict[str, Any]] = []

    def target(what: str, value: float, bound: float, at_most: bool = True) -> None:
        met = value <= bound if at_most else value >= bound
        targets.append(
            {"target": what, "value": value, "bound": bound, "at_most": at_most, "met": met}
        )

    for name in ours:
        target(
            f"{name}: turn append p50 / floor", ratios["turn_append"][name]["vs_floor_p50"], 1.15
        )
        target(f"{name}: tail-50 read p50 / floor", ratios["tail50"][name]["vs_floor_p50"], 1.3)
        target(f"{name}: full 1k read p50 / floor", ratios["full_read"][name]["vs_floor_p50"], 1.2)
        target(
            f"{name}: concurrent append items/s / floor",
            ratios["concurrent_append"][name]["vs_floor"],
            0.7,
            at_most=False,
        )
        target(
            f"{name}: concurrent append items/s / SDK peer",
            ratios["concurrent_append"][name]["vs_peer"],
            2.5,
            at_most=False,
        )
    appends, tails = results["client_cpu"]["append"], results["client_cpu"]["tail50"]
    ratios["client_cpu"] = {
        f"{op} {mode}": ratio(
            entry[f"agentledger-sdk {mode}"]["cpu_us"], entry[f"asyncpg-floor {mode}"]["cpu_us"]
        )
        for op, entry in (("append", appends), ("tail50", tails))
        for mode in ("pooled", "dedicated")
    }
    target(
        "agentledger-sdk: client CPU per turn append / pooled floor",
        ratios["client_cpu"]["append pooled"],
        1.1,
    )
    target(
        "agentledger-sdk: concurrent append items/s / floor (raised)",
        ratios["concurrent_append"]["agentledger-sdk"]["vs_floor"],
        0.9,
        at_most=False,
    )
    for count in counts:
        target(
            f"agentledger-service: listing p50 / floor, user with {count} sessions",
            ratios["listing"]["agentledger-service"]["vs_floor_p50"][count],
            1.3,
        )
    rec = results["records"]
    ratios["records"] = {
        "get_session_vs_get_items": ratio(rec["get_session()"], rec["get_items()"]),
        "export_vs_get_items": ratio(rec["export_session()"], rec["get_items()"]),
    }
    if "asyncpg: items" in rec:  # results of runs before the driver's reads were measured
        ratios["records"]["driver_history_vs_items"] = ratio(
            rec["asyncpg: history columns"], rec["asyncpg: items"]
        )
    target(
        f"get_session / get_items on {rec['size']:,} messages",
        ratios["records"]["get_session_vs_get_items"],
        1.5,
    )
    target(
        f"agentledger-sdk: append p50 flat over {sizes[0]}..{sizes[-1]} items (max/min)",
        flat["agentledger-sdk"]["append"]["max_vs_min"],
        1.2,
    )
    target(
        f"agentledger-sdk: tail-50 read p50 flat over {sizes[0]}..{sizes[-1]} items (max/min)",
        flat["agentledger-sdk"]["tail50"]["max_vs_min"],
        1.2,
    )
    target(
        f"agentledger-service: listing p50, user with {counts[-1]} vs {counts[0]} sessions",
        ratios["listing"]["agentledger-service"]["largest_vs_smallest_user"],
        1.2,
    )
    return ratios, targets


def report(results: dict[str, Any], ratios: dict[str, Any], targets: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    add = lines.append
    add("")
    add(f"{'workload':<34}{'contender':<22}{'p50 ms':>9}{'p99 ms':>9}{'/floor':>8}{'/peer':>8}")
    titles = {
        "turn_append": "turn append (user+assistant)",
        "tail50": f"get_items(50), {results['meta']['plan']['tail_size']:,} items",
        "full_read": f"get_items(), {results['meta']['plan']['full_size']:,} items",
    }
    for workload, title in titles.items():
        for name, stats in results[workload].items():
            r = ratios[workload].get(name, {})
            add(
                f"{title:<34}{name:<22}{stats['p50_ms']:>9.3f}{stats['p99_ms']:>9.3f}"
                f"{r.get('vs_floor_p50', 1.0):>8.2f}{r.get('vs_peer_p50', float('nan')):>8.2f}"
            )
            title = ""
    title = "32 sessions appending (items/s)"
    for name, stats in results["concurrent_append"].items():
        r = ratios["concurrent_append"].get(name, {})
        add(
            f"{title:<34}{name:<22}{stats['items_per_s']:>9.0f}{'':>9}"
            f"{r.get('vs_floor', 1.0):>8.2f}{r.get('vs_peer', float('nan')):>8.2f}"
        )
        title = ""
    for count, entry in results["listing"].items():
        if count == "plan":
            continue
        title = f"list 20 of {int(count):,} sessions"
        for name, stats in entry.items():
            add(f"{title:<34}{name:<22}{stats['p50_ms']:>9.3f}{stats['p99_ms']:>9.3f}")
            title = ""
    add("")
    add(f"client CPU per call (us, median of {results['client_cpu']['rounds']} rounds)")
    for op in ("append", "tail50"):
        for name, stats in results["client_cpu"][op].items():
            add(
                f"  {op:<8}{name:<28}{stats['cpu_us']:>8.1f}"
                f"   ({stats['min_us']:.1f} .. {stats['max_us']:.1f})"
            )
    conc = results["concurrent_append"]
    for name, stats in conc.items():
        rounds = stats["rounds"]
        add(f"  32 sessions {name:<22}rounds {min(rounds):,.0f} .. {max(rounds):,.0f} items/s")
    rec = results["records"]
    add(
        f"records on {rec['size']:,} messages (p50 ms): get_items {rec['get_items()']:.2f}, "
        f"get_session {rec['get_session()']:.2f}, export_session {rec['export_session()']:.2f}"
    )
    if "compacted" in results:
        comp = results["compacted"]
        add(
            f"compacted read on {comp['size']:,} messages (p50 ms): "
            f"{comp['compacted']['p50_ms']:.3f} vs {comp['short']['p50_ms']:.3f} on 40 messages "
            f"({comp['ratio_p50']:.2f}x)"
        )
    add("")
    add("session size sweep (p50 ms): " + ", ".join(results["sweep"]))
    for op in ("tail50", "append"):
        names = next(iter(results["sweep"].values()))[op]
        for name in names:
            values = "  ".join(
                f"{results['sweep'][s][op][name]['p50_ms']:7.3f}" for s in results["sweep"]
            )
            add(f"  {op:<8}{name:<22}{values}")
    cleanup = results["cleanup"]
    add("")
    add(
        f"cleanup: {cleanup['messages']:,} messages in {cleanup['sessions']:,} sessions, "
        f"{cleanup['total_s']:.1f}s ({cleanup['messages_per_s']:,} messages/s), "
        f"{cleanup['batches']} batches, batch p50 {cleanup['batch_p50_ms']:.0f} ms, "
        f"max {cleanup['batch_max_ms']:.0f} ms"
    )
    if cleanup["live_append"]:
        live = cleanup["live_append"]
        add(
            f"  a live session appending meanwhile: p50 {live['p50_ms']:.2f} ms, "
            f"max {live['max_ms']:.1f} ms over {live['n']} turns"
        )
    add("")
    add("targets:")
    for t in targets:
        sign = "<=" if t["at_most"] else ">="
        mark = "met   " if t["met"] else "MISSED"
        add(f"  [{mark}] {t['target']}: {t['value']:.3f} ({sign} {t['bound']})")
    return "\n".join(lines)


# -- entry point -------------------------------------------------------------------------------


async def run(plan: Plan, only: set[str] | None) -> dict[str, Any]:
    results: dict[str, Any] = {
        "meta": {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "plan": asdict(plan),
            "python": platform.python_version(),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
            "agentledger": agentledger.__version__,
            "sqlalchemy": sqlalchemy.__version__,
            "asyncpg": asyncpg.__version__,
            "openai_agents": _version("openai-agents"),
            "note": "shared machine: other processes ran meanwhile; compare ratios, not times",
        }
    }
    roles = ("ledger", "peer", "adk")
    async with pg.throwaway_databases(*roles) as names, Bench(plan, names) as bench:
        version = await bench.admin["ledger"].fetchval("SHOW server_version")
        results["meta"]["postgresql"] = version
        steps: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = [
            ("turn_append", bench.turn_append),
            ("client_cpu", bench.client_cpu),
            ("concurrent_append", bench.concurrent_append),
            ("tail50", lambda: bench.reads(plan.tail_size, plan.tail_reps, 50)),
            ("full_read", lambda: bench.reads(plan.full_size, plan.full_reps, None)),
            ("listing", bench.listing),
            ("records", bench.records),
            ("compacted", bench.compacted),
            ("telemetry", bench.telemetry),
            ("web", bench.web),
            ("sweep", bench.sweep),
            ("cleanup", bench.cleanup),
            ("pgbouncer", bench.pgbouncer),
            ("adk", bench.adk),
        ]
        for key, step in steps:
            if only is None or key in only:
                gc.collect()
                results[key] = await step()
    results["meta"]["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def _pgbouncer_version() -> str:
    import subprocess

    from agentledger.testing_pgbouncer import pgbouncer_program

    shown = subprocess.run(
        [pgbouncer_program(), "--version"], capture_output=True, text=True, check=False
    ).stdout
    return shown.splitlines()[0] if shown else "unknown"


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    parser.add_argument("--output", type=Path, help="JSON result (default: bench/results/...)")
    parser.add_argument("--plot", type=Path, help="PNG plot (default: docs/ for a full run)")
    parser.add_argument("--only", nargs="*", help="run only these workloads (no targets)")
    args = parser.parse_args(argv)
    only = set(args.only) if args.only else None
    if smoke_mode():
        log("smoke run (AGENTLEDGER_BENCH_SMOKE): token sizes, the numbers mean nothing")
        plan = SMOKE
        scratch = Path(tempfile.mkdtemp(prefix="agentledger-bench-smoke-"))
        output = args.output or scratch / "smoke.json"
        plot_path = args.plot or scratch / "smoke.png"
    else:
        plan = QUICK if args.quick else FULL
        # A partial run never replaces the full run's results (docs/performance.md cites them).
        output = args.output or ROOT / "bench" / "results" / (
            "partial.json" if only is not None else "quick.json" if args.quick else "latest.json"
        )
        plot_path = args.plot or (
            ROOT / "bench" / "results" / "quick.png"
            if args.quick
            else ROOT / "docs" / "performance-session-size.png"
        )
    results = asyncio.run(run(plan, only))
    if only is None:
        ratios, targets = evaluate(results)
        results["ratios"] = ratios
        results["targets"] = targets
        print(report(results, ratios, targets))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    log(f"results written to {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")
    if "sweep" in results:
        from .plot import plot_sweep

        plot_sweep(results, plot_path)
        log(f"plot written to {plot_path}")
    return 0
