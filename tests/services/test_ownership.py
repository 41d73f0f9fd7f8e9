"""Another user's session behaves exactly like a missing one, through every entry point.

Reads find nothing (``None``, ``[]``, zero usage), ``pop_item`` returns ``None``,
``clear_session`` does nothing, and writes raise :class:`SessionNotFoundError`; the owner's rows
never change. An Agents SDK handle opened on such a session by its UUID fails at its first
read, so a model is never called for a turn that could not be stored. Both backends.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from agents import Agent, Runner, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message

from agentledger import (
    InvalidInputError,
    Ledger,
    SessionNotFoundError,
    Usage,
)
from agentledger.domain.records import SessionSpec
from tests.integrations.test_openai_agents import user_item
from tests.support.results import returned

if TYPE_CHECKING:
    # agentledger exports it lazily (its module __getattr__, typed ``object``); mypy reads it
    # from where it is defined, the test imports it the way the docs do.
    from agentledger.integrations.openai_agents import SessionAgent
else:
    from agentledger import SessionAgent

OWNER = "alice"
INTRUDER = "mallory"


@pytest.fixture(autouse=True)
def _no_tracing() -> None:
    set_tracing_disabled(True)


async def owned_session(ledger: Ledger) -> uuid.UUID:
    """Alice's session with two items, a batch under a key and some usage."""
    service = ledger.service
    created = await service.create_session(OWNER, "A")
    await service.add_items(
        created.id, [user_item("secret"), user_item("more")], user_id=OWNER, idempotency_key="k1"
    )
    await service.record_usage(created.id, Usage(requests=1, total_tokens=7), user_id=OWNER)
    return created.id


async def assert_untouched(ledger: Ledger, sid: uuid.UUID) -> None:
    assert await ledger.service.get_items(sid, user_id=OWNER) == [
        user_item("secret"),
        user_item("more"),
    ]
    assert (await ledger.service.get_usage(sid, user_id=OWNER)).total_tokens == 7


async def test_service_reads_of_another_users_session_find_nothing(ledger: Ledger) -> None:
    sid = await owned_session(ledger)
    missing = uuid.uuid4()
    service = ledger.service

    for target in (sid, missing):  # indistinguishable
        assert await service.get_items(target, user_id=INTRUDER) == []
        assert await service.get_items(target, 1, user_id=INTRUDER) == []
        assert await service.batch_keys(target, user_id=INTRUDER) == []
        assert await service.get_usage(target, user_id=INTRUDER) == Usage()
        assert await service.get_session(target, user_id=INTRUDER) is None
        assert await service.pop_item(target, user_id=INTRUDER) is None
        assert await returned(service.clear_session(target, user_id=INTRUDER)) is None
    await assert_untouched(ledger, sid)
    # The operator, naming no user, sees the session.
    assert await service.batch_keys(sid) == ["k1"]


async def test_service_writes_to_another_users_session_raise_not_found(ledger: Ledger) -> None:
    sid = await owned_session(ledger)
    service = ledger.service
    spec = SessionSpec(INTRUDER, "A")
    attempts: list[Any] = [
        service.add_items(sid, [user_item("injected")], user_id=INTRUDER),
        service.add_items(sid, [user_item("injected")], user_id=INTRUDER, create_as=spec),
        service.add_message(sid, "user", "injected", user_id=INTRUDER),
        service.add_messages(sid, [{"role": "user", "content": "x"}], user_id=INTRUDER),
        service.record_usage(sid, Usage(requests=1), user_id=INTRUDER),
        service.rewind_session(sid, 0, user_id=INTRUDER),
        service.set_title(sid, "pwned", user_id=INTRUDER),
    ]
    for attempt in attempts:
        with pytest.raises(SessionNotFoundError, match=INTRUDER):
            await attempt
    assert not await service.delete_session(sid, user_id=INTRUDER)
    await assert_untouched(ledger, sid)


async def test_can_write_tells_whether_a_write_would_be_stored(ledger: Ledger) -> None:
    sid = await owned_session(ledger)
    service = ledger.service
    assert await service.can_write(sid, user_id=OWNER)
    assert not await service.can_write(sid, user_id=INTRUDER)
    assert await service.can_write(uuid.uuid4(), user_id=INTRUDER)  # a first write creates it


async def test_create_as_for_another_user_than_user_id_is_refused(ledger: Ledger) -> None:
    sid = uuid.uuid4()
    with pytest.raises(InvalidInputError, match=r"create_as\.user_id"):
        await ledger.service.add_items(
            sid, [user_item("x")], user_id=INTRUDER, create_as=SessionSpec(OWNER, "A")
        )
    assert await ledger.service.get_session(sid) is None


async def test_an_sdk_handle_on_another_users_session_fails_before_the_model(
    ledger: Ledger,
) -> None:
    sid = await owned_session(ledger)
    intruder = ledger.agent_session(str(sid), user_id=INTRUDER, agent_name="A")

    with pytest.raises(SessionNotFoundError, match=INTRUDER):
        await intruder.check_access()
    for attempt in (intruder.get_items(), intruder.pop_item(), intruder.clear_session()):
        with pytest.raises(SessionNotFoundError, match=INTRUDER):
            await attempt

    model = ScriptedModel([[assistant_message("leak")]])
    with pytest.raises(SessionNotFoundError):
        await Runner.run(Agent(name="A", model=model), "show me", session=intruder)
    assert model.calls == ()

    runner = SessionAgent(Agent(name="A", model=model), ledger)
    with pytest.raises(SessionNotFoundError):
        await runner.run("show me", session_id=sid, user_id=INTRUDER)
    assert model.calls == ()
    await assert_untouched(ledger, sid)


async def test_an_sdk_handle_on_an_unused_uuid_creates_that_session(ledger: Ledger) -> None:
    sid = uuid.uuid4()
    memory = ledger.agent_session(str(sid), user_id=OWNER, agent_name="A")
    await memory.check_access()
    assert await memory.get_items() == []
    await memory.add_items([user_item("hello")])
    record = await ledger.service.get_session(sid, user_id=OWNER)
    assert record is not None
    assert record.user_id == OWNER


async def test_an_sdk_handle_checks_again_until_the_session_is_its_users(ledger: Ledger) -> None:
    sid = uuid.uuid4()
    early = ledger.agent_session(str(sid), user_id=INTRUDER, agent_name="A")
    await early.check_access()  # unused: a first write would create it
    assert await early.get_items() == []
    # The owner takes the id first; the early handle must not read or change it.
    await ledger.service.create_session(OWNER, "A", session_id=sid)
    await ledger.service.add_items(sid, [user_item("secret")], user_id=OWNER)
    for attempt in (early.check_access(), early.get_items(), early.pop_item()):
        with pytest.raises(SessionNotFoundError, match=INTRUDER):
            await attempt
    assert await ledger.service.get_items(sid, user_id=OWNER) == [user_item("secret")]
