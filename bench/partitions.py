"""`make bench-partitions`: retiring a month of history on a table of 1 and 10 million messages.

Not part of ``make bench`` (building ten million rows takes minutes). For each size, one
database holds the messages partitioned by month with docs/scaling.md's own SQL, and another
the same rows in the plain table. Every session has the same number of messages in each
month, so a month holds the same rows whatever the size: 20,000 sessions x 25 messages per
month, 2 months (1 million messages) or 20 months (10 million).

Measured, per size:

* ``retire``: ``retire_message_partition`` of the oldest month, three times (three months).
  The claim: the time does not grow with the table, only with the month.
* ``trim``: the row-deleting way to the same histories, ``apply_retention`` with
  ``max_messages`` cutting each session's oldest 25 messages, once, on the plain table.
* ``tail50``: the agent loop's tail read (latest 50) on both tables, interleaved, since a
  read names a session and not a month and so looks into every partition.

Run: ``python -m bench.partitions [--sizes 1000000 10000000] [--no-trim-at-largest]``; writes
bench/results/partitions.json. ``AGENTLEDGER_BENCH_SMOKE=1`` runs token sizes.
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
from tests.support.docs import time_partitioning_sql

from agentledger import Ledger

from . import pg, smoke_mode

ROOT = Path(__file__).resolve().parent.parent
SESSIONS = 20_000
PER_MONTH = 25
FIRST_MONTH = "2024-01-01"


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


async def _fill(url: str, sessions: int, months: int, *, partitioned: bool) -> None:
    """The schema (migrations, then the page's partitioning), then every session's messages,
    month by month: ``PER_MONTH`` per session per month, dated inside their month."""
    async with Ledger.from_url(url) as ledger:
        await ledger.upgrade()
    connection = await asyncpg.connect(url)
    try:
        if partitioned:
            await connection.execute(time_partitioning_sql())
            await connection.execute(
                f"SELECT agentledger_month_partitions('{FIRST_MONTH}', {months})"
            )
        total = months * PER_MONTH
        await connection.execute(
            """
            INSERT INTO agent_sessions
                (id, user_id, agent_name, metadata, created_at, updated_at, last_seq)
            SELECT md5('s' || i)::uuid, 'user' || (i % 1000), 'bench', '{}',
                   CAST($1 AS timestamptz), now(), $2
            FROM generate_series(1, $3) AS i
            """,
            datetime.fromisoformat(FIRST_MONTH).replace(tzinfo=UTC),
            total,
            sessions,
        )
        for month in range(months):
            await connection.execute(
                """
                INSERT INTO conversation_messages
                    (session_id, seq, id, role, content, item_type, item, created_at)
                SELECT md5('s' || i)::uuid, seq, gen_random_uuid(), r.role, 'message ' || seq,
                       'message', json_build_object('role', r.role, 'content', 'message ' || seq),
                       CAST($1 AS timestamptz) + make_interval(months => $2::int)
                           + make_interval(secs => seq * 60 + i % 60)
                FROM generate_series(1, $3::int) AS i,
                     generate_series($2::int * $4::int + 1, ($2::int + 1) * $4::int) AS seq,
                     LATERAL (SELECT CASE WHEN seq % 2 = 1 THEN 'user' ELSE 'assistant' END
                              AS role) AS r
                """,
                datetime.fromisoformat(FIRST_MONTH).replace(tzinfo=UTC),
                month,
                sessions,
                PER_MONTH,
            )
            log(f"  month {month + 1}/{months} written")
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


async def _tail_reads(urls: dict[str, str], sessions: int, reps: int) -> dict[str, Any]:
    """p50/p95 of ``get_items(limit=50)`` on each database, interleaved."""
    ledgers = {name: Ledger.from_url(url) for name, url in urls.items()}
    samples: dict[str, list[float]] = {name: [] for name in urls}
    try:
        connection = await asyncpg.connect(next(iter(urls.values())))
        try:
            ids = [row[0] for row in await connection.fetch("SELECT id FROM agent_sessions")]
        finally:
            await connection.close()
        for rep in range(reps):
            sid = ids[(rep * 7919) % len(ids)]
            for name, ledger in ledgers.items():
                began = time.perf_counter()
                items = await ledger.service.get_items(sid, 50)
                samples[name].append((time.perf_counter() - began) * 1000)
                assert len(items) == 50
    finally:
        for ledger in ledgers.values():
            await ledger.dispose()
    return {
        name: {
            "p50_ms": statistics.median(values),
            "p95_ms": statistics.quantiles(values, n=20)[18],
        }
        for name, values in samples.items()
    }


async def measure(size: int, sessions: int, *, trim: bool, reps: int) -> dict[str, Any]:
    months = max(2, size // (sessions * PER_MONTH))
    async with pg.throwaway_databases("months", "plain") as names:
        urls = {role: pg.database_url(name) for role, name in names.items()}
        log(f"{size:,} messages: {sessions:,} sessions over {months} months")
        started = time.perf_counter()
        await _fill(urls["months"], sessions, months, partitioned=True)
        await _fill(urls["plain"], sessions, months, partitioned=False)
        log(f"  filled in {time.perf_counter() - started:.0f} s")
        result: dict[str, Any] = {"messages": sessions * months * PER_MONTH, "months": months}
        result["tail50"] = await _tail_reads(urls, sessions, reps)
        retired = []
        async with Ledger.from_url(urls["months"]) as ledger:
            for month in range(min(3, months - 1)):
                name = f"conversation_messages_{2024 + month // 12}_{month % 12 + 1:02d}"
                began = time.perf_counter()
                report = await ledger.service.retire_message_partition(name)
                seconds = time.perf_counter() - began
                log(f"  retire {name}: {seconds:.2f} s ({report.describe()})")
                retired.append(
                    {
                        "partition": name,
                        "seconds": seconds,
                        "sessions": report.sessions,
                        "messages": report.messages,
                    }
                )
        result["retire"] = retired
        if trim:
            async with Ledger.from_url(urls["plain"]) as ledger:
                keep = (months - 1) * PER_MONTH
                began = time.perf_counter()
                trimmed = await ledger.service.apply_retention({"*": {"max_messages": keep}})
                seconds = time.perf_counter() - began
                counts = trimmed.policies["*"]
                described = counts.describe(dry_run=False)
                log(f"  trim (max_messages={keep}): {seconds:.2f} s ({described})")
                result["trim"] = {
                    "seconds": seconds,
                    "sessions": counts.trimmed_sessions,
                    "messages": counts.trimmed_messages,
                }
        return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.partitions", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument(
        "--no-trim-at-largest",
        action="store_true",
        help="skip the row-deleting comparison at the largest size (it reads every history)",
    )
    parser.add_argument("--output", type=Path, help="default: bench/results/partitions.json")
    args = parser.parse_args(argv)
    sessions, sizes, reps = SESSIONS, sorted(args.sizes), 300
    output = args.output or ROOT / "bench" / "results" / "partitions.json"
    if smoke_mode():
        sessions, sizes, reps = 20, [1_000, 5_000], 5
        output = args.output or Path(tempfile.mkdtemp(prefix="agentledger-bench-smoke-")) / "p.json"
    results: dict[str, Any] = {
        "meta": {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "sessions": sessions,
            "per_month": PER_MONTH,
            "note": "shared machine: other processes ran meanwhile",
        }
    }
    for size in sizes:
        trim = not (args.no_trim_at_largest and size == sizes[-1])
        results[str(size)] = asyncio.run(measure(size, sessions, trim=trim, reps=reps))
    results["meta"]["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(results, indent=2) + "\n")
    temporary.replace(output)
    log(f"results written to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
