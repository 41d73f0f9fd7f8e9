"""LedgerSessionService beyond the oracle: stale session objects, concurrent runs, lossless
events, one ledger with other frameworks (listing, search, export, erasure)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from google.adk.errors import StaleSessionError as AdkStaleSessionError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.sessions.session import Session

from agentledger import InvalidInputError, Ledger, LedgerError
from agentledger import StaleSessionError as LedgerStaleSessionError
from agentledger.integrations.adk import LedgerSessionService, StaleSessionError
from agentledger.transcripts import dumps_jsonl, loads_jsonl, render_markdown
from tests.integrations.adk.oracle import event


@pytest.fixture
def adk(ledger: Ledger) -> LedgerSessionService:
    return LedgerSessionService(ledger)


async def test_a_stale_session_object_is_refused_and_nothing_is_written(
    adk: LedgerSessionService,
) -> None:
    first = await adk.create_session(app_name="app", user_id="u", session_id="s")
    second = await adk.get_session(app_name="app", user_id="u", session_id="s")
    assert second is not None
    await adk.append_event(first, event("user", "one", timestamp=1.0, delta={"k": 1}))

    with pytest.raises(StaleSessionError, match="Read it again with get_session") as caught:
        await adk.append_event(second, event("user", "two", timestamp=2.0, delta={"k": 2}))
    assert isinstance(caught.value, AdkStaleSessionError)
    assert isinstance(caught.value, LedgerStaleSessionError)
    assert (caught.value.last_seq, caught.value.expected_last_seq) == (1, 0)

    stored = await adk.get_session(app_name="app", user_id="u", session_id="s")
    assert stored is not None
    assert [e.content.parts[0].text for e in stored.events if e.content and e.content.parts] == [
        "one"
    ]
    assert stored.state == {"k": 1}
    # The object that appended stays current; a fresh read is too.
    await adk.append_event(first, event("user", "three", timestamp=3.0))
    fresh = await adk.get_session(app_name="app", user_id="u", session_id="s")
    assert fresh is not None
    await adk.append_event(fresh, event("user", "four", timestamp=4.0))
    with pytest.raises(StaleSessionError):
        await adk.append_event(stored, event("user", "five", timestamp=5.0))


async def test_concurrent_runs_on_one_session_never_interleave(adk: LedgerSessionService) -> None:
    """Two runners appending through their own session objects at once: each append either
    lands on the history it read or fails as stale; the history is exactly the successful
    appends, in order, and the state is the last successful one's."""
    await adk.create_session(app_name="app", user_id="u", session_id="s")

    async def runner(name: str) -> list[str]:
        stored: list[str] = []
        for turn in range(6):
            session = await adk.get_session(app_name="app", user_id="u", session_id="s")
            assert session is not None
            text = f"{name}-{turn}"
            try:
                await adk.append_event(
                    session, event(name, text, timestamp=10.0, delta={"last": text})
                )
                stored.append(text)
            except StaleSessionError:
                pass
        return stored

    results = await asyncio.gather(runner("a"), runner("b"))
    final = await adk.get_session(app_name="app", user_id="u", session_id="s")
    assert final is not None
    texts = [e.content.parts[0].text or "" for e in final.events if e.content and e.content.parts]
    assert sorted(texts) == sorted(results[0] + results[1])
    assert [t for t in texts if t.startswith("a")] == results[0]
    assert final.state["last"] == texts[-1]


async def test_a_hand_built_session_object_must_match_the_stored_history(
    adk: LedgerSessionService,
) -> None:
    made = await adk.create_session(app_name="app", user_id="u", session_id="s")
    by_hand = Session(id="s", app_name="app", user_id="u")
    await adk.append_event(by_hand, event("user", "one", timestamp=1.0))  # both empty: current
    with pytest.raises(StaleSessionError, match="holds events"):
        await adk.append_event(
            Session(id="s", app_name="app", user_id="u"), event("user", "x", timestamp=2.0)
        )
    with pytest.raises(StaleSessionError):
        await adk.append_event(made, event("user", "x", timestamp=2.0))
    with pytest.raises(SessionNotFoundError):
        await adk.append_event(
            Session(id="gone", app_name="app", user_id="u"), event("user", "x", timestamp=2.0)
        )
    await adk.delete_session(app_name="app", user_id="u", session_id="s")
    with pytest.raises(SessionNotFoundError):
        await adk.append_event(by_hand, event("user", "x", timestamp=3.0))


async def test_events_round_trip_exactly(adk: LedgerSessionService) -> None:
    session = await adk.create_session(app_name="app", user_id="u")
    sent = [
        event("user", "nul \x00 and \u2028 text", timestamp=1733100000.123456789),
        event("agent", None, timestamp=0.1 + 0.2, call="c-1"),
        event("agent", None, timestamp=1e-7, response="c-1", delta={"deep": {"a": [1, None]}}),
    ]
    for made in sent:
        await adk.append_event(session, made.model_copy(deep=True))
    stored = await adk.get_session(app_name="app", user_id="u", session_id=session.id)
    assert stored is not None
    assert stored.events == sent
    assert [e.timestamp for e in stored.events] == [e.timestamp for e in sent]
    assert stored.last_update_time == sent[-1].timestamp
    assert all(isinstance(e, Event) for e in stored.events)


