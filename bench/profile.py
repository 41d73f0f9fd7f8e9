"""Where the time of agentledger's hot paths goes: round trips, then a pyinstrument profile.

``python -m bench.profile [--op append|tail|full|list] [--calls N] [--html out.html]`` runs on
a throwaway database (created and dropped), prints every round trip one call makes (what
asyncpg sends to the server), then profiles ``N`` calls with pyinstrument (``pip install
agentledger[bench]``). With ``AGENTLEDGER_BENCH_SMOKE=1`` ``N`` defaults to a token 20 calls.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from asyncpg.connection import Connection
from asyncpg.prepared_stmt import PreparedStatement

from agentledger import Ledger

from . import data, pg, smoke_mode

_trips: list[str] | None = None


def _record(label: str) -> None:
    if _trips is not None:
        _trips.append(label)


def _wrap(cls: type, method: str, describe: Callable[..., str]) -> None:
    original = getattr(cls, method)

    @functools.wraps(original)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        _record(describe(self, *args, **kwargs))
        return await original(self, *args, **kwargs)

    setattr(cls, method, wrapper)


def _first_line(sql: object) -> str:
    text = " ".join(str(sql).split())
    return text[:90] + ("..." if len(text) > 90 else "")


def instrument_asyncpg() -> None:
    """Count what goes over the wire: each of these is (at least) one round trip."""
    _wrap(Connection, "execute", lambda _c, sql, *a, **k: f"execute  {_first_line(sql)}")
    _wrap(Connection, "fetchrow", lambda _c, sql, *a, **k: f"fetchrow {_first_line(sql)}")
    _wrap(Connection, "fetch", lambda _c, sql, *a, **k: f"fetch    {_first_line(sql)}")
    _wrap(Connection, "prepare", lambda _c, sql, *a, **k: f"PREPARE  {_first_line(sql)}")
    _wrap(
        PreparedStatement,
        "fetch",
        lambda s, *a, **k: f"exec     {_first_line(s.get_query())}",
    )


async def main_async(op: str, calls: int, html: Path | None) -> None:
    global _trips
    async with pg.throwaway_databases("profile") as names:
        url = pg.database_url(names["profile"])
        ledger = Ledger.from_url(url)
        try:
            await ledger.upgrade()
            admin = await asyncpg.connect(url)
            sid = uuid.uuid4()
            await data.fill_ledger_sessions(admin, [(sid, "u", 1000)])
            await data.add_empty_ledger_sessions(admin, "u", 1000)
            await admin.close()
            session = ledger.agent_session(str(sid), user_id="u", agent_name="bench")
            operations: dict[str, Callable[[int], Awaitable[Any]]] = {
                "append": lambda i: session.add_items(data.turn_items(i)),  # type: ignore[arg-type]
                "tail": lambda i: session.get_items(50),
                "full": lambda i: session.get_items(),
                "list": lambda i: ledger.service.list_user_sessions("u", 20),
            }
            operation = operations[op]
            for i in range(20):  # warm: pool, prepared statements, compiled cache
                await operation(i)
            _trips = []
            await operation(0)
            print(f"round trips of one {op}:")
            for line in _trips:
                print("   ", line)
            _trips = None

            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0001, async_mode="enabled")
            profiler.start()
            for i in range(calls):
                await operation(i)
            profiler.stop()
            print(profiler.output_text(unicode=True, color=False, show_all=False))
            if html is not None:
                await asyncio.to_thread(html.write_text, profiler.output_html())
        finally:
            await ledger.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--op", choices=["append", "tail", "full", "list"], default="tail")
    parser.add_argument("--calls", type=int, default=20 if smoke_mode() else 2000)
    parser.add_argument("--html", type=Path)
    args = parser.parse_args()
    instrument_asyncpg()
    asyncio.run(main_async(args.op, args.calls, args.html))


if __name__ == "__main__":
    main()
