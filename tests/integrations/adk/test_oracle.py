"""LedgerSessionService against ADK's own InMemorySessionService: the same operations, equal
results, on PostgreSQL and SQLite (see oracle.py for what is compared)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from google.adk.sessions.base_session_service import GetSessionConfig

from agentledger import Ledger
from agentledger.integrations.adk import LedgerSessionService
from tests.integrations.adk.oracle import Pair, event


@pytest.fixture
def pair(ledger: Ledger) -> Pair:
    return Pair(LedgerSessionService(ledger))


async def test_a_scripted_conversation_with_every_state_scope(pair: Pair) -> None:
    state = {"topic": "trip", "app:model": "m1", "user:lang": "de", "temp:scratch": 1}
    await pair.create("travel", "ana", "s1", state)
    await pair.create("travel", "ana", "s1", {})  # taken: both refuse
    await pair.create("travel", "ben", "s1", {"user:lang": "en"})  # ids are per user
    await pair.create("travel", "ana", " s2 ", None)  # ADK strips ids
    await pair.get("travel", "ana", "s2", None)

    await pair.append("travel", "ana", "s1", event("user", "Oslo?", timestamp=1000.5))
    delta = {"city": "Oslo", "app:hits": 1, "user:home": "Bergen", "temp:t": "x"}
    await pair.append(
        "travel", "ana", "s1", event("planner", "Oslo.", timestamp=1000.25, delta=delta)
    )
    await pair.append("travel", "ana", "s1", event("planner", None, timestamp=1001.0, call="c1"))
    await pair.append(
        "travel", "ana", "s1", event("planner", None, timestamp=1001.0, response="c1")
    )
    await pair.append(
        "travel", "ana", "s1", event("planner", "part", timestamp=1002.0, partial=True)
    )
    await pair.append("travel", "ana", "s1", event("planner", "Done.", timestamp=1003.123456789))
    await pair.append("travel", "nobody", "s1", event("user", "x", timestamp=1004.0))

    for config in (
        None,
        GetSessionConfig(num_recent_events=0),
        GetSessionConfig(num_recent_events=2),
        GetSessionConfig(num_recent_events=50),
        GetSessionConfig(after_timestamp=1000.5),
        GetSessionConfig(after_timestamp=1001.0),
        GetSessionConfig(num_recent_events=3, after_timestamp=1000.0),
        GetSessionConfig(after_timestamp=5000.0),
    ):
        await pair.get("travel", "ana", "s1", config)
    await pair.get("travel", "ben", "s1", None)  # sees the app's state, not ana's
    await pair.get("travel", "ana", "missing", None)
    await pair.get("other-app", "ana", "s1", None)
    await pair.user_state("travel", "ana")
    await pair.user_state("travel", "nobody")
    await pair.list("travel", "ana")
    await pair.list("travel", None)
    await pair.list("other-app", None)

    await pair.delete("travel", "ana", "s1")
    await pair.delete("travel", "ana", "missing")
    await pair.get("travel", "ana", "s1", None)
    await pair.list("travel", None)
    await pair.user_state("travel", "ana")  # user state outlives the session
    await pair.create("travel", "ana", "s1", {"again": True})
    await pair.get("travel", "ana", "s1", None)


APPS = ("app", "app:2", "a%3A")
USERS = ("u1", "u2")
IDS = ("s1", "2", "x:y")


def _delta(rng: random.Random) -> dict[str, Any]:
    keys = ["k", "app:k", "user:k", "temp:k", "n", "user:n"]
    values: list[Any] = [rng.randint(0, 9), "text", None, [1, {"a": "b"}], {"nested": True}]
    return {key: rng.choice(values) for key in rng.sample(keys, rng.randint(0, 4))}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_operations_agree_with_the_oracle(pair: Pair, seed: int) -> None:
    rng = random.Random(seed)
    clock = 2000.0
    for _ in range(70):
        app, user, sid = rng.choice(APPS), rng.choice(USERS), rng.choice(IDS)
        action = rng.choices(
            ["create", "append", "get", "list", "delete", "user_state"], [4, 8, 4, 2, 1, 1]
        )[0]
        if action == "create":
            await pair.create(app, user, sid, _delta(rng))
        elif action == "append":
            clock += rng.choice([0.0, 0.001, 1.5])  # ties and steps
            made = event(
                rng.choice(["user", "agent"]),
                rng.choice(["hi", "ok", None]),
                timestamp=clock,
                delta=_delta(rng),
                call=rng.choice([None, "c"]),
                partial=rng.random() < 0.1 or None,
            )
            await pair.append(app, user, sid, made)
        elif action == "get":
            recent = rng.choice([None, 0, 1, 3])
            after = rng.choice([None, clock - 1.0, clock])
            config = (
                None
                if recent is None and after is None
                else GetSessionConfig(num_recent_events=recent, after_timestamp=after)
            )
            await pair.get(app, user, sid, config)
        elif action == "list":
            await pair.list(app, rng.choice([user, None]))
        elif action == "delete":
            await pair.delete(app, user, sid)
        else:
            await pair.user_state(app, user)
    for app in APPS:
        await pair.list(app, None)
        for user in USERS:
            for sid in IDS:
                await pair.get(app, user, sid, None)
