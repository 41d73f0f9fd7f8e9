"""Retention policies: trimming without splitting tool pairs, archive vs delete, dry runs, CLI."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentledger import (
    InvalidInputError,
    Ledger,
    LedgerSettings,
    RetentionPolicy,
    RetentionReport,
    SessionService,
)
from agentledger.cli import main
from agentledger.domain.retention import RetentionCounts, parse_policies, trim_cut
from agentledger.domain.windows import cut_points, has_unanchored_outputs
from tests.conftest import run_sync

LONG_AGO = datetime.now(UTC) - timedelta(days=90)


def call(call_id: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": "f", "arguments": "{}"}


def output(call_id: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": f"out {call_id}"}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


#: Ten items: a single call pair at 1-2, parallel calls at 5-8 (calls 5, 6; outputs 7, 8).
HISTORY = [
    user("u0"),
    call("a"),
    output("a"),
    assistant("a0"),
    user("u1"),
    call("b"),
    call("c"),
    output("b"),
    output("c"),
    assistant("a1"),
]


async def check_gap_free(ledger: Ledger, session_id: uuid.UUID, user_id: str = "u1") -> list[int]:
    """The session's seqs are trimmed_seq + 1 .. last_seq and the listing counts them."""
    record = await ledger.service.get_session(session_id)
    assert record is not None
    seqs = [m.seq for m in record.messages]
    if seqs:
        assert seqs == list(range(seqs[0], seqs[-1] + 1))
    page = await ledger.service.list_user_sessions(user_id, 100, include_archived=True)
    counts = {summary.id: summary.message_count for summary in page}
    assert counts[session_id] == len(seqs)
    return seqs


@pytest.mark.parametrize(
    ("max_messages", "kept"),
    [
        (10, 10),
        (9, 9),  # cut between u0 and the call: fine
        (8, 7),  # would split call a from its output: trims more, never keeps more than N
        (7, 7),
        (5, 5),
        (4, 1),  # inside the parallel calls: on past their outputs
        (3, 1),
        (2, 1),
        (1, 1),
        (0, 0),
    ],
)
async def test_trimming_never_splits_a_call_from_its_output(
    ledger: Ledger, max_messages: int, kept: int
) -> None:
    session = await ledger.service.create_session("u1", "A")
    await ledger.service.add_items(session.id, HISTORY)

    report = await ledger.service.apply_retention({"A": {"max_messages": max_messages}})

    items = await ledger.service.get_items(session.id)
    assert items == HISTORY[len(HISTORY) - kept :]
    assert cut_points(HISTORY)[len(HISTORY) - kept]
    trimmed = len(HISTORY) - kept
    assert report.trimmed_messages == trimmed
    assert report.trimmed_sessions == (1 if trimmed else 0)
    seqs = await check_gap_free(ledger, session.id)
    assert seqs == list(range(trimmed + 1, 11))

    # The history goes on after a trim: appends, pops and clears keep it gap-free.
    appended = await ledger.service.add_items(session.id, [user("next")])
    assert list(appended.seqs) == [11]
    await check_gap_free(ledger, session.id)
    popped = [await ledger.service.pop_item(session.id) for _ in range(kept + 2)]
    assert popped[0] == user("next")
    assert popped[-1] is None  # nothing left to pop; last_seq never drops below trimmed_seq
    assert await check_gap_free(ledger, session.id) == []
    assert list((await ledger.service.add_items(session.id, [user("x")])).seqs) == [trimmed + 1]
    await ledger.service.clear_session(session.id)
    assert await check_gap_free(ledger, session.id) == []
    assert list((await ledger.service.add_items(session.id, [user("y")])).seqs) == [1]


async def test_trimming_is_idempotent_and_keeps_reasoning_with_its_answer(ledger: Ledger) -> None:
    session = await ledger.service.create_session("u1", "A")
    items = [
        user("q"),
        {"type": "reasoning", "id": "r1", "summary": []},
        assistant("answer"),
        user("q2"),
        assistant("a2"),
    ]
    await ledger.service.add_items(session.id, items)
    first = await ledger.service.apply_retention({"*": {"max_messages": 3}})
    assert first.trimmed_messages == 3  # cutting after the reasoning would orphan the answer
    assert await ledger.service.get_items(session.id) == items[3:]
    second = await ledger.service.apply_retention({"*": {"max_messages": 3}})
    assert second.trimmed_messages == 0
    assert second.describe() == "nothing to do"


