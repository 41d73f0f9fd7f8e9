"""Session export (JSONL, Markdown) and import: lossless, idempotent, validated (both backends)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from agentledger import (
    AlreadyExistsError,
    InvalidInputError,
    Ledger,
    MessageRecord,
    SessionNotFoundError,
    SessionService,
)
from agentledger.cli import main
from agentledger.db.models import AgentSession, ConversationMessage
from agentledger.domain.transcripts import (
    SessionTranscript,
    dumps_jsonl,
    loads_jsonl,
    render_markdown,
)
from tests.conftest import run_sync

#: Hard text: U+0000, the escape character, non-ASCII, astral, line/paragraph separators.
HARD = "nul\x00 esc\ue000 \ue0000 Zürich 日本語 🎉 line\u2028sep\u2029 tab\t cr\r end"

ITEMS: list[dict[str, Any]] = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": [{"type": "input_text", "text": f"Weather? {HARD}"}]},
    {
        "type": "function_call",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": '{"city": "Zürich", "raw": "\\u0000"}',
        "id": "fc_1",
        "status": "completed",
    },
    {"type": "function_call_output", "call_id": "call_1", "output": HARD},
    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}]},
    {
        "type": "message",
        "role": "assistant",
        "id": "msg_1",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Sunny ☀", "annotations": []}],
        "extra": {"nested": [1, 2.5, -0.0, 1e300, None, True, {"z": 1, "a": 2}]},
    },
]


async def seed(ledger: Ledger, user: str = "alice") -> uuid.UUID:
    service = ledger.service
    session = await service.create_session(user, "Helper", {"topic": "weather", "nul": "a\x00b"})
    await service.add_items(session.id, ITEMS)
    await service.add_message(
        session.id,
        "assistant",
        "",
        tool_calls=[{"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    )
    await service.add_message(session.id, "tool", "done\x00", tool_call_id="c2")
    return session.id


def _visible(message: MessageRecord) -> tuple[Any, ...]:
    """Everything of a message but its row id (a new row gets a new one)."""
    return (
        message.seq,
        message.role,
        message.content,
        message.tool_calls,
        message.tool_call_id,
        message.item_type,
        message.item,
        message.created_at,
    )


async def test_export_then_import_elsewhere_is_exact(
    ledger: Ledger, empty_database_url: str
) -> None:
    sid = await seed(ledger)
    original = await ledger.service.get_session(sid)
    assert original is not None
    transcript = await ledger.service.export_session(sid, user_id="alice")
    assert transcript.items == await ledger.service.get_items(sid)
    text = dumps_jsonl(transcript)
    assert "\x00" not in text  # JSON escapes it ...
    assert "\\u0000" in text
    assert "Zürich" in text  # other characters are written as they are ...
    assert "\u2028" not in text  # ... but never one a terminal or a JavaScript reader acts on
    assert "\\u2028" in text
    parsed = loads_jsonl(text)
    assert parsed == transcript

    async with Ledger.from_url(empty_database_url) as other:
        await other.upgrade()
        result = await other.service.import_session(parsed, user_id="alice")
        assert (result.session_id, result.items_added, result.created) == (sid, 8, True)
        assert await other.service.get_items(sid) == await ledger.service.get_items(sid)
        copy = await other.service.get_session(sid, user_id="alice")
        assert copy is not None
        assert [_visible(m) for m in copy.messages] == [_visible(m) for m in original.messages]
        assert (copy.agent_name, copy.metadata, copy.created_at, copy.updated_at) == (
            original.agent_name,
            original.metadata,
            original.created_at,
            original.updated_at,
        )
        assert await other.service.export_session(sid) == transcript

        again = await other.service.import_session(parsed, user_id="alice")
        assert (again.items_added, again.created) == (0, False)
        assert len(await other.service.get_items(sid)) == 8


async def test_reimport_into_the_source_adds_nothing(ledger: Ledger) -> None:
    sid = await seed(ledger)
    transcript = await ledger.service.export_session(sid)
    before = await ledger.service.get_session(sid)
    result = await ledger.service.import_session(transcript, user_id="alice")
    assert (result.items_added, result.created) == (0, False)
    assert await ledger.service.get_session(sid) == before


async def test_import_under_a_new_id_and_resume_after_interruption(ledger: Ledger) -> None:
    sid = await seed(ledger)
    transcript = await ledger.service.export_session(sid)
    target = uuid.uuid4()
    # An import interrupted after 3 messages: what a partial run leaves behind.
    partial = dataclasses.replace(transcript, messages=transcript.messages[:3])
    first = await ledger.service.import_session(
        partial, user_id="alice", session_id=target, chunk_size=2
    )
    assert (first.items_added, first.created) == (3, True)
    rest = await ledger.service.import_session(
        transcript, user_id="alice", session_id=str(target), chunk_size=2
    )
    assert (rest.items_added, rest.created) == (5, False)
    assert await ledger.service.get_items(target) == await ledger.service.get_items(sid)
    keys = await ledger.service.batch_keys(target, prefix="transcript:")
    assert keys == [
        "transcript:1-2",
        "transcript:3-3",
        "transcript:4-5",
        "transcript:6-7",
        "transcript:8-8",
    ]
    page = await ledger.service.list_user_sessions("alice")
    counts = {summary.id: summary.message_count for summary in page}
    assert counts == {sid: 8, target: 8}


async def test_trimmed_sessions_keep_their_seqs(ledger: Ledger) -> None:
    sid = await seed(ledger)
    report = await ledger.service.apply_retention({"*": {"max_messages": 3}})
    assert report.trimmed_messages > 0
    transcript = await ledger.service.export_session(sid)
    assert transcript.trimmed_seq == report.trimmed_messages
    assert transcript.messages[0].seq == transcript.trimmed_seq + 1
    target = uuid.uuid4()
    await ledger.service.import_session(transcript, user_id="alice", session_id=target)
    copy = await ledger.service.get_session(target)
    source = await ledger.service.get_session(sid)
    assert copy is not None
    assert source is not None
    assert [m.seq for m in copy.messages] == [m.seq for m in source.messages]
    page = await ledger.service.list_user_sessions("alice")
    assert {s.message_count for s in page} == {len(source.messages)}
    appended = await ledger.service.add_message(target, "user", "more")
    assert appended.seq == source.messages[-1].seq + 1


async def test_conflicts_are_refused_and_write_nothing(ledger: Ledger) -> None:
    sid = await seed(ledger)
    transcript = await ledger.service.export_session(sid)

    with pytest.raises(AlreadyExistsError, match="another user"):
        await ledger.service.import_session(transcript, user_id="mallory")

    changed = dataclasses.replace(
        transcript,
        messages=(
            dataclasses.replace(transcript.messages[0], item={"role": "user", "content": "x"}),
            *transcript.messages[1:],
        ),
    )
    with pytest.raises(InvalidInputError, match="different message at seq 1"):
        await ledger.service.import_session(changed, user_id="alice")

    target = uuid.uuid4()
    bad = dataclasses.replace(
        transcript,
        messages=(*transcript.messages, dataclasses.replace(transcript.messages[0], seq=9, item=7)),
    )
    with pytest.raises(InvalidInputError):
        await ledger.service.import_session(bad, user_id="alice", session_id=target)
    assert await ledger.service.get_session(target) is None
    async with ledger.engine.connect() as connection:
        sessions = await connection.scalar(select(func.count()).select_from(AgentSession))
        messages = await connection.scalar(select(func.count()).select_from(ConversationMessage))
    assert (sessions, messages) == (1, 8)


async def test_export_respects_ownership(ledger: Ledger) -> None:
    sid = await seed(ledger)
    with pytest.raises(SessionNotFoundError, match="does not exist"):
        await ledger.service.export_session(sid, user_id="mallory")
    with pytest.raises(SessionNotFoundError):
        await ledger.service.export_session(uuid.uuid4())


async def test_markdown_shows_the_conversation_with_tool_calls(ledger: Ledger) -> None:
    sid = await seed(ledger)
    await ledger.service.set_title(sid, "Weather in Zürich")
    markdown = render_markdown(await ledger.service.export_session(sid))
    assert markdown.startswith("# Weather in Zürich\n")
    assert "## 1 · System" in markdown
    assert "## 2 · User" in markdown
    assert "## 3 · Tool call `get_weather`" in markdown
    assert '"city": "Zürich"' in markdown  # arguments, pretty-printed
    assert "## 4 · Tool result for `call_1`" in markdown
    assert "nul\\0 esc" in markdown  # U+0000 made visible
    assert "## 5 · Reasoning" in markdown
    assert "## 6 · Assistant\n\n```\nSunny ☀\n```" in markdown  # bodies are fenced
    assert "Tool call `f` (call id `c2`)" in markdown
    assert "## 8 · Tool result for `c2`" in markdown
    assert "\x00" not in markdown


def test_jsonl_reader_names_the_problem() -> None:
    transcript = SessionTranscript(
        id=uuid.uuid4(),
        user_id="u",
        agent_name="a",
        metadata={},
        created_at=datetime.now(UTC),
        updated_at=datetime.now(UTC),
    )
    good = dumps_jsonl(transcript)
    header = json.loads(good.splitlines()[0])
    assert loads_jsonl(good) == transcript

    def with_header(**changes: Any) -> str:
        return json.dumps({**header, **changes}) + "\n"

    cases = {
        "": "is empty",
        "not json\n": "line 1: not valid JSON",
        '{"format": "other"}\n': "not an agentledger transcript",
        with_header(version=99): "version 99 is not supported",
        with_header(message_count=2): "holds 0 of the 2 messages",
        with_header(message_count=1)
        + '{"seq": 2, "item": {}}\n': "expected the message with seq 1",
        with_header(message_count=1) + '{"seq": 1}\n': "line 2",
    }
    for text, problem in cases.items():
        with pytest.raises(InvalidInputError, match=problem):
            loads_jsonl(text, source="t.jsonl")


def test_cli_export_and_import(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def prepare() -> uuid.UUID:
        async with Ledger.from_url(database_url) as ledger:
            sid = await seed(ledger)
            past = datetime.now(UTC) - timedelta(days=3)
            old = SessionService(ledger.unit_of_work, clock=lambda: past)
            other = await old.create_session("alice", "Other")
            await old.add_message(other.id, "user", "older one")
            return sid

    sid = run_sync(prepare())
    url = ["--database-url", database_url]

    assert main([*url, "sessions", "export", str(sid), "-o", str(tmp_path / "one.jsonl")]) == 0
    assert f"exported session {sid} (8 messages)" in capsys.readouterr().out
    assert main([*url, "sessions", "export", str(sid), "--format", "markdown"]) == 0
    assert "Tool call `get_weather`" in capsys.readouterr().out
    assert (
        main([*url, "sessions", "export", "--all", "--user", "alice", "-o", str(tmp_path / "all")])
        == 0
    )
    assert "exported 2 sessions (9 messages) of user 'alice'" in capsys.readouterr().out
    assert len(list((tmp_path / "all").glob("*.jsonl"))) == 2

    # Into another user's account under new ids is refused; the same user re-imports nothing.
    assert main([*url, "sessions", "import", str(tmp_path / "all"), "--user", "alice"]) == 0
    assert "imported 2 sessions (0 new) with 0 new items" in capsys.readouterr().out
    new_id = uuid.uuid4()
    args = ["sessions", "import", str(tmp_path / "one.jsonl"), "--user", "alice"]
    assert main([*url, *args, "--session-id", str(new_id)]) == 0
    assert f"imported 8 new items into new session {new_id}" in capsys.readouterr().out
    assert main([*url, *args, "--session-id", str(new_id)]) == 0
    assert f"imported 0 new items into existing session {new_id}" in capsys.readouterr().out
    assert main([*url, *args, "--session-id", str(new_id), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "user_id": "alice",
        "sessions": [
            {
                "file": str(tmp_path / "one.jsonl"),
                "session_id": str(new_id),
                "created": False,
                "items_added": 0,
            }
        ],
    }
    assert main([*url, "sessions", "import", str(tmp_path / "one.jsonl"), "--user", "bob"]) == 1
    assert "another user" in capsys.readouterr().err
    (tmp_path / "broken.jsonl").write_text("{}\n", encoding="utf-8")
    assert main([*url, "sessions", "import", str(tmp_path / "broken.jsonl"), "--user", "a"]) == 1
    assert "not an agentledger transcript" in capsys.readouterr().err
    # A usage mistake exits 2, like argparse's own.
    assert main([*url, "sessions", "export", "--all", "--user", "alice"]) == 2
    assert "-o DIR" in capsys.readouterr().err

    async def check() -> None:
        async with Ledger.from_url(database_url) as ledger:
            assert await ledger.service.get_items(new_id) == await ledger.service.get_items(sid)

    run_sync(check())


async def test_a_named_session_keeps_its_name_through_export_and_import(
    ledger: Ledger, empty_database_url: str
) -> None:
    memory = ledger.agent_session("support-chat", user_id="alice", agent_name="A")
    await memory.add_items([{"role": "user", "content": "hello"}])
    transcript = await ledger.service.export_session(memory.ledger_session_id)
    assert transcript.name == "support-chat"
    parsed = loads_jsonl(dumps_jsonl(transcript))
    assert parsed.name == "support-chat"

    async with Ledger.from_url(empty_database_url) as other:
        await other.upgrade()
        await other.service.import_session(parsed, user_id="alice")
        # The same name opens the imported history there.
        there = other.agent_session("support-chat", user_id="alice", agent_name="A")
        assert await there.get_items() == [{"role": "user", "content": "hello"}]

        # Imported again under a new id, the copy leaves the name to the session holding it.
        copy = await other.service.import_session(parsed, user_id="alice", session_id=uuid.uuid4())
        record = await other.service.get_session(copy.session_id, user_id="alice")
        assert record is not None
        assert record.name is None
        assert await other.service.resolve_name("support-chat", user_id="alice") == (
            memory.ledger_session_id
        )
