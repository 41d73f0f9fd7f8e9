"""The web workload: what the HTTP API adds to a direct service call, for a turn append (a
user and an assistant message, ``POST .../messages``) and a tail read (the last 50 messages,
``GET .../messages?after_seq=...&limit=50``), interleaved on one ledger:

* ``service``: ``ledger.service.add_messages`` / ``get_messages`` called directly;
* ``api-asgi``: the router mounted in a host app (its ``current_user`` a constant), called
  in-process through httpx's ASGI transport: FastAPI, validation and the JSON response, but no
  socket;
* ``api-http``: the same app under uvicorn on a loopback port, called through httpx over TCP
  (client and server share this process and its CPU, as they would not in production).

Reported as each one's p50 and its ratio to ``service``.

It also measures what the NOTIFY trigger of revision ``agentledger_0007`` costs the append:
the same service append on two databases, interleaved, one with the trigger (and a connection
LISTENing, as a server with event streams has) and one where the trigger was dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import httpx
import uvicorn
from fastapi import FastAPI

from agentledger import Ledger
from agentledger.web import create_router

from . import pg

USER = "bench-web"


def _app(ledger: Ledger) -> FastAPI:
    async def current_user() -> str:
        return USER

    app = FastAPI()
    app.include_router(create_router(ledger, current_user=current_user), prefix="/api/v1")
    return app


@contextlib.asynccontextmanager
async def _served(app: FastAPI) -> AsyncIterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        server.should_exit = True
        await task


class Contender:
    def __init__(self, name: str, ledger: Ledger, client: httpx.AsyncClient | None) -> None:
        self.name = name
        self.ledger = ledger
        self.client = client

    async def append(self, sid: str, rep: int) -> None:
        messages = [
            {"role": "user", "content": f"question {rep}: what is the weather like today?"},
            {"role": "assistant", "content": f"answer {rep}: sunny, 21 degrees, light wind."},
        ]
        if self.client is None:
            await self.ledger.service.add_messages(sid, messages, user_id=USER)
            return
        response = await self.client.post(f"/sessions/{sid}/messages", json={"messages": messages})
        assert response.status_code == 201, response.text

    async def tail(self, sid: str, last_seq: int) -> int:
        after = max(last_seq - 50, 0)
        if self.client is None:
            page = await self.ledger.service.get_messages(
                sid, after_seq=after, limit=50, user_id=USER
            )
            return len(page.items)
        response = await self.client.get(
            f"/sessions/{sid}/messages", params={"after_seq": after, "limit": 50}
        )
        return len(response.json()["messages"])


async def web_workload(
    url: str,
    *,
    pool_size: int,
    turns: int,
    tail_size: int,
    tail_reps: int,
    warmup: int,
    interleaved: Callable[..., Awaitable[dict[str, list[float]]]],
    summary: Callable[[Sequence[float]], dict[str, float]],
) -> dict[str, Any]:
    async with Ledger.from_url(url, pool_size=pool_size, max_overflow=0) as ledger:
        app = _app(ledger)
        asgi = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench/api/v1"
        )
        async with asgi, _served(app) as base, httpx.AsyncClient(base_url=base) as http:
            contenders = [
                Contender("service", ledger, None),
                Contender("api-asgi", ledger, asgi),
                Contender("api-http", ledger, http),
            ]
            sessions = {
                c.name: str((await ledger.service.create_session(USER, "Bench")).id)
                for c in contenders
            }

            async def append(c: Contender, rep: int) -> None:
                await c.append(sessions[c.name], rep)

            await interleaved(contenders, warmup, append, lambda c: c.name)
            appends = await interleaved(contenders, turns, append, lambda c: c.name)

            tails: dict[str, str] = {}
            filler = [{"role": "user", "content": f"history message {n}"} for n in range(1000)]
            for c in contenders:
                sid = str((await ledger.service.create_session(USER, "Bench")).id)
                for _ in range(max(tail_size // len(filler), 1)):
                    await ledger.service.add_messages(sid, filler[: min(tail_size, len(filler))])
                tails[c.name] = sid
            last = {
                name: (await ledger.service.describe_session(sid)).last_seq  # type: ignore[union-attr]
                for name, sid in tails.items()
            }

            async def tail(c: Contender, rep: int) -> None:
                count = await c.tail(tails[c.name], last[c.name])
                assert count == min(50, last[c.name]), (c.name, count)

            await interleaved(contenders, warmup, tail, lambda c: c.name)
            reads = await interleaved(contenders, tail_reps, tail, lambda c: c.name)
    notify = await notify_cost(
        url, pool_size=pool_size, turns=turns, warmup=warmup, interleaved=interleaved
    )
    append_p50 = {name: summary(values) for name, values in appends.items()}
    tail_p50 = {name: summary(values) for name, values in reads.items()}
    base_append, base_tail = append_p50["service"]["p50_ms"], tail_p50["service"]["p50_ms"]
    notify_p50 = {name: summary(values) for name, values in notify.items()}
    return {
        "notify_trigger": {
            **notify_p50,
            "with/without p50": round(
                notify_p50["with-trigger"]["p50_ms"] / notify_p50["without-trigger"]["p50_ms"], 3
            ),
        },
        "turn_append": append_p50,
        "tail50": tail_p50,
        "vs_service_p50": {
            name: {
                "turn_append": round(append_p50[name]["p50_ms"] / base_append, 3),
                "tail50": round(tail_p50[name]["p50_ms"] / base_tail, 3),
            }
            for name in append_p50
        },
    }


async def notify_cost(
    url: str,
    *,
    pool_size: int,
    turns: int,
    warmup: int,
    interleaved: Callable[..., Awaitable[dict[str, list[float]]]],
) -> dict[str, list[float]]:
    """Turn appends with and without the NOTIFY trigger, interleaved (two databases)."""
    async with pg.throwaway_databases("notify_off") as names:
        other = pg.database_url(names["notify_off"])
        ledgers = {
            "with-trigger": Ledger.from_url(url, pool_size=pool_size, max_overflow=0),
            "without-trigger": Ledger.from_url(other, pool_size=pool_size, max_overflow=0),
        }
        await ledgers["without-trigger"].upgrade()
        admin = await asyncpg.connect(other)
        listening = await asyncpg.connect(url)
        try:
            for trigger in ("agentledger_appended_update", "agentledger_appended_insert"):
                await admin.execute(f"DROP TRIGGER {trigger} ON agent_sessions")
            await listening.add_listener("agentledger_appended", lambda *_args: None)
            sessions = {
                name: (await one.service.create_session(USER, "Bench")).id
                for name, one in ledgers.items()
            }
            names_of = list(ledgers)

            async def append(name: str, rep: int) -> None:
                await ledgers[name].service.add_messages(
                    sessions[name],
                    [
                        {"role": "user", "content": f"question {rep}"},
                        {"role": "assistant", "content": f"answer {rep}"},
                    ],
                )

            await interleaved(names_of, warmup, append, lambda name: name)
            return await interleaved(names_of, turns, append, lambda name: name)
        finally:
            await listening.close()
            await admin.close()
            for one in ledgers.values():
                await one.dispose()