async def make_session(
    ledger: Ledger, agent: str, *, idle: bool, messages: int = 3, user_id: str = "u1"
) -> uuid.UUID:
    service = SessionService(ledger.unit_of_work, clock=lambda: LONG_AGO) if idle else None
    service = service or ledger.service
    session = await service.create_session(user_id, agent)
    await service.add_items(session.id, [user(f"m{n}") for n in range(messages)])
    return session.id


async def test_archive_delete_exempt_and_trim_per_agent(ledger: Ledger) -> None:
    support_old = await make_session(ledger, "support", idle=True, messages=5)
    support_new = await make_session(ledger, "support", idle=False, messages=5)
    other_old = await make_session(ledger, "other", idle=True)
    other_new = await make_session(ledger, "other", idle=False)
    audit_old = await make_session(ledger, "audit", idle=True)
    policies = {
        "*": {"days": 30},
        "support": {"days": 30, "archive": True, "max_messages": 2},
        "audit": {},
    }

    progress: list[RetentionReport] = []
    report = await ledger.service.apply_retention(
        policies, batch_size=1, on_progress=progress.append
    )

    assert report.policies == {
        "*": RetentionCounts(deleted_sessions=1, deleted_messages=3),
        "support": RetentionCounts(archived_sessions=1, trimmed_sessions=2, trimmed_messages=6),
        "audit": RetentionCounts(),
    }
    assert report.describe() == (
        "deleted 1 session (3 messages), archived 1 session, trimmed 6 messages from 2 sessions"
    )
    assert progress
    assert progress[-1] == report

    service = ledger.service
    assert await service.get_session(other_old) is None
    assert await service.get_session(other_new) is not None
    assert await service.get_session(audit_old) is not None
    archived = await service.get_session(support_old)
    assert archived is not None
    assert [m.content for m in archived.messages] == ["m3", "m4"]

    listed = {s.id for s in await service.list_user_sessions("u1", 100)}
    assert listed == {support_new, other_new, audit_old}
    everything = await service.list_user_sessions("u1", 100, include_archived=True)
    archived_at = {s.id: s.archived_at for s in everything}
    archived_when = archived_at[support_old]
    assert archived_when is not None
    assert archived_when.tzinfo is not None
    assert archived_at[support_new] is None
    # Archiving is not activity: the archived session keeps its idle time.
    assert {s.id: s.updated_at for s in everything}[support_old] < datetime.now(UTC) - timedelta(
        days=30
    )
    await check_gap_free(ledger, support_new)

    again = await service.apply_retention(policies)
    assert again.totals == RetentionCounts()


async def test_dry_run_reports_the_same_and_writes_nothing(ledger: Ledger) -> None:
    ids = [
        await make_session(ledger, "A", idle=True, messages=4),
        await make_session(ledger, "A", idle=False, messages=6),
        await make_session(ledger, "B", idle=True),
        await make_session(ledger, "B", idle=False, messages=6),
    ]
    policies = {"A": {"days": 10, "max_messages": 2}, "B": {"days": 10, "archive": True}}
    before = [await ledger.service.get_session(sid) for sid in ids]

    dry = await ledger.service.apply_retention(policies, dry_run=True)

    assert dry.dry_run
    assert [await ledger.service.get_session(sid) for sid in ids] == before
    real = await ledger.service.apply_retention(policies)
    assert not real.dry_run
    assert dry.policies == real.policies
    assert real.policies["A"] == RetentionCounts(
        deleted_sessions=1, deleted_messages=4, trimmed_sessions=1, trimmed_messages=4
    )
    assert dry.describe().startswith("would delete 1 session (4 messages), archive 1 session")


async def test_bad_policies_are_refused(ledger: Ledger) -> None:
    session = await make_session(ledger, "A", idle=True)
    bad: list[Any] = [
        {"*": {"days": -1}},
        {"*": {"dayz": 3}},
        {"*": {"max_messages": 1.5}},
        {"*": {"archive": True}},
        {"": {"days": 1}},
        ["*"],
        "not json",
    ]
    for policies in bad:
        with pytest.raises(InvalidInputError, match="retention polic"):
            await ledger.service.apply_retention(policies)
    with pytest.raises(ValueError, match="batch_size"):
        await ledger.service.apply_retention({"*": {"days": 1}}, batch_size=0)
    assert await ledger.service.get_session(session) is not None


