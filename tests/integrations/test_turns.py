"""Turns that never interleave: concurrent agent runs on one session each keep their items
together, through a turn lease in the session row (no connection held while the model thinks;
a crashed turn blocks the session for one lease at most)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from agents import Agent, Runner, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call

from agentledger import Ledger, LedgerTimeoutError, SessionAgent, SessionNotFoundError
from tests.support.items import fields

RUNS = 8


@function_tool
def lookup(topic: str) -> str:
    """Look a topic up."""
    return f"notes on {topic}"


def tool_turns(count: int) -> list[Any]:
    """``count`` turns, each: the model calls ``lookup``, gets its output, then answers."""
    steps: list[Any] = []
    for n in range(count):
        steps.append([function_call("lookup", {"topic": f"t{n}"}, call_id=f"call_{n}")])
        steps.append([assistant_message(f"answer {n}")])
    return steps


def turn_blocks(items: list[Any]) -> list[list[str]]:
    """The history cut into turns at each user message, as item kinds."""
    blocks: list[list[str]] = []
    for item in items:
        kind = fields(item).get("type") or "message"
        role = fields(item).get("role")
        if role == "user":
            blocks.append([])
        blocks[-1].append(f"{kind}:{role}" if role else kind)
    return blocks


async def test_concurrent_agent_runs_on_one_session_never_interleave(ledger: Ledger) -> None:
    model = ScriptedModel(tool_turns(RUNS))
    agent = SessionAgent(Agent(name="Researcher", model=model, tools=[lookup]), ledger)
    first = await agent.run("question 0", user_id="u1")
    sid = first.session_id

    results = await asyncio.gather(
        *(agent.run(f"question {n}", session_id=sid, user_id="u1") for n in range(1, RUNS))
    )
    assert {result.session_id for result in results} == {sid}
    items = await ledger.service.get_items(sid)
    expected = ["message:user", "function_call", "function_call_output", "message:assistant"]
    assert turn_blocks(items) == [expected] * RUNS
    # Each turn's tool call and its output belong together, and every call is there once.
    calls = [fields(i)["call_id"] for i in items if fields(i).get("type") == "function_call"]
    outputs = [
        fields(i)["call_id"] for i in items if fields(i).get("type") == "function_call_output"
    ]
    assert calls == outputs
    assert sorted(calls) == sorted(f"call_{n}" for n in range(RUNS))
    # The model of each turn saw every earlier turn whole.
    for call in model.calls:
        assert turn_blocks(list(call.input))[:-1] == [expected] * (len(turn_blocks(call.input)) - 1)


async def test_runner_run_inside_turn_keeps_plain_sessions_in_order(ledger: Ledger) -> None:
    session = ledger.agent_session("plain", user_id="u1", agent_name="Plain")
    model = ScriptedModel([[assistant_message(f"reply {n}")] for n in range(4)])
    agent = Agent(name="Plain", model=model)

    async def one(n: int) -> None:
        async with session.turn():
            await Runner.run(agent, f"ask {n}", session=session)

    await asyncio.gather(*(one(n) for n in range(4)))
    roles = [fields(item)["role"] for item in await session.get_items()]
    assert roles == ["user", "assistant"] * 4


async def test_a_crashed_turn_frees_the_session_after_its_lease(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    # A turn whose process died: it claimed the lease and will never renew nor release it.
    assert await svc.claim_turn(session.id, "dead-worker", lease=timedelta(seconds=1))
    assert not await svc.claim_turn(session.id, "other", lease=timedelta(seconds=1))
    started = time.monotonic()
    async with svc.turn(session.id, wait=timedelta(seconds=10)):
        waited = time.monotonic() - started
    assert 0.3 < waited < 5
    # Released at the end of the block: the next turn starts at once.
    started = time.monotonic()
    async with svc.turn(session.id, wait=timedelta(0)):
        pass
    assert time.monotonic() - started < 1


async def test_a_long_turn_keeps_its_lease(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    lease = timedelta(milliseconds=600)
    async with svc.turn(session.id, lease=lease):
        await asyncio.sleep(2)  # three leases long: renewed meanwhile
        assert not await svc.claim_turn(session.id, "intruder", lease=lease)
    assert await svc.claim_turn(session.id, "next", lease=lease)


async def test_waiting_too_long_for_a_turn_raises_a_timeout(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    assert await svc.claim_turn(session.id, "another-run")
    with pytest.raises(LedgerTimeoutError, match="in another turn"):
        async with svc.turn(session.id, wait=timedelta(milliseconds=200)):
            pytest.fail("entered a turn that was held")


async def test_a_cancelled_turn_releases_its_lease(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    entered = asyncio.Event()

    async def stuck() -> None:
        async with svc.turn(session.id):
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(stuck())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await svc.claim_turn(session.id, "next", lease=timedelta(seconds=5))


async def test_turns_respect_ownership_and_validate_arguments(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("owner", "A")
    with pytest.raises(SessionNotFoundError):
        async with svc.turn(session.id, user_id="intruder"):
            pytest.fail("entered another user's turn")
    with pytest.raises(SessionNotFoundError):
        await svc.claim_turn(uuid.uuid4(), "h")
    with pytest.raises(TypeError, match="timedelta"):
        await svc.claim_turn(session.id, "h", lease=30)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        async with svc.turn(session.id, lease=timedelta(0)):
            pass
    with pytest.raises(ValueError, match="holder"):
        await svc.claim_turn(session.id, "x" * 65)
    # The owner's turn is untouched by all that.
    async with svc.turn(session.id, user_id="owner", wait=timedelta(0)):
        pass
    another = ledger.agent_session(str(session.id), user_id="intruder")
    with pytest.raises(SessionNotFoundError):
        async with another.turn():
            pass


async def test_a_turn_on_a_new_session_creates_it(ledger: Ledger) -> None:
    by_name = ledger.agent_session("fresh-name", user_id="u1", agent_name="A")
    async with by_name.turn():
        await by_name.add_items([{"role": "user", "content": "hi"}])
    new_id = uuid.uuid4()
    by_id = ledger.agent_session(str(new_id), user_id="u1", agent_name="A")
    async with by_id.turn():
        pass
    record = await ledger.service.get_session(new_id, user_id="u1")
    assert record is not None
    assert record.agent_name == "A"


async def test_streamed_runs_take_turns_too(ledger: Ledger) -> None:
    model = ScriptedModel([[assistant_message(f"streamed {n}")] for n in range(3)])
    agent = SessionAgent(Agent(name="Streamer", model=model), ledger)
    session = await ledger.service.create_session("u1", "Streamer")

    async def one(n: int) -> None:
        run = await agent.run_streamed(f"ask {n}", session_id=session.id, user_id="u1")
        async for _event in run.stream_events():
            pass

    await asyncio.gather(*(one(n) for n in range(3)))
    roles = [fields(item)["role"] for item in await ledger.service.get_items(session.id)]
    assert roles == ["user", "assistant"] * 3
    async with ledger.service.turn(session.id, wait=timedelta(0)):
        pass  # every streamed run gave its turn back


# -- regressions from the hostile pass ------------------------------------------------------------


class SlowModel(ScriptedModel):
    """A scripted model that takes ``delay`` seconds per answer (a model thinking)."""

    def __init__(self, steps: list[Any], delay: float) -> None:
        super().__init__(steps)
        self.delay = delay

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(self.delay)
        return await super().get_response(*args, **kwargs)


async def test_a_dropped_streamed_run_keeps_its_turn_until_it_is_over(ledger: Ledger) -> None:
    slow = SessionAgent(
        Agent(name="Slow", model=SlowModel([[assistant_message("slow answer")]], 0.5)), ledger
    )
    quick = SessionAgent(Agent(name="Quick", model=ScriptedModel(tool_turns(1))), ledger)
    quick.agent.tools = [lookup]
    session = await ledger.service.create_session("u1", "Slow")
    stream = await slow.run_streamed("slow question", session_id=session.id, user_id="u1")
    del stream  # the caller went away; the run goes on in the background
    await quick.run("quick question", session_id=session.id, user_id="u1")
    items = await ledger.service.get_items(session.id)
    assert turn_blocks(items) == [
        ["message:user", "message:assistant"],
        ["message:user", "function_call", "function_call_output", "message:assistant"],
    ]


async def test_another_user_cannot_release_a_turn(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("alice", "A")
    async with svc.turn(session.id, user_id="alice") as holder:
        with pytest.raises(SessionNotFoundError):
            await svc.release_turn(session.id, holder, user_id="mallory")
        assert not await svc.claim_turn(session.id, "bob", user_id="alice")
    with pytest.raises(SessionNotFoundError):
        await svc.release_turn(uuid.uuid4(), "h")


async def test_a_cancellation_right_after_the_claim_gives_the_turn_back(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    claim = type(svc).claim_turn

    async def claimed_then_cancelled(*args: Any, **kwargs: Any) -> bool:
        assert await claim(*args, **kwargs)  # committed...
        raise asyncio.CancelledError  # ... and the caller is cancelled before it hears so

    monkeypatch.setattr(type(svc), "claim_turn", claimed_then_cancelled)
    with pytest.raises(asyncio.CancelledError):
        async with svc.turn(session.id):
            pytest.fail("entered")
    monkeypatch.undo()
    async with svc.turn(session.id, wait=timedelta(0)):
        pass  # free at once, not after a lease


async def test_turns_are_reentrant_and_leases_have_a_floor(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    async with (
        svc.turn(session.id, wait=timedelta(0)) as outer,
        svc.turn(session.id, wait=timedelta(0)) as inner,
    ):
        assert inner == outer
    model = ScriptedModel([[assistant_message("inside")]])
    agent = SessionAgent(Agent(name="A", model=model), ledger, turn_wait=timedelta(0))
    handle = ledger.agent_session(str(session.id), user_id="u1")
    async with handle.turn():
        await agent.run("hello", session_id=session.id, user_id="u1")
    with pytest.raises(ValueError, match="at least"):
        async with svc.turn(session.id, lease=timedelta(milliseconds=1)):
            pass
    with pytest.raises(ValueError, match="at least"):
        SessionAgent(Agent(name="A", model=model), ledger, turn_lease=timedelta(milliseconds=5))


async def test_a_turn_that_outlived_its_lease_says_so(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")

    async def stalled() -> None:
        async with svc.turn(session.id, lease=timedelta(milliseconds=500)):
            time.sleep(1.2)  # noqa: ASYNC251 - a stalled event loop: nothing renews meanwhile
            await asyncio.sleep(0.3)

    with pytest.raises(LedgerTimeoutError, match="outlived its lease"):
        await stalled()


async def test_leases_run_on_the_database_clock(pg_database_url: str) -> None:
    """Application hosts whose clocks disagree by more than a lease still exclude each other:
    PostgreSQL times leases by its own clock."""
    from datetime import UTC, datetime

    from agentledger import SessionService

    async with Ledger.from_url(pg_database_url) as ledger:
        session = await ledger.service.create_session("u1", "A")
        ahead = SessionService(
            ledger.unit_of_work, clock=lambda: datetime.now(UTC) + timedelta(minutes=2)
        )
        async with ledger.service.turn(session.id):
            assert not await ahead.claim_turn(session.id, "skewed-host")
