"""Google ADK sessions: LedgerSessionService against ADK's own DatabaseSessionService.

Both on the same PostgreSQL server (each in its own throwaway database), loaded through their
public APIs with the same sessions and events, then measured round-robin in the same run:

* ``list_sessions`` of an app whose user has ``sessions`` sessions (each with a little state);
* ``get_session`` of one session holding ``events`` events: whole, and its 50 most recent
  (``GetSessionConfig(num_recent_events=50)``).

``python -m bench --only adk``. Sizes follow the run's mode (full: 10,000 sessions and 3,000
events; quick: a fifth of that; smoke: a token size).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig
from google.adk.sessions.database_session_service import DatabaseSessionService
from google.genai import types

from agentledger import Ledger
from agentledger.integrations.adk import LedgerSessionService

from . import pg

APP = "bench_app"
USER = "bench-user"
#: (sessions, events, list repetitions, get repetitions) per mode.
SIZES = {
    "full": (10_000, 3_000, 15, 40),
    "quick": (2_000, 600, 8, 20),
    "smoke": (20, 10, 2, 2),
}
#: Concurrent API calls while loading.
LOADERS = 8


class Named:
    """A session service with the name the results use."""

    def __init__(self, name: str, service: BaseSessionService) -> None:
        self.name = name
        self.service = service


def _event(n: int) -> Event:
    author = "user" if n % 2 == 0 else "assistant_agent"
    text = f"message {n}: " + "the quick brown fox jumps over the lazy dog " * 4
    return Event(
        author=author,
        invocation_id=f"inv-{n // 2}",
        content=types.Content(
            role="user" if author == "user" else "model", parts=[types.Part(text=text)]
        ),
        actions=EventActions(state_delta={"turn": n} if n % 10 == 0 else {}),
    )


async def _load(service: BaseSessionService, sessions: int, events: int) -> str:
    """``sessions`` sessions of :data:`USER` (a little state each), then one more with
    ``events`` events; returns that one's id."""
    gate = asyncio.Semaphore(LOADERS)

    async def one(i: int) -> None:
        async with gate:
            await service.create_session(
                app_name=APP, user_id=USER, session_id=f"s{i:05d}", state={"n": i, "tag": "bench"}
            )

    await asyncio.gather(*(one(i) for i in range(sessions - 1)))
    big = await service.create_session(app_name=APP, user_id=USER, session_id="big")
    for n in range(events):
        await service.append_event(big, _event(n))
    return big.id


async def measure(
    mode: str, ledger: Ledger, adk_database: str, vacuum: Callable[[], Awaitable[None]]
) -> dict[str, Any]:
    from .run import interleaved, log, summary

    sessions, events, list_reps, get_reps = SIZES[mode]
    theirs = DatabaseSessionService(
        db_url=pg.database_url(adk_database, driver="asyncpg"), pool_size=8, max_overflow=0
    )
    services = [
        Named("agentledger", LedgerSessionService(ledger)),
        Named("adk_database", theirs),
    ]
    try:
        big = ""
        for named in services:
            log(f"adk: loading {sessions:,} sessions and {events:,} events into {named.name}")
            big = await _load(named.service, sessions, events)
        await vacuum()  # settle both databases as autovacuum would

        async def listing(c: Named, rep: int) -> None:
            listed = await c.service.list_sessions(app_name=APP, user_id=USER)
            assert len(listed.sessions) == sessions, (c.name, len(listed.sessions))

        async def whole(c: Named, rep: int) -> None:
            found = await c.service.get_session(app_name=APP, user_id=USER, session_id=big)
            assert found is not None, c.name
            assert len(found.events) == events, c.name

        recent = GetSessionConfig(num_recent_events=50)

        async def tail(c: Named, rep: int) -> None:
            found = await c.service.get_session(
                app_name=APP, user_id=USER, session_id=big, config=recent
            )
            assert found is not None, c.name
            assert len(found.events) == min(50, events), c.name

        results: dict[str, Any] = {"sessions": sessions, "events": events}
        for key, operation, reps in (
            ("list_sessions", listing, list_reps),
            ("get_session", whole, get_reps),
            ("get_session_recent50", tail, get_reps),
        ):
            log(f"adk: {key}")
            await interleaved(services, 1, operation, _name)  # warm up
            samples = await interleaved(services, reps, operation, _name)
            results[key] = {name: summary(values) for name, values in samples.items()}
        return results
    finally:
        await theirs.close()


def _name(named: Named) -> str:
    return named.name
