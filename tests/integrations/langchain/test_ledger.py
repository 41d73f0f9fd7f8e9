"""What a LangChain history is in the ledger, on SQLite and PostgreSQL: owned by its user, one
atomic append per batch, a readable chat view that search, listings, exports, transcripts,
retention and erasure treat like any other session's, and paging through windows."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from agentledger import (
    InvalidInputError,
    InvalidItemTypeError,
    Ledger,
    SessionNotFoundError,
)
from agentledger.cli import main
from agentledger.domain.naming import resolve_session_uuid
from agentledger.integrations.langchain import LedgerChatMessageHistory
from agentledger.transcripts import dumps_jsonl, loads_jsonl, render_markdown
from tests.conftest import run_sync
from tests.integrations.langchain.corpus import every_message


def tool_turn(n: int) -> list[BaseMessage]:
    """A user question, an AI tool call, its tool result and the answer."""
    return [
        HumanMessage(f"question {n}"),
        AIMessage("", tool_calls=[{"name": "lookup", "args": {"n": n}, "id": f"call-{n}"}]),
        ToolMessage(f"result {n}", tool_call_id=f"call-{n}"),
        AIMessage(f"answer {n}"),
    ]


async def existing_id(history: LedgerChatMessageHistory) -> uuid.UUID:
    found = await history.ledger_session_id()
    assert found is not None
    return found


async def test_another_users_history_reads_empty_and_refuses_writes(ledger: Ledger) -> None:
    alice = LedgerChatMessageHistory.for_user(ledger, "support", user_id="alice")
    await alice.aadd_messages(tool_turn(1))
    sid = await existing_id(alice)

    by_id = LedgerChatMessageHistory.for_user(ledger, sid, user_id="mallory")
    assert await by_id.aget_messages() == []
    assert await by_id.aget_recent(2) == []
    with pytest.raises(SessionNotFoundError):
        await by_id.aadd_messages([HumanMessage("let me in")])
    await by_id.aclear()  # like a missing session: nothing to clear
    # The same name is another user's own, separate session.
    same_name = LedgerChatMessageHistory.for_user(ledger, "support", user_id="mallory")
    assert await same_name.aget_messages() == []
    await same_name.aadd_messages([HumanMessage("mine")])
    assert await existing_id(same_name) != sid

    assert await alice.aget_messages() == tool_turn(1)
    by_owner = LedgerChatMessageHistory.for_user(ledger, sid, user_id="alice")
    assert await by_owner.aget_messages() == tool_turn(1)


async def test_a_name_squatted_by_another_user_still_opens_the_owners_session(
    ledger: Ledger,
) -> None:
    mine = LedgerChatMessageHistory.for_user(ledger, "taken", user_id="alice")
    derived = resolve_session_uuid("taken", "alice")
    await ledger.service.create_session("bob", "squatter", session_id=derived)
    assert await mine.aget_messages() == []
    await mine.aadd_messages([HumanMessage("still mine")])
    assert await existing_id(mine) != derived
    again = LedgerChatMessageHistory.for_user(ledger, "taken", user_id="alice")
    assert [m.content for m in await again.aget_messages()] == ["still mine"]
    assert await existing_id(again) == await existing_id(mine)
    record = await ledger.service.get_session(await existing_id(mine), user_id="alice")
    assert record is not None
    assert (record.framework, record.name) == ("langchain", "taken")
    bobs = await ledger.service.get_session(derived, user_id="bob")
    assert bobs is not None
    assert bobs.messages == ()


async def test_a_batch_is_stored_whole_or_not_at_all(ledger: Ledger) -> None:
    history = LedgerChatMessageHistory.for_user(ledger, "atomic", user_id="u1")
    await history.aadd_messages(tool_turn(1))
    unencodable = HumanMessage("fine", additional_kwargs={"when": object()})
    with pytest.raises(InvalidItemTypeError):
        await history.aadd_messages([HumanMessage("first"), unencodable])
    with pytest.raises(InvalidItemTypeError, match="message 1 must be a langchain_core"):
        await history.aadd_messages([HumanMessage("first"), "not a message"])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        await history.aadd_messages([HumanMessage("lone surrogate \ud800")])
    assert await history.aget_messages() == tool_turn(1)


async def test_the_chat_view_serves_search_listing_and_the_service(ledger: Ledger) -> None:
    history = LedgerChatMessageHistory.for_user(ledger, "views", user_id="u1", agent_name="helper")
    await history.aadd_messages(every_message())
    sid = await existing_id(history)
    record = await ledger.service.get_session(sid, user_id="u1")
    assert record is not None
    assert record.agent_name == "helper"
    rows = [(m.role, m.content, m.tool_call_id, m.item_type) for m in record.messages]
    assert rows[:4] == [
        ("system", "You are terse.", None, "langchain"),
        ("user", "What is on this picture?", None, "langchain"),
        ("assistant", "Let me look that up.", None, "langchain"),
        ("tool", "3 cats found\x00", "call-1", "langchain"),
    ]
    calls = record.messages[2].tool_calls
    assert calls is not None
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("call-1", "search", '{"q":"cats","top":3}'),
        ("call-2", "weather", '{"city":"Oslo"}'),
        ("call-3", "broken", '{"q": '),
    ]
    assert rows[5][:2] == ("assistant", "Cats, and it is cold in Oslo.")
    assert rows[6][0] == "assistant"  # ChatMessage(role="critic")
    assert rows[7][0] == "user"  # ChatMessage(role="user")

    hits = await ledger.service.search("u1", "Oslo")
    assert {(hit.session_id, hit.item_type) for hit in hits} == {(sid, "langchain")}
    assert record.framework == "langchain"
    sdk = ledger.agent_session("sdk-chat", user_id="u1")
    await sdk.add_items([{"role": "user", "content": "an Agents SDK question"}])
    page = await ledger.service.list_user_sessions("u1")
    assert sorted((s.framework, s.message_count, s.title) for s in page) == [
        ("langchain", len(every_message()), "What is on this picture?"),
        ("openai-agents", 1, "an Agents SDK question"),
    ]
    only = await ledger.service.list_user_sessions("u1", framework="langchain")
    assert [s.id for s in only] == [sid]
    assert (await ledger.service.search("someone-else", "Oslo")).items == ()


async def test_exports_round_trip_and_render_tool_calls_with_their_results(
    ledger: Ledger,
) -> None:
    history = LedgerChatMessageHistory.for_user(ledger, "export", user_id="u1")
    await history.aadd_messages(every_message())
    transcript = await ledger.service.export_session(await existing_id(history), user_id="u1")
    assert transcript is not None

    assert transcript.framework == "langchain"
    restored = loads_jsonl(dumps_jsonl(transcript))
    imported = await ledger.service.import_session(restored, user_id="u2", session_id=uuid.uuid4())
    copy = LedgerChatMessageHistory.for_user(ledger, imported.session_id, user_id="u2")
    assert await copy.aget_messages() == every_message()

    imported_record = await ledger.service.get_session(imported.session_id, user_id="u2")
    assert imported_record is not None
    assert imported_record.framework == "langchain"

    markdown = render_markdown(transcript)
    assert "## 3 · Assistant" in markdown
    assert "Tool call `search` (call id `call-1`):" in markdown
    assert "## 4 · Tool result for `call-1`" in markdown
    assert "## 2 · User\n\n```\nWhat is on this picture?\n```" in markdown
    assert '"langchain"' not in markdown  # no message fell back to its raw JSON


async def test_retention_and_windows_keep_tool_calls_with_their_results(ledger: Ledger) -> None:
    history = LedgerChatMessageHistory.for_user(ledger, "trim", user_id="u1", agent_name="trim")
    await history.aadd_messages([*tool_turn(1), *tool_turn(2)])

    window = await history.windowed(max_tokens=1).aget_messages()
    assert window == []  # the last indivisible group does not fit one token
    last_turn = await history.windowed(max_turns=1).aget_messages()
    assert last_turn == tool_turn(2)
    assert await history.aget_recent(3) == tool_turn(2)[1:]
    assert await history.aget_recent(0) == []

    # Keeping 6 of 8 would cut between turn 1's call and its result: 3 are trimmed.
    report = await ledger.service.apply_retention({"trim": {"max_messages": 6}})
    assert report.totals.trimmed_messages == 3
    assert await history.aget_messages() == [*tool_turn(1)[3:], *tool_turn(2)]
    # Keeping 2 of 5 would cut between turn 2's call and its result: 1 remains.
    report = await ledger.service.apply_retention({"trim": {"max_messages": 2}})
    assert report.totals.trimmed_messages == 4
    assert await history.aget_messages() == tool_turn(2)[3:]


async def test_erasure_and_deletion_take_langchain_sessions_too(ledger: Ledger) -> None:
    history = LedgerChatMessageHistory.for_user(ledger, "forget", user_id="gone")
    await history.aadd_messages(tool_turn(1))
    report = await ledger.service.erase_user("gone")
    assert (report.sessions, report.messages) == (1, 4)
    assert await history.aget_messages() == []


async def test_messages_other_writers_add_read_as_langchain_messages(ledger: Ledger) -> None:
    history = LedgerChatMessageHistory.for_user(ledger, "mixed", user_id="u1")
    await history.aadd_messages([HumanMessage("from langchain")])
    sid = await existing_id(history)
    await ledger.service.add_message(
        sid,
        "assistant",
        "",
        tool_calls=[
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
        ],
        user_id="u1",
    )
    await ledger.service.add_message(sid, "tool", "done", tool_call_id="c1", user_id="u1")
    await ledger.service.add_message(sid, "developer", "be kind", user_id="u1")
    got: list[Any] = [
        (type(m).__name__, m.content, getattr(m, "tool_calls", None))
        for m in await history.aget_messages()
    ]
    assert got == [
        ("HumanMessage", "from langchain", None),
        ("AIMessage", "", [{"name": "f", "args": {"a": 1}, "id": "c1", "type": "tool_call"}]),
        ("ToolMessage", "done", None),
        ("SystemMessage", "be kind", None),
    ]


async def test_one_factory_serves_many_users(ledger: Ledger) -> None:
    get_session_history = LedgerChatMessageHistory.factory(ledger, agent_name="support")
    await get_session_history("shared-name", user_id="dave").aadd_messages([HumanMessage("d")])
    await get_session_history("shared-name", user_id="erin").aadd_messages([HumanMessage("e")])
    dave = await get_session_history(session_id="shared-name", user_id="dave").aget_messages()
    assert [m.content for m in dave] == ["d"]
    with pytest.raises(TypeError, match="pass user_id"):
        get_session_history("shared-name")  # no user, and the ledger has no default user


def test_the_cli_shows_a_langchain_session_readably(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def seed() -> uuid.UUID:
        async with Ledger.from_url(database_url) as ledger:
            history = LedgerChatMessageHistory.for_user(
                ledger, "cli", user_id="alice", agent_name="desk"
            )
            await history.aadd_messages(tool_turn(7))
            return await existing_id(history)

    session_id = run_sync(seed())
    code = main(["--database-url", database_url, "sessions", "show", str(session_id)])
    out = capsys.readouterr().out
    assert code == 0
    assert "lookup(call-7)" in out
    assert "[result of call-7] result 7" in out
    assert "framework langchain" in out
    assert out.index("question 7") < out.index("answer 7")
    code = main(["--database-url", database_url, "sessions", "list", "--user", "alice", "--json"])
    listed = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [s["framework"] for s in listed["sessions"]] == ["langchain"]


async def test_concurrent_batches_never_interleave(ledger: Ledger) -> None:
    """Each ``aadd_messages`` is one append: batches written at once by several writers land
    whole, one after another, in seq order."""
    first = LedgerChatMessageHistory.for_user(ledger, "busy", user_id="u1")
    await first.aadd_messages([HumanMessage("start")])

    async def writer(name: str) -> None:
        history = LedgerChatMessageHistory.for_user(ledger, "busy", user_id="u1")
        for n in range(5):
            await history.aadd_messages([HumanMessage(f"{name}{n}.{part}") for part in range(3)])

    await asyncio.gather(*(writer(name) for name in "abc"))
    contents = [str(m.content) for m in await first.aget_messages()][1:]
    batches = [contents[index : index + 3] for index in range(0, len(contents), 3)]
    assert sorted(batch[0].split(".")[0] for batch in batches) == sorted(
        f"{name}{n}" for name in "abc" for n in range(5)
    )
    for batch in batches:
        label = batch[0].split(".")[0]
        assert batch == [f"{label}.{part}" for part in range(3)]
