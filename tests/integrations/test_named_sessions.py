"""A session *name* stays its owner's, and every session has an explicit owner.

``ledger.agent_session("support", user_id="alice")`` normally lives at the id derived from the
user and the name (``resolve_session_uuid("support", "alice")``). Before names were recorded,
another user could create a session at that id first ("squatting"): alice's first write then
raised SessionNotFoundError and her name was blocked for good. Now alice's session is created
elsewhere, recorded with its name (``agent_sessions.name``) and found again by it, while the
squatter's session stays untouched and the two never see each other's items.

Models are the SDK's offline ``agents.testing.ScriptedModel``; row-level security reuses the
role and policies of tests/schema/test_row_security.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import pytest
from agents import Agent, set_tracing_disabled
from agents.items import TResponseInputItem
from agents.testing import ScriptedModel, assistant_message
from openai.types.responses import ResponseOutputMessageParam

from agentledger import Ledger, LedgerSettings, SessionNotFoundError
from agentledger.cli import main
from agentledger.domain.naming import resolve_session_uuid
from tests.conftest import run_sync
from tests.integrations.test_openai_agents import texts_of, user_item
from tests.schema.test_row_security import RlsDatabase, enabled, rls_db  # noqa: F401 (fixtures)

if TYPE_CHECKING:
    # agentledger exports these lazily (its module __getattr__, typed ``object``); mypy reads
    # them from where they are defined, the tests import them the way the docs do.
    from agentledger.integrations.openai_agents import LedgerSession, SessionAgent
else:
    from agentledger import LedgerSession, SessionAgent

NAME = "support"
ALICE = "alice"
MALLORY = "mallory"
AGENT = "A"

#: Where alice's session named NAME would live if nobody had taken that id.
PREFERRED = resolve_session_uuid(NAME, ALICE)


@pytest.fixture(autouse=True, scope="module")
def _no_tracing() -> None:
    """Tracing would try to export spans over the network; the tests are offline."""
    set_tracing_disabled(True)


def reply(text: str) -> TResponseInputItem:
    """An assistant message item, as the SDK stores one."""
    # The SDK turns an output message into an input item the same way (model_dump + cast).
    dumped = assistant_message(text, item_id=f"msg-{text}").model_dump(exclude_unset=True)
    return cast("ResponseOutputMessageParam", dumped)


def alice_session(ledger: Ledger) -> LedgerSession:
    return ledger.agent_session(NAME, user_id=ALICE, agent_name=AGENT)


# -- squatting: mallory takes the id alice's name maps to -------------------------------------

MALLORY_ITEMS = [user_item("mallory's secret"), reply("mallory's answer")]


async def squat_with_create_session(ledger: Ledger) -> None:
    await ledger.service.create_session(MALLORY, AGENT, session_id=PREFERRED)
    await ledger.service.add_items(PREFERRED, MALLORY_ITEMS, user_id=MALLORY)


async def squat_with_sdk_session(ledger: Ledger) -> None:
    squatter = ledger.agent_session(str(PREFERRED), user_id=MALLORY, agent_name=AGENT)
    assert squatter.ledger_session_id == PREFERRED
    await squatter.add_items(MALLORY_ITEMS)


SQUATS: dict[str, Callable[[Ledger], Awaitable[None]]] = {
    "create_session": squat_with_create_session,
    "sdk_session_by_uuid": squat_with_sdk_session,
}


@pytest.fixture(params=sorted(SQUATS))
def squat(request: pytest.FixtureRequest) -> Callable[[Ledger], Awaitable[None]]:
    return SQUATS[str(request.param)]


async def assert_mallory_untouched(ledger: Ledger) -> None:
    """The squatted session is still mallory's, holding exactly mallory's items."""
    record = await ledger.service.get_session(PREFERRED)
    assert record is not None
    assert record.user_id == MALLORY
    assert record.name is None
    assert await ledger.service.get_items(PREFERRED, user_id=MALLORY) == MALLORY_ITEMS
    by_uuid = ledger.agent_session(str(PREFERRED), user_id=MALLORY, agent_name=AGENT)
    assert await by_uuid.get_items() == MALLORY_ITEMS


async def alices_real_id(ledger: Ledger) -> uuid.UUID:
    found = await ledger.service.resolve_name(NAME, user_id=ALICE)
    assert found is not None
    return found


# -- (a) the normal case ------------------------------------------------------------------------


async def test_a_named_session_lives_at_the_derived_id_and_records_its_name(
    ledger: Ledger,
) -> None:
    session = alice_session(ledger)
    assert session.name == NAME
    assert session.ledger_session_id == PREFERRED
    await session.add_items([user_item("hello")])

    assert session.ledger_session_id == PREFERRED
    assert await session.resolve() == PREFERRED
    assert await ledger.service.resolve_name(NAME, user_id=ALICE) == PREFERRED
    record = await ledger.service.get_session(PREFERRED, user_id=ALICE)
    assert record is not None
    assert (record.user_id, record.agent_name, record.name) == (ALICE, AGENT, NAME)
    assert [m.content for m in record.messages] == ["hello"]
    # Nobody else has a session of that name.
    assert await ledger.service.resolve_name(NAME, user_id=MALLORY) is None


# -- (b) squatting does not block the name ------------------------------------------------------


async def test_squatting_the_derived_id_does_not_block_alices_name(
    ledger: Ledger, squat: Callable[[Ledger], Awaitable[None]]
) -> None:
    await squat(ledger)
    session = alice_session(ledger)

    # Before her first write: nothing of mallory's shows, and the reads/removals are no-ops.
    assert await session.get_items() == []
    assert await session.get_items(1) == []
    assert await session.pop_item() is None
    await session.clear_session()
    assert await session.windowed(max_turns=1).get_items() == []
    # Nor does the session point at mallory's: its id is a fresh one of alice's to be.
    assert session.ledger_session_id != PREFERRED

    first_turn = [user_item("alice's question"), reply("alice's answer")]
    second_turn = [user_item("alice's follow-up"), reply("alice's second answer")]
    await session.add_items(first_turn)
    await session.add_items(second_turn)

    real = await alices_real_id(ledger)
    assert real != PREFERRED
    assert session.ledger_session_id == real
    assert await session.resolve() == real
    assert await session.get_items() == first_turn + second_turn
    assert await session.get_items(1) == second_turn[-1:]
    assert await session.get_items(3) == [first_turn[1], *second_turn]
    assert await session.windowed(max_turns=1).get_items() == second_turn

    record = await ledger.service.get_session(real, user_id=ALICE)
    assert record is not None
    assert (record.user_id, record.agent_name, record.name) == (ALICE, AGENT, NAME)
    assert [m.content for m in record.messages] == texts_of(first_turn + second_turn)
    await assert_mallory_untouched(ledger)

    assert await session.pop_item() == second_turn[-1]
    assert await session.get_items() == [*first_turn, second_turn[0]]
    await assert_mallory_untouched(ledger)

    await session.clear_session()
    assert await session.get_items() == []
    assert await ledger.service.get_session(real, user_id=ALICE) is not None
    await assert_mallory_untouched(ledger)

    # Mallory reaching for alice's real session by its id is refused, as for any UUID.
    intruder = ledger.agent_session(str(real), user_id=MALLORY, agent_name=AGENT)
    with pytest.raises(SessionNotFoundError):
        await intruder.add_items([user_item("injected")])
    # Mallory's own session of that name is hers, not alice's.
    mallorys = ledger.agent_session(NAME, user_id=MALLORY, agent_name=AGENT)
    assert await mallorys.get_items() == []
    await mallorys.add_items([user_item("mallory's own support chat")])
    assert mallorys.ledger_session_id not in (real, PREFERRED)
    assert await session.get_items() == []
    await assert_mallory_untouched(ledger)


# -- (c) a fresh SDK session object finds alice's real session ---------------------------------

FIRST_OPERATIONS: dict[str, Callable[[LedgerSession], Awaitable[Any]]] = {
    "get_items": lambda s: s.get_items(),
    "get_items_limit": lambda s: s.get_items(1),
    "windowed": lambda s: s.get_items(),  # on alice_session(ledger).windowed(max_turns=1)
    "add_items": lambda s: s.add_items([user_item("more")]),
    "pop_item": lambda s: s.pop_item(),
    "clear_session": lambda s: s.clear_session(),
    "resolve": lambda s: s.resolve(),
}


@pytest.mark.parametrize("first_operation", sorted(FIRST_OPERATIONS))
async def test_a_fresh_session_object_finds_alices_real_session_after_squatting(
    ledger: Ledger, first_operation: str
) -> None:
    await squat_with_create_session(ledger)
    stored = [user_item("remember me"), reply("remembered")]
    await alice_session(ledger).add_items(stored)
    real = await alices_real_id(ledger)
    assert real != PREFERRED

    fresh = alice_session(ledger)
    if first_operation == "windowed":
        fresh = fresh.windowed(max_turns=1)  # a new object, resolving by itself
    result = await FIRST_OPERATIONS[first_operation](fresh)
    assert fresh.ledger_session_id == real
    assert await fresh.resolve() == real

    expected: list[Any] = {
        "get_items": stored,
        "get_items_limit": stored,
        "windowed": stored,
        "add_items": [*stored, user_item("more")],
        "pop_item": stored[:1],
        "clear_session": [],
        "resolve": stored,
    }[first_operation]
    assert await fresh.get_items() == expected
    if first_operation in ("get_items", "windowed"):
        assert result == stored
    elif first_operation == "get_items_limit":
        assert result == stored[-1:]
    elif first_operation == "pop_item":
        assert result == stored[-1]
    elif first_operation == "resolve":
        assert result == real
    # Everything went to alice's session; none of it reached mallory's.
    record = await ledger.service.get_session(real, user_id=ALICE)
    assert record is not None
    assert record.name == NAME
    assert await ledger.service.get_items(real, user_id=ALICE) == expected
    await assert_mallory_untouched(ledger)


async def test_the_name_stays_alices_when_the_squatter_deletes_the_squatted_session(
    ledger: Ledger,
) -> None:
    """Alice's session was created elsewhere; once mallory's session at the derived id is gone,
    a new SDK session object must still open alice's (by her recorded name), whatever its
    first operation, rather than create a second session of the same name."""
    await squat_with_create_session(ledger)
    await alice_session(ledger).add_items([user_item("first")])
    real = await alices_real_id(ledger)
    assert await ledger.service.delete_session(PREFERRED, user_id=MALLORY)

    fresh = alice_session(ledger)
    await fresh.add_items([user_item("second")])
    assert fresh.ledger_session_id == real
    assert await fresh.get_items() == [user_item("first"), user_item("second")]
    assert await ledger.service.resolve_name(NAME, user_id=ALICE) == real
    page = await ledger.service.list_user_sessions(ALICE)
    assert [summary.id for summary in page.sessions] == [real]


# -- (d) SessionAgent ---------------------------------------------------------------------------


async def test_session_agent_runs_in_alices_named_session_after_squatting(
    ledger: Ledger, squat: Callable[[Ledger], Awaitable[None]]
) -> None:
    await squat(ledger)
    model = ScriptedModel([[assistant_message("one")], [assistant_message("two")]])
    runner = SessionAgent(Agent(name=AGENT, model=model), ledger)

    first = await runner.run("hi", session_id=NAME, user_id=ALICE)
    real = await alices_real_id(ledger)
    assert real != PREFERRED
    assert first.session_id == real
    assert first.final_output == "one"
    assert texts_of(model.calls[0].input) == ["hi"]  # nothing of mallory's reached the model

    second = await runner.run("again", session_id=NAME, user_id=ALICE)
    assert second.session_id == real
    assert texts_of(model.calls[1].input) == ["hi", "one", "again"]

    record = await ledger.service.get_session(real, user_id=ALICE)
    assert record is not None
    assert (record.user_id, record.agent_name, record.name) == (ALICE, AGENT, NAME)
    assert [m.content for m in record.messages] == ["hi", "one", "again", "two"]
    assert (await ledger.service.get_usage(real, user_id=ALICE)).requests == 2
    assert (await ledger.service.get_usage(PREFERRED, user_id=MALLORY)).requests == 0
    await assert_mallory_untouched(ledger)


# -- (e) the CLI --------------------------------------------------------------------------------


def test_cli_sessions_show_by_name_shows_alices_session_not_the_squatters(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def seed() -> uuid.UUID:
        async with Ledger.from_url(database_url) as ledger:
            await squat_with_create_session(ledger)
            await alice_session(ledger).add_items([user_item("alice's note")])
            return await alices_real_id(ledger)

    real = run_sync(seed())
    assert real != PREFERRED
    base = ["--database-url", database_url, "sessions", "show", NAME, "--user", ALICE]

    assert main([*base, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == str(real)
    assert shown["user_id"] == ALICE
    assert [m["content"] for m in shown["messages"]] == ["alice's note"]

    assert main(base) == 0
    out = capsys.readouterr().out
    assert f"session {real}  user {ALICE}" in out
    assert "alice's note" in out
    assert "mallory" not in out
    assert str(PREFERRED) not in out


# -- (f) PostgreSQL row-level security -----------------------------------------------------------


async def test_squatting_hidden_by_row_level_security_does_not_block_alice(
    enabled: RlsDatabase,  # noqa: F811 (the imported fixture)
) -> None:
    # Mallory squats from the application role, both ways; the policies hide her sessions
    # from alice, so alice cannot even see that the derived ids are taken.
    settings = LedgerSettings(database_url=enabled.app_url, row_level_security=True)
    other_name = "billing"
    other_preferred = resolve_session_uuid(other_name, ALICE)
    async with Ledger.from_settings(settings) as app:
        mallory = app.service.for_user(MALLORY)
        await mallory.create_session(MALLORY, AGENT, session_id=PREFERRED)
        await mallory.add_items(PREFERRED, MALLORY_ITEMS, user_id=MALLORY)
        squatter = app.agent_session(str(other_preferred), user_id=MALLORY, agent_name=AGENT)
        await squatter.add_items(MALLORY_ITEMS)

    async with Ledger.from_settings(settings) as app:
        alice = app.service.for_user(ALICE)
        for name, preferred in ((NAME, PREFERRED), (other_name, other_preferred)):
            session = app.agent_session(name, user_id=ALICE, agent_name=AGENT)
            assert await session.get_items() == []
            assert await session.pop_item() is None
            await session.add_items([user_item(f"alice's {name}"), reply("ok")])
            await session.add_items([user_item("and more")])
            real = await alice.resolve_name(name, user_id=ALICE)
            assert real is not None
            assert real != preferred
            assert session.ledger_session_id == real
            expected = [user_item(f"alice's {name}"), reply("ok"), user_item("and more")]
            assert await session.get_items() == expected
            assert await session.get_items(1) == expected[-1:]
            assert await session.windowed(max_turns=1).get_items() == expected[-1:]
            assert await session.pop_item() == expected[-1]
            record = await alice.get_session(real, user_id=ALICE)
            assert record is not None
            assert (record.user_id, record.name) == (ALICE, name)

            fresh = app.agent_session(name, user_id=ALICE, agent_name=AGENT)
            assert await fresh.get_items() == expected[:-1]
            assert fresh.ledger_session_id == real

        model = ScriptedModel([[assistant_message("hello alice")]])
        result = await SessionAgent(Agent(name=AGENT, model=model), app).run(
            "hi", session_id=NAME, user_id=ALICE
        )
        real = await alice.resolve_name(NAME, user_id=ALICE)
        assert result.session_id == real
        assert texts_of(model.calls[0].input) == ["alice's support", "ok", "hi"]

        # Mallory's sessions are untouched, and she sees none of alice's.
        mallory = app.service.for_user(MALLORY)
        for preferred in (PREFERRED, other_preferred):
            record = await mallory.get_session(preferred, user_id=MALLORY)
            assert record is not None
            assert record.user_id == MALLORY
            assert await mallory.get_items(preferred, user_id=MALLORY) == MALLORY_ITEMS
        assert await mallory.get_session(real) is None
        assert (await mallory.search(ALICE, "alice's")).hits == ()

    # The owner (exempt from the policies) sees all four sessions, each with its own owner.
    async with Ledger.from_url(enabled.owner_url) as owner:
        alices = await owner.service.list_user_sessions(ALICE)
        mallorys = await owner.service.list_user_sessions(MALLORY)
    assert len(alices.sessions) == 2
    assert {s.id for s in mallorys.sessions} == {PREFERRED, other_preferred}


# -- (g) legacy sessions (created before names were recorded) -----------------------------------


async def test_a_legacy_session_at_the_derived_id_without_a_name_is_still_found(
    ledger: Ledger,
) -> None:
    legacy = resolve_session_uuid("old", ALICE)
    await ledger.service.create_session(ALICE, AGENT, session_id=legacy)
    earlier = [user_item("written before names"), reply("long ago")]
    await ledger.service.add_items(legacy, earlier, user_id=ALICE)
    record = await ledger.service.get_session(legacy)
    assert record is not None
    assert record.name is None

    assert await ledger.service.resolve_name("old", user_id=ALICE) == legacy
    reader = ledger.agent_session("old", user_id=ALICE)
    assert await reader.get_items() == earlier
    assert reader.ledger_session_id == legacy

    writer = ledger.agent_session("old", user_id=ALICE, agent_name=AGENT)
    await writer.add_items([user_item("written now")])
    assert writer.ledger_session_id == legacy
    assert await writer.resolve() == legacy
    assert await reader.get_items() == [*earlier, user_item("written now")]
    assert len((await ledger.service.list_user_sessions(ALICE)).sessions) == 1

    popper = ledger.agent_session("old", user_id=ALICE)
    assert await popper.pop_item() == user_item("written now")
    assert await ledger.service.get_items(legacy, user_id=ALICE) == earlier


# -- (h) concurrent first writes -----------------------------------------------------------------


@pytest.mark.parametrize("squatted", [False, True], ids=["free", "squatted"])
async def test_concurrent_first_writes_of_one_name_make_one_session(
    ledger: Ledger, squatted: bool
) -> None:
    if squatted:
        await squat_with_create_session(ledger)
    first_batch = [user_item("a1"), reply("a2")]
    second_batch = [user_item("b1"), reply("b2")]
    one, two = alice_session(ledger), alice_session(ledger)

    await asyncio.gather(one.add_items(first_batch), two.add_items(second_batch))

    real = await alices_real_id(ledger)
    assert (real == PREFERRED) is not squatted
    assert one.ledger_session_id == two.ledger_session_id == real
    page = await ledger.service.list_user_sessions(ALICE)
    assert [summary.id for summary in page.sessions] == [real]
    items = await ledger.service.get_items(real, user_id=ALICE)
    assert items in (first_batch + second_batch, second_batch + first_batch)
    record = await ledger.service.get_session(real, user_id=ALICE)
    assert record is not None
    assert record.name == NAME
    if squatted:
        await assert_mallory_untouched(ledger)


# -- owners are explicit ------------------------------------------------------------------------


async def test_an_sdk_session_without_an_owner_is_refused(ledger: Ledger) -> None:
    with pytest.raises(TypeError, match="user_id"):
        ledger.agent_session("x")
    with pytest.raises(TypeError, match="user_id"):
        ledger.agent_session("x", agent_name=AGENT)
    assert (await ledger.service.list_user_sessions("agent")).sessions == ()


async def test_session_agent_without_an_owner_is_refused_before_the_model_is_called(
    ledger: Ledger,
) -> None:
    model = ScriptedModel([[assistant_message("never")]])
    runner = SessionAgent(Agent(name=AGENT, model=model), ledger)
    with pytest.raises(TypeError, match="user_id"):
        await runner.run("hi")
    with pytest.raises(TypeError, match="user_id"):
        await runner.run("hi", session_id=NAME)
    with pytest.raises(TypeError, match="user_id"):
        await runner.run_streamed("hi")
    assert model.calls == ()
    assert await ledger.service.resolve_name(NAME, user_id="agent") is None


async def test_a_default_user_id_owns_sessions_opened_without_one(database_url: str) -> None:
    settings = LedgerSettings(database_url=database_url, default_user_id="solo")
    async with Ledger.from_settings(settings) as ledger:
        session = ledger.agent_session("x", agent_name=AGENT)
        assert session.user_id == "solo"
        assert session.ledger_session_id == resolve_session_uuid("x", "solo")
        await session.add_items([user_item("mine")])
        record = await ledger.service.get_session(session.ledger_session_id, user_id="solo")
        assert record is not None
        assert (record.user_id, record.name) == ("solo", "x")

        model = ScriptedModel([[assistant_message("hello solo")], [assistant_message("again")]])
        runner = SessionAgent(Agent(name=AGENT, model=model), ledger)
        fresh = await runner.run("hi")
        named = await runner.run("hello", session_id=NAME)
        assert named.session_id == resolve_session_uuid(NAME, "solo")
        for sid in (fresh.session_id, named.session_id):
            run_record = await ledger.service.get_session(sid, user_id="solo")
            assert run_record is not None
            assert run_record.user_id == "solo"
            assert run_record.agent_name == AGENT
        page = await ledger.service.list_user_sessions("solo")
        assert len(page.sessions) == 3


def test_cli_chat_requires_a_user(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--database-url", "sqlite+aiosqlite://", "chat", "--session", NAME]) == 2
    assert "--user" in capsys.readouterr().err
