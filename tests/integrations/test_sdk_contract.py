"""The Agents SDK's newest session contract, on both backends: the run context (``wrapper``) on
every history method and the tenant taken from it, ``limit`` (0, and damaged rows not counted),
items the SDK's wrappers write (``EncryptedSession`` envelopes), a ``TypeError`` for values of
the wrong type, ``NullPool``, and several event loops (``Runner.run_sync``, threads)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import pytest
from agents import Agent, RunContextWrapper, Runner
from agents.extensions.memory.encrypt_session import EncryptedSession
from agents.memory import SessionSettings
from agents.memory.session import _session_accepts_wrapper
from agents.testing import ScriptedModel, assistant_message
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from agentledger import (
    ConfigurationError,
    InvalidInputError,
    InvalidItemTypeError,
    Ledger,
)
from agentledger.integrations.openai_agents import ContextUserSession, LedgerSession
from tests.conftest import run_sync
from tests.support.damage import damage_row
from tests.support.items import as_items, contents, texts


@dataclass
class AppContext:
    """What a web application puts in the run context: who the request is for."""

    user_id: str


def user_of(run: RunContextWrapper[Any]) -> str:
    return cast(AppContext, run.context).user_id


# -- the run context ---------------------------------------------------------------------------


async def test_every_history_method_takes_the_run_context(ledger: Ledger) -> None:
    plain = ledger.agent_session("chat", user_id="u1")
    shared = ledger.agent_session("chat", user_from_context=user_of)
    # The SDK passes the context only to sessions whose four history methods all accept it.
    assert _session_accepts_wrapper(plain)
    assert _session_accepts_wrapper(shared)
    assert isinstance(shared, ContextUserSession)


async def test_one_session_object_serves_each_user_of_the_run_context(ledger: Ledger) -> None:
    shared = ledger.agent_session("support", user_from_context=user_of, agent_name="Helper")
    for user, reply in (("alice", "Hi Alice"), ("bob", "Hi Bob")):
        model = ScriptedModel([[assistant_message(reply)]])
        await Runner.run(
            Agent(name="Helper", model=model),
            f"I am {user}",
            session=shared,
            context=AppContext(user),
        )
    model = ScriptedModel([[assistant_message("You are Alice")]])
    await Runner.run(
        Agent(name="Helper", model=model), "Who am I?", session=shared, context=AppContext("alice")
    )
    # Alice's second run saw her own history only.
    assert texts(model.calls[0].input) == ["I am alice", "Hi Alice", "Who am I?"]

    alice = ledger.agent_session("support", user_id="alice")
    bob = ledger.agent_session("support", user_id="bob")
    assert texts(await alice.get_items()) == [
        "I am alice",
        "Hi Alice",
        "Who am I?",
        "You are Alice",
    ]
    assert texts(await bob.get_items()) == ["I am bob", "Hi Bob"]
    assert await alice.resolve() != await bob.resolve()
    sessions = await ledger.service.list_user_sessions("alice")
    assert [s.agent_name for s in sessions] == ["Helper"]

    # Outside a run there is no context: the object never guesses a user...
    with pytest.raises(TypeError, match="takes its user from the run context"):
        await shared.get_items()
    # ... unless it was given one for such calls, or is asked for a user's session.
    assert texts(await shared.for_user("bob").get_items()) == ["I am bob", "Hi Bob"]
    fallback = ledger.agent_session("support", user_id="bob", user_from_context=user_of)
    assert texts(await fallback.get_items()) == ["I am bob", "Hi Bob"]
    # Regression: a run without context= acts for the fallback user, not the callable's crash.
    model = ScriptedModel([[assistant_message("Hi again Bob")]])
    await Runner.run(Agent(name="Helper", model=model), "Me again", session=fallback)
    assert texts(await bob.get_items())[-2:] == ["Me again", "Hi again Bob"]
    await bob.pop_item()
    await bob.pop_item()
    wrapper = RunContextWrapper(context=AppContext("alice"))
    assert len(await fallback.get_items(wrapper=wrapper)) == 4
    assert (await fallback.pop_item(wrapper=wrapper)) is not None
    await fallback.clear_session(wrapper=wrapper)
    assert await alice.get_items() == []
    assert texts(await bob.get_items()) == ["I am bob", "Hi Bob"]


async def test_a_context_without_a_user_id_is_refused(ledger: Ledger) -> None:
    shared = ledger.agent_session("chat", user_from_context=lambda run: run.context)
    with pytest.raises(TypeError, match="must return the user id"):
        await shared.get_items(wrapper=RunContextWrapper(context=42))
    # Runner.run without context= passes a wrapper around None: no run context, no user.
    with pytest.raises(TypeError, match="takes its user from the run context"):
        await shared.get_items(wrapper=RunContextWrapper(context=None))
    with pytest.raises(InvalidInputError, match="user_id"):
        await shared.add_items(
            [{"role": "user", "content": "x"}], wrapper=RunContextWrapper(context="")
        )


# -- limit -------------------------------------------------------------------------------------


async def test_limit_zero_is_empty_and_the_settings_limit_is_the_default(ledger: Ledger) -> None:
    session = ledger.agent_session("limits", user_id="u")
    await session.add_items([{"role": "user", "content": f"m{n}"} for n in range(5)])
    assert await session.get_items(limit=0) == []
    assert contents(await session.get_items(limit=2)) == ["m3", "m4"]
    capped = ledger.agent_session("limits", user_id="u", settings=SessionSettings(limit=3))
    assert contents(await capped.get_items()) == ["m2", "m3", "m4"]
    none = ledger.agent_session("limits", user_id="u", settings=SessionSettings(limit=0))
    assert await none.get_items() == []


async def test_damaged_rows_do_not_count_towards_a_limit(ledger: Ledger, backend: str) -> None:
    svc = ledger.service
    session = await svc.create_session("u", "a")
    await svc.add_messages(session.id, [{"role": "user", "content": f"m{n}"} for n in range(1, 8)])
    for seq in (5, 6):
        await damage_row(ledger, session.id, seq, backend)
    tail = await svc.get_items(session.id, limit=3)
    assert [item["content"] for item in tail] == ["m3", "m4", "m7"]
    sdk = ledger.agent_session(str(session.id), user_id="u")
    assert contents(await sdk.get_items(limit=4)) == ["m2", "m3", "m4", "m7"]
    # More than there is: every intact item, once.
    assert contents(await sdk.get_items(limit=50)) == ["m1", "m2", "m3", "m4", "m7"]
    # Regression: valid JSON that is not an object (an UPDATE outside agentledger) is damage.
    async with ledger.engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE conversation_messages SET item = '[1, 2]' "
                "WHERE session_id = :sid AND seq = 2"
            ),
            {"sid": session.id.hex if backend == "sqlite" else session.id},
        )
    assert contents(await sdk.get_items(limit=3)) == ["m3", "m4", "m7"]
    assert contents(await sdk.get_items()) == ["m1", "m3", "m4", "m7"]
    # So is JSON null (the column is NOT NULL: a null there is JSON's).
    async with ledger.engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE conversation_messages SET item = 'null' WHERE session_id = :sid AND seq = 3"
            ),
            {"sid": session.id.hex if backend == "sqlite" else session.id},
        )
    assert contents(await sdk.get_items()) == ["m1", "m4", "m7"]
    assert [m.seq for m in await svc.get_messages(session.id)] == [1, 4, 7]


# -- what the SDK's wrappers store -------------------------------------------------------------


async def test_encrypted_session_wraps_a_ledger_session(ledger: Ledger) -> None:
    key = Fernet.generate_key().decode("ascii")
    inner = ledger.agent_session("secret-chat", user_id="u")
    encrypted = EncryptedSession("secret-chat", cast(Any, inner), encryption_key=key, ttl=3600)
    model = ScriptedModel([[assistant_message("Noted.")], [assistant_message("Blue.")]])
    agent = Agent(name="Keeper", model=model)
    await Runner.run(agent, "My colour is blue", session=encrypted)
    await Runner.run(agent, "What is my colour?", session=encrypted)
    # The model saw the decrypted history; the store holds only envelopes, exactly.
    assert texts(model.calls[1].input) == ["My colour is blue", "Noted.", "What is my colour?"]
    stored = await inner.get_items()
    assert len(stored) == 4
    assert all(set(item) == {"__enc__", "kid", "payload", "v"} for item in stored)
    assert not any("blue" in str(item) for item in stored)
    record = await ledger.service.get_session(await inner.resolve() or uuid.uuid4())
    assert record is not None
    assert [m.item for m in record.messages] == stored
    assert {m.item_type for m in record.messages} == {"opaque"}
    popped = await encrypted.pop_item()
    assert popped is not None
    assert texts([popped]) == ["Blue."]
    assert len(await inner.get_items()) == 3


async def test_any_json_object_item_round_trips_exactly(ledger: Ledger) -> None:
    session = ledger.agent_session("odd-items", user_id="u")
    odd: list[dict[str, Any]] = [
        {"__enc__": 1, "kid": "k", "payload": "gAAAA", "v": 1},
        {"custom": {"nested": [1, 2.5, None, True]}, "note": "a wrapper's own record"},
        {},
    ]
    await session.add_items(as_items(odd))
    assert await session.get_items() == odd


async def test_a_value_of_the_wrong_type_is_a_type_error_and_writes_nothing(
    ledger: Ledger,
) -> None:
    session = ledger.agent_session("types", user_id="u")
    for bad in (
        {"role": "user", "content": "x", "extra": {1, 2}},
        {"role": "user", "content": "x", "extra": object()},
        {"role": "user", "content": "x", "extra": {1: "a"}},
        cast(Any, "not an item"),
    ):
        with pytest.raises(TypeError) as caught:
            await session.add_items(as_items([{"role": "user", "content": "fine"}, bad]))
        assert isinstance(caught.value, InvalidInputError)
        assert isinstance(caught.value, InvalidItemTypeError)
    # A bad value (not a bad type) stays a ValueError only.
    with pytest.raises(InvalidInputError) as value_error:
        await session.add_items(as_items([{"role": "user", "content": "x", "n": float("nan")}]))
    assert not isinstance(value_error.value, TypeError)
    assert await session.get_items() == []


# -- pools and event loops ---------------------------------------------------------------------


def _turns(ledger: Ledger, name: str, count: int) -> int:
    """``count`` turns through Runner.run_sync (a new event loop per call); the items stored."""
    session = ledger.agent_session(name, user_id="u")
    for n in range(count):
        model = ScriptedModel([[assistant_message(f"reply {n}")]])
        Runner.run_sync(Agent(name="Sync", model=model), f"turn {n}", session=session)
    return len(asyncio.run(session.get_items()))


@pytest.mark.parametrize("pool", ["default", "null"])
def test_run_sync_turns_on_new_event_loops(database_url: str, pool: str) -> None:
    kwargs: dict[str, Any] = {"poolclass": NullPool} if pool == "null" else {}
    ledger = Ledger.from_url(database_url, **kwargs)
    # A thread of its own, as in a plain synchronous program: run_sync uses the thread's
    # default event loop, which in the test's own thread is pytest-asyncio's.
    with ThreadPoolExecutor(1) as program:
        try:
            assert program.submit(_turns, ledger, "sync-chat", 3).result(timeout=120) == 6
        finally:
            program.submit(asyncio.run, ledger.dispose()).result(timeout=60)


def test_a_pool_shared_by_running_event_loops_names_the_fix(pg_database_url: str) -> None:
    """Pooled asyncpg connections cannot move between event loops that are both running: the
    second loop gets a ConfigurationError saying what to do, not asyncpg's RuntimeError."""
    ledger = Ledger.from_url(pg_database_url)
    session = ledger.agent_session("loops", user_id="u")
    opened = threading.Event()
    finish = threading.Event()

    def first_loop() -> None:
        async def hold() -> None:
            await session.add_items([{"role": "user", "content": "first loop"}])
            opened.set()
            # This loop stays alive (its connection pooled) until the test is done.
            await asyncio.get_running_loop().run_in_executor(None, finish.wait)

        asyncio.run(hold())

    thread = threading.Thread(target=first_loop)
    thread.start()
    try:
        assert opened.wait(30)

        async def second() -> None:
            with pytest.raises(ConfigurationError, match="NullPool"):
                await session.get_items()

        asyncio.run(second())
    finally:
        finish.set()
        thread.join(30)
    assert not thread.is_alive()


def test_null_pool_is_accepted(database_url: str) -> None:
    async def use() -> list[Any]:
        async with Ledger.from_url(database_url, poolclass=NullPool) as ledger:
            session = ledger.agent_session("null", user_id="u")
            await session.add_items([{"role": "user", "content": "hi"}])
            return await session.get_items()

    assert contents(run_sync(use())) == ["hi"]


async def test_both_satisfy_the_session_protocol(ledger: Ledger) -> None:
    from agents.memory import Session

    plain = ledger.agent_session("p", user_id="u")
    assert isinstance(plain, LedgerSession)
    assert isinstance(plain, Session)
    assert isinstance(ledger.agent_session("p", user_from_context=user_of), Session)
