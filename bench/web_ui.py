"""The transcript browser's sessions page: its render time whatever the user's session count.

``python -m bench.web_ui`` seeds one throwaway PostgreSQL database with a user of 100 sessions
and one of 10,000 (the newest 60 with three messages each, the others bulk-inserted), then
renders ``GET /ui/`` (the first page, 50 sessions) for both, interleaved, through the ASGI app
in process (no network), and a deep page of the big user (the cursor of its 5,000th session).
Keyset pagination should make the three about equal; the listing statement's plan is recorded
too. Writes ``bench/results/web-ui.json``; docs/web.md reports the numbers. With
``AGENTLEDGER_BENCH_SMOKE=1`` it runs at token sizes into a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI, Header

from agentledger import Ledger
from agentledger.web.ui import create_ui_router

from . import data, pg, smoke_mode
from .run import captured_statement

ROOT = Path(__file__).resolve().parent.parent


def host_app(ledger: Ledger) -> FastAPI:
    app = FastAPI()

    async def current_user(x_user: str = Header()) -> str:
        return x_user

    app.include_router(create_ui_router(ledger, current_user=current_user), prefix="/ui")
    return app


#: The newest sessions of each user get messages through the service (what the first page
#: shows, titles from their first user message); the older ones are bulk-inserted.
WITH_MESSAGES = 60


async def seed(ledger: Ledger, admin: asyncpg.Connection, user: str, sessions: int) -> None:
    await data.add_empty_ledger_sessions(admin, user, max(sessions - WITH_MESSAGES, 0))
    svc = ledger.service
    messages = [
        {"role": "user", "content": "What is the status of my order?"},
        {"role": "assistant", "content": "It shipped yesterday."},
        {"role": "user", "content": "Thanks!"},
    ]

    async def one(number: int) -> None:
        session = await svc.create_session(user, f"agent-{number % 3}", metadata={"n": number})
        await svc.add_messages(session.id, messages)

    for number in range(min(sessions, WITH_MESSAGES)):
        await one(number)


async def cursor_after(ledger: Ledger, user: str, skip: int) -> str | None:
    cursor = None
    for _ in range(skip // 100):
        page = await ledger.service.list_user_sessions(user, limit=100, cursor=cursor)
        cursor = page.next_cursor
    return cursor


async def measure(sizes: Sequence[int], reps: int) -> dict[str, Any]:
    async with pg.throwaway_databases("ui") as names:
        url = pg.database_url(names["ui"])
        admin = await asyncpg.connect(pg.database_url(names["ui"]))
        async with Ledger.from_url(url) as ledger:
            try:
                await ledger.upgrade()
                for size in sizes:
                    await seed(ledger, admin, f"user{size}", size)
                await admin.execute("VACUUM ANALYZE")  # statistics, as autovacuum would
            finally:
                await admin.close()
            big = max(sizes)
            plan = await list_plan(ledger, f"user{big}")
            deep = await cursor_after(ledger, f"user{big}", big // 2)
            cases: dict[str, tuple[str, dict[str, str]]] = {
                f"{size} sessions, first page": (f"user{size}", {}) for size in sizes
            }
            if deep is not None:
                cases[f"{big} sessions, page at {big // 2}"] = (f"user{big}", {"cursor": deep})
            samples: dict[str, list[float]] = {name: [] for name in cases}
            transport = httpx.ASGITransport(app=host_app(ledger))
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                for rep in range(reps + 3):
                    for name, (user, params) in cases.items():
                        started = time.perf_counter()
                        response = await client.get("/ui/", params=params, headers={"x-user": user})
                        elapsed = (time.perf_counter() - started) * 1000
                        assert response.status_code == 200, response.text[:200]
                        if rep >= 3:  # warm-up: compiled statements, templates
                            samples[name].append(elapsed)
    timings = {
        name: {
            "p50_ms": round(statistics.median(values), 2),
            "p95_ms": round(sorted(values)[int(0.95 * (len(values) - 1))], 2),
            "reps": len(values),
        }
        for name, values in samples.items()
    }
    return {"pages": timings, "plan": plan}


async def list_plan(ledger: Ledger, user: str) -> list[str]:
    """The plan of the listing statement the first page runs for ``user``: a bounded index scan
    whatever the user's session count."""
    statement, parameters = await captured_statement(
        ledger, lambda: ledger.service.list_user_sessions(user, limit=50)
    )
    async with ledger.engine.connect() as connection:
        rows = await connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + statement, parameters
        )
    return [row[0] for row in rows]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.web_ui", description=__doc__)
    parser.add_argument("--reps", type=int, default=60)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/web-ui.json")
    args = parser.parse_args(argv)
    sizes, reps, output = (100, 10_000), args.reps, args.output
    if smoke_mode():
        sizes, reps = (5, 40), 2
        output = Path(tempfile.mkdtemp()) / "web-ui.json"
    started = datetime.now(UTC).isoformat(timespec="seconds")
    results = asyncio.run(measure(sizes, reps))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"started": started, "results": results}, indent=2) + "\n")
    for name, numbers in results["pages"].items():
        print(f"{name:32} p50 {numbers['p50_ms']:8.2f} ms   p95 {numbers['p95_ms']:8.2f} ms")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