def test_policies_from_settings_and_json() -> None:
    # Plain JSON, as policies arrive from the environment or a file; validation makes them
    # RetentionPolicy objects.
    raw: dict[str, Any] = {"*": {"days": 30}, "support": {"max_messages": 100}}
    settings = LedgerSettings(database_url="sqlite+aiosqlite:///x.db", retention=raw)
    assert settings.retention == {
        "*": RetentionPolicy(days=30),
        "support": RetentionPolicy(max_messages=100),
    }
    assert parse_policies('{"a": {"days": 1.5, "archive": true}}') == {
        "a": RetentionPolicy(days=1.5, archive=True)
    }
    assert RetentionPolicy(days=7, archive=True, max_messages=5).describe() == (
        "archive after 7 idle days, keep the last 5 messages"
    )
    assert trim_cut(HISTORY, 20) == 0


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLEDGER_RETENTION", '{"*": {"days": 14, "archive": true}}')
    assert LedgerSettings().retention == {"*": RetentionPolicy(days=14, archive=True)}


def test_cli_cleanup_with_policies(
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def seed() -> list[uuid.UUID]:
        async with Ledger.from_url(database_url) as ledger:
            return [
                await make_session(ledger, "A", idle=True, messages=2),
                await make_session(ledger, "B", idle=False, messages=5),
            ]

    old, long = run_sync(seed())
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"A": {"days": 30}, "*": {"max_messages": 3}}))
    url = ["--database-url", database_url]
    monkeypatch.delenv("AGENTLEDGER_RETENTION", raising=False)

    assert main([*url, "cleanup", "--policy", str(policy), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "would delete 1 session (2 messages), trim 2 messages from 1 session"
    assert out[1] == "  agent 'A' (delete after 30 idle days): would delete 1 session (2 messages)"
    assert out[2] == (
        "  every other agent (keep the last 3 messages): would trim 2 messages from 1 session"
    )

    assert main([*url, "cleanup", "--policy", str(policy)]) == 0
    assert capsys.readouterr().out.startswith(
        "deleted 1 session (2 messages), trimmed 2 messages from 1 session\n"
    )

    monkeypatch.setenv("AGENTLEDGER_RETENTION", '{"*": {"max_messages": 1}}')
    assert main([*url, "cleanup"]) == 0
    assert capsys.readouterr().out.startswith("trimmed 2 messages from 1 session\n")

    monkeypatch.delenv("AGENTLEDGER_RETENTION")
    assert main([*url, "cleanup"]) == 1
    assert "AGENTLEDGER_RETENTION" in capsys.readouterr().err
    assert main([*url, "cleanup", "--older-than", "30d", "--policy", str(policy)]) == 2
    assert "not allowed with argument --older-than" in capsys.readouterr().err
    policy.write_text('{"A": {"days": "soon"}}')
    assert main([*url, "cleanup", "--policy", str(policy)]) == 1
    assert "retention policy for 'A'" in capsys.readouterr().err
    assert main([*url, "cleanup", "--policy", str(tmp_path / "missing.json")]) == 1
    assert "cannot read the policy file" in capsys.readouterr().err

    async def check() -> None:
        async with Ledger.from_url(database_url) as ledger:
            assert await ledger.service.get_session(old) is None
            assert await ledger.service.get_items(long) == [user("m4")]

    run_sync(check())


async def test_trimming_while_appending_keeps_the_history_gap_free(ledger: Ledger) -> None:
    session = await ledger.service.create_session("u1", "A")
    writers, batches = 6, 5

    async def write(worker: int) -> None:
        for batch in range(batches):
            pair = f"{worker}-{batch}"
            await ledger.service.add_items(
                session.id, [user(pair), call(pair), output(pair), assistant(pair)]
            )

    async def trim() -> int:
        trimmed = 0
        for _ in range(8):
            report = await ledger.service.apply_retention({"A": {"max_messages": 6}})
            trimmed += report.trimmed_messages
            await asyncio.sleep(0)
        return trimmed

    results = await asyncio.gather(*(write(n) for n in range(writers)), trim())
    trimmed = results[-1]
    assert trimmed is not None  # trim()'s count (the writers return None)
    trimmed += (await ledger.service.apply_retention({"A": {"max_messages": 6}})).trimmed_messages

    total = writers * batches * 4
    seqs = await check_gap_free(ledger, session.id)
    assert seqs == list(range(trimmed + 1, total + 1))
    items = await ledger.service.get_items(session.id)
    # Batches are contiguous, so each call sits right before its output: a cut that would
    # split one moves a single item later.
    assert 5 <= len(items) <= 6
    assert not has_unanchored_outputs(items)