async def test_adk_sessions_share_the_ledger_with_other_frameworks(
    adk: LedgerSessionService, ledger: Ledger
) -> None:
    svc = ledger.service
    session = await adk.create_session(
        app_name="travel", user_id="ana", session_id="trip", state={"user:lang": "de"}
    )
    await adk.append_event(session, event("user", "Book Oslo please", timestamp=1.0))
    await adk.append_event(session, event("planner", None, timestamp=2.0, call="c1"))
    await adk.append_event(session, event("planner", None, timestamp=3.0, response="c1"))
    await adk.append_event(session, event("planner", "Booked Oslo.", timestamp=4.0))
    await svc.create_session("ana", "helper")  # an Agents SDK session of the same user

    page = await svc.list_user_sessions("ana")
    assert sorted(s.framework for s in page) == ["adk", "openai-agents"]
    adk_summary = next(s for s in page if s.framework == "adk")
    assert (adk_summary.agent_name, adk_summary.name) == ("travel", "travel:trip")
    assert adk_summary.message_count == 4
    assert adk_summary.title == "Book Oslo please"

    record = await svc.get_session(adk_summary.id)
    assert record is not None
    assert [m.role for m in record.messages] == ["user", "assistant", "tool", "assistant"]
    assert record.messages[1].tool_calls is not None
    assert record.messages[1].tool_calls[0]["function"]["name"] == "lookup"
    assert record.messages[2].tool_call_id == "c1"
    assert record.messages[3].content == "Booked Oslo."

    hits = await svc.search("ana", "Oslo")
    assert {(hit.session_id, hit.framework) for hit in hits} == {(adk_summary.id, "adk")}

    markdown = render_markdown(await svc.export_session(adk_summary.id))
    assert "- framework: `adk`" in markdown
    assert "## 1 · User `user`" in markdown
    assert "Book Oslo please" in markdown
    assert "Tool call `lookup`" in markdown
    assert "## 3 · Tool result for `c1`" in markdown
    assert "## 4 · Assistant `planner`" in markdown

    report = await svc.erase_user("ana")
    assert report.sessions == 2
    assert await adk.get_session(app_name="travel", user_id="ana", session_id="trip") is None
    assert await adk.get_user_state(app_name="travel", user_id="ana") == {}


async def test_list_sessions_pages_through_many(
    adk: LedgerSessionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agentledger.integrations.adk.service.LIST_PAGE_SIZE", 3)
    made = {
        (await adk.create_session(app_name="app", user_id=f"u{i % 2}", state={"i": i})).id
        for i in range(8)
    }
    await adk.create_session(app_name="other", user_id="u0")
    listed = (await adk.list_sessions(app_name="app")).sessions
    assert {s.id for s in listed} == made
    assert all(s.events == [] for s in listed)
    assert len((await adk.list_sessions(app_name="app", user_id="u1")).sessions) == 4


async def test_state_json_cannot_hold_is_refused_before_anything_is_written(
    adk: LedgerSessionService,
) -> None:
    with pytest.raises(InvalidInputError, match="NaN"):
        await adk.create_session(
            app_name="app", user_id="u", session_id="s", state={"user:x": float("nan")}
        )
    assert await adk.get_session(app_name="app", user_id="u", session_id="s") is None
    session = await adk.create_session(app_name="app", user_id="u", session_id="s")
    with pytest.raises(InvalidInputError, match="NaN"):
        await adk.append_event(
            session, event("user", "x", timestamp=1.0, delta={"app:y": float("inf")})
        )
    stored = await adk.get_session(app_name="app", user_id="u", session_id="s")
    assert stored is not None
    assert stored.events == []
    assert await adk.get_user_state(app_name="app", user_id="u") == {}


async def test_export_and_import_keep_an_adk_session_whole(
    adk: LedgerSessionService, ledger: Ledger
) -> None:
    session = await adk.create_session(
        app_name="travel", user_id="ana", session_id="trip", state={"city": "Oslo", "user:x": 1}
    )
    await adk.append_event(session, event("user", "hi", timestamp=7.25, delta={"nights": 2}))
    original = await adk.get_session(app_name="travel", user_id="ana", session_id="trip")
    assert original is not None
    svc = ledger.service
    [summary] = await svc.list_user_sessions("ana")

    text = dumps_jsonl(await svc.export_session(summary.id))
    back = loads_jsonl(text)
    assert back.framework_state == {"state": {"city": "Oslo", "nights": 2}, "update_time": 7.25}
    assert "- session state: `" in render_markdown(back)
    await svc.import_session(back, user_id="ben", session_id=uuid.uuid4())

    copy = await adk.get_session(app_name="travel", user_id="ben", session_id="trip")
    assert copy is not None
    assert copy.events == original.events
    assert copy.state == {"city": "Oslo", "nights": 2}  # ana's user state stays ana's
    assert copy.last_update_time == original.last_update_time == 7.25


async def test_a_message_written_around_the_adapter_is_named_when_read(
    adk: LedgerSessionService, ledger: Ledger
) -> None:
    """A plain ledger write into an ADK session is no event: reading the session says so,
    with the fix, instead of a bare KeyError (regression)."""
    session = await adk.create_session(app_name="app", user_id="u", session_id="s")
    await adk.append_event(session, event("user", "hi", timestamp=1.0))
    await ledger.service.add_message(await _ledger_id(ledger), role="user", content="x")
    with pytest.raises(LedgerError, match="not an ADK event") as raised:
        await adk.get_session(app_name="app", user_id="u", session_id="s")
    assert "rewind_session" in str(raised.value)


async def _ledger_id(ledger: Ledger) -> uuid.UUID:
    page = await ledger.service.list_user_sessions("u", framework="adk")
    (only,) = page.items
    return only.id
