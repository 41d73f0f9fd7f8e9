"""Client CPU per call, and what building records costs against reading rows.

Latency hides CPU: while one call waits for the server, the client's CPU is idle, so two
libraries can show the same median and still differ twofold in how many calls one process can
drive. These workloads measure ``time.process_time()`` of the benchmark process per call:

* *pooled*: agentledger's SDK session on the Ledger's pool against hand-written asyncpg on an
  asyncpg pool (what an application runs);
* *dedicated*: the same calls on one connection (agentledger: a Ledger whose pool holds one
  connection; asyncpg: one bare connection, no pool), which shows what the pool itself costs.

Contenders alternate in rounds of ``calls`` calls each; the median round is reported, with the
spread. *Records* compares ``service.get_session`` (a record per message) with
``get_items()`` (the decoded items) on the same session.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from agentledger import Ledger

from . import data
from .contenders import AGENT, FLOOR_APPEND, FLOOR_TAIL, floor_append_arguments

Call = Callable[[int], Awaitable[Any]]


async def cpu_rounds(calls: dict[str, Call], per_round: int, rounds: int) -> dict[str, Any]:
    """Microseconds of client CPU per call for each named call, alternating in ``rounds``."""
    names = list(calls)
    for name in names:  # warm caches, prepared statements and pools
        for index in range(max(5, per_round // 10)):
            await calls[name](index)
    samples: dict[str, list[float]] = {name: [] for name in names}
    counter = 0
    for round_number in range(rounds):
        start = round_number % len(names)
        for name in [*names[start:], *names[:start]]:
            began = time.process_time()
            for _ in range(per_round):
                counter += 1
                await calls[name](counter)
            samples[name].append((time.process_time() - began) / per_round * 1e6)
    return {
        name: {
            "cpu_us": round(statistics.median(values), 1),
            "min_us": round(min(values), 1),
            "max_us": round(max(values), 1),
        }
        for name, values in samples.items()
    }


async def client_cpu(
    url: str, ledger: Ledger, pool: asyncpg.Pool, per_round: int, rounds: int
) -> dict[str, Any]:
    """CPU per turn append and per tail-50 read, pooled and on a dedicated connection."""
    dedicated_ledger = Ledger.from_url(url, pool_size=1, max_overflow=0)
    dedicated = await asyncpg.connect(url)
    try:
        handles = {
            label: owner.agent_session(
                f"cpu-{label}-{uuid.uuid4().hex[:8]}", user_id="cpu-user", agent_name=AGENT
            )
            for label, owner in (("pooled", ledger), ("dedicated", dedicated_ledger))
        }
        floor_ids = {"pooled": uuid.uuid4(), "dedicated": uuid.uuid4()}

        async def pooled_floor_append(turn: int) -> None:
            arguments = floor_append_arguments(
                floor_ids["pooled"], "cpu-user", data.turn_items(turn)
            )
            async with pool.acquire() as connection:
                await connection.fetchval(FLOOR_APPEND, *arguments)

        async def dedicated_floor_append(turn: int) -> None:
            arguments = floor_append_arguments(
                floor_ids["dedicated"], "cpu-user", data.turn_items(turn)
            )
            await dedicated.fetchval(FLOOR_APPEND, *arguments)

        async def pooled_floor_tail(_turn: int) -> None:
            async with pool.acquire() as connection:
                rows = await connection.fetch(FLOOR_TAIL, floor_ids["pooled"], "cpu-user", 50)
            [json.loads(row[0]) for row in reversed(rows)]

        async def dedicated_floor_tail(_turn: int) -> None:
            rows = await dedicated.fetch(FLOOR_TAIL, floor_ids["dedicated"], "cpu-user", 50)
            [json.loads(row[0]) for row in reversed(rows)]

        def ledger_append(label: str) -> Call:
            async def call(turn: int) -> None:
                await handles[label].add_items(data.turn_items(turn))  # type: ignore[arg-type]

            return call

        def ledger_tail(label: str) -> Call:
            async def call(_turn: int) -> None:
                await handles[label].get_items(50)

            return call

        appends = await cpu_rounds(
            {
                "agentledger-sdk pooled": ledger_append("pooled"),
                "asyncpg-floor pooled": pooled_floor_append,
                "agentledger-sdk dedicated": ledger_append("dedicated"),
                "asyncpg-floor dedicated": dedicated_floor_append,
            },
            per_round,
            rounds,
        )
        tails = await cpu_rounds(
            {
                "agentledger-sdk pooled": ledger_tail("pooled"),
                "asyncpg-floor pooled": pooled_floor_tail,
                "agentledger-sdk dedicated": ledger_tail("dedicated"),
                "asyncpg-floor dedicated": dedicated_floor_tail,
            },
            per_round,
            rounds,
        )
    finally:
        await dedicated.close()
        await dedicated_ledger.dispose()
    return {"append": appends, "tail50": tails, "per_round": per_round, "rounds": rounds}


#: What the driver alone costs for the two reads: the items (decoded), and the columns a
#: record holds (the chat view beside the item, its id and time; JSON decoded).
DRIVER_ITEMS = "SELECT item FROM conversation_messages WHERE session_id = $1 ORDER BY seq"
DRIVER_HISTORY = """
SELECT seq, role, content, tool_calls, tool_call_id, created_at, id, item_type, item
FROM conversation_messages WHERE session_id = $1 ORDER BY seq
"""


async def records(
    ledger: Ledger, admin: asyncpg.Connection, pool: asyncpg.Pool, size: int, reps: int
) -> dict[str, Any]:
    """Wall time of ``get_session`` (records) and ``get_items()`` (items) on one session, and
    of hand-written asyncpg reading the same columns (``asyncpg: ...``), which shows how much
    of the difference is the driver's own work on the record's extra columns."""
    session_id = uuid.uuid4()
    await data.fill_ledger_sessions(admin, [(session_id, "records-user", size)])
    await admin.execute("VACUUM ANALYZE")
    service = ledger.service

    async def driver_items() -> list[Any]:
        async with pool.acquire() as connection:
            rows = await connection.fetch(DRIVER_ITEMS, session_id)
        return [json.loads(row[0]) for row in rows]

    async def driver_history() -> list[Any]:
        async with pool.acquire() as connection:
            rows = await connection.fetch(DRIVER_HISTORY, session_id)
        return [(*row[:8], json.loads(row[8])) for row in rows]

    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "get_items()": lambda: service.get_items(session_id, user_id="records-user"),
        "get_session()": lambda: service.get_session(session_id, "records-user"),
        "export_session()": lambda: service.export_session(session_id, user_id="records-user"),
        "asyncpg: items": driver_items,
        "asyncpg: history columns": driver_history,
    }
    for call in calls.values():
        await call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for rep in range(reps):
        start = rep % len(names)
        for name in [*names[start:], *names[:start]]:
            # Clear the collector's debt first: a full collection's cost depends on the whole
            # process's heap and lands on whichever call crosses the threshold, so without
            # this the order of the calls, not their own work, decided the medians.
            gc.collect()
            began = time.perf_counter()
            await calls[name]()
            samples[name].append((time.perf_counter() - began) * 1000)
    return {
        "size": size,
        **{name: round(statistics.median(values), 3) for name, values in samples.items()},
    }
