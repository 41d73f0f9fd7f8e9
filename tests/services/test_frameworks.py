"""Sessions record their agent framework: created with it, read, listed, filtered, exported,
imported, forked and shown by the CLI alike for every framework."""

from __future__ import annotations

import json
import uuid

import pytest

from agentledger import AlreadyExistsError, InvalidInputError, Ledger
from agentledger.cli import main
from agentledger.domain.records import SessionSpec
from agentledger.transcripts import dumps_jsonl, loads_jsonl, render_markdown
from tests.conftest import run_sync


async def test_framework_defaults_to_the_agents_sdk_and_is_kept(ledger: Ledger) -> None:
    svc = ledger.service
    plain = await svc.create_session("u1", "A")
    adk = await svc.create_session("u1", "A", framework="adk", name="chat-1")
    assert (plain.framework, adk.framework, adk.name) == ("openai-agents", "adk", "chat-1")

    stored = await svc.get_session(adk.id)
    assert stored is not None
    assert (stored.framework, stored.name) == ("adk", "chat-1")
    page = await svc.list_user_sessions("u1")
    assert {s.id: s.framework for s in page} == {plain.id: "openai-agents", adk.id: "adk"}


async def test_listing_keeps_one_framework(ledger: Ledger) -> None:
    svc = ledger.service
    ids = {
        framework: (await svc.create_session("u1", "A", framework=framework)).id
        for framework in ("openai-agents", "adk", "langchain")
    }
    for framework, session_id in ids.items():
        page = await svc.list_user_sessions("u1", framework=framework)
        assert [s.id for s in page] == [session_id]
    assert len(await svc.list_user_sessions("u1")) == 3


@pytest.mark.parametrize("bad", ["", "ADK", "two words", "-adk", "adk-", "a" * 33, "adk\x00"])
async def test_unknown_spellings_are_refused_before_writing(ledger: Ledger, bad: str) -> None:
    svc = ledger.service
    with pytest.raises(InvalidInputError, match="framework must be a lower-case identifier"):
        await svc.create_session("u1", "A", framework=bad)
    with pytest.raises(InvalidInputError, match="framework must be a lower-case identifier"):
        await svc.list_user_sessions("u1", framework=bad)
    assert len(await svc.list_user_sessions("u1")) == 0


async def test_a_taken_id_or_name_is_refused(ledger: Ledger) -> None:
    svc = ledger.service
    first = await svc.create_session("u1", "A", framework="adk", name="n")
    with pytest.raises(AlreadyExistsError):
        await svc.create_session("u1", "A", session_id=first.id)
    with pytest.raises(AlreadyExistsError):
        await svc.create_session("u1", "A", framework="adk", name="n")
    # Names are per user.
    other = await svc.create_session("u2", "A", framework="adk", name="n")
    assert other.name == "n"


async def test_adapters_create_sessions_of_their_framework(ledger: Ledger) -> None:
    svc = ledger.service
    spec = SessionSpec("u1", "A", "named", framework="langchain")
    session_id = await svc.resolve_name("named", user_id="u1", create_as=spec)
    assert session_id is not None
    other = uuid.uuid4()
    await svc.add_items(
        other,
        [{"role": "user", "content": "hi"}],
        user_id="u1",
        create_as=SessionSpec("u1", "A", framework="adk"),
    )
    page = await svc.list_user_sessions("u1")
    assert {s.id: s.framework for s in page} == {session_id: "langchain", other: "adk"}


async def test_export_import_and_fork_keep_the_framework(ledger: Ledger) -> None:
    svc = ledger.service
    source = await svc.create_session("u1", "A", framework="adk")
    await svc.add_messages(source.id, [{"role": "user", "content": "hello"}])

    transcript = await svc.export_session(source.id)
    assert transcript.framework == "adk"
    assert "- framework: `adk`" in render_markdown(transcript)
    text = dumps_jsonl(transcript)
    assert json.loads(text.splitlines()[0])["session"]["framework"] == "adk"
    back = loads_jsonl(text)
    assert back.framework == "adk"

    result = await svc.import_session(back, user_id="u2", session_id=uuid.uuid4())
    imported = await svc.get_session(result.session_id)
    assert imported is not None
    assert imported.framework == "adk"
    fork = await svc.fork_session(source.id)
    assert fork.framework == "adk"


def test_transcripts_without_a_framework_are_the_agents_sdks() -> None:
    header = {
        "format": "agentledger.transcript",
        "version": 1,
        "session": {
            "id": str(uuid.uuid4()),
            "user_id": "u",
            "agent_name": "A",
            "metadata": {},
            "created_at": "2026-01-01T00:00:00+00:00",
            "updated_at": "2026-01-01T00:00:00+00:00",
        },
        "message_count": 0,
    }
    assert loads_jsonl(json.dumps(header)).framework == "openai-agents"
    header["session"]["framework"] = "Not Valid"  # type: ignore[index]
    with pytest.raises(InvalidInputError, match="framework"):
        loads_jsonl(json.dumps(header))


async def _seed(url: str) -> tuple[uuid.UUID, uuid.UUID]:
    async with Ledger.from_url(url) as ledger:
        adk = await ledger.service.create_session("u1", "A", framework="adk")
        plain = await ledger.service.create_session("u1", "A")
        return adk.id, plain.id


def test_cli_lists_filters_and_shows_the_framework(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    adk, plain = run_sync(_seed(database_url))
    base = ["--database-url", database_url, "sessions"]

    assert main([*base, "list", "--user", "u1", "--framework", "adk", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["sessions"]
    assert [(s["id"], s["framework"]) for s in listed] == [(str(adk), "adk")]
    assert main([*base, "list", "--user", "u1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(str(adk) in line and "  adk  A" in line for line in lines), lines
    assert any(str(plain) in line and "  openai-agents  A" in line for line in lines), lines
    assert main([*base, "show", str(adk), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["framework"] == "adk"
    assert main([*base, "show", str(adk)]) == 0
    assert "framework adk" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["", "a\x00b", "x" * 300])
async def test_a_write_that_creates_a_session_checks_its_name_first(
    ledger: Ledger, name: str
) -> None:
    """create_as is checked as create_session's arguments are (regression: PostgreSQL raised
    a raw database error, SQLite stored the name)."""
    sid = uuid.uuid4()
    spec = SessionSpec("u1", "bot", name, framework="langchain")
    with pytest.raises(InvalidInputError, match="session name"):
        await ledger.service.add_items(sid, [{"role": "user", "content": "hi"}], create_as=spec)
    assert await ledger.service.get_session(sid) is None
    with pytest.raises(InvalidInputError, match="framework"):
        await ledger.service.add_items(
            sid, [{"role": "user", "content": "hi"}], create_as=SessionSpec("u1", "bot", None, "X!")
        )
