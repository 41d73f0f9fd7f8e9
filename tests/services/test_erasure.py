"""erase_user: every session, message and usage record of one user, in batches, counted."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from agentledger import (
    ErasureReport,
    InvalidInputError,
    Ledger,
    SessionNotFoundError,
    SessionRecord,
    Usage,
)
from tests.support.lifecycle import snapshot, trim_front


async def seed_user(ledger: Ledger, user_id: str, sessions: int) -> ErasureReport:
    """``sessions`` sessions with 1..n messages, an idempotent batch and usage; their counts."""
    svc = ledger.service
    messages = usage_records = 0
    for n in range(sessions):
        session = await svc.create_session(user_id, f"agent-{n % 2}", {"n": n})
        batch = [{"role": "user", "content": f"{user_id} q{n}.{i}"} for i in range(n + 1)]
        await svc.add_messages(session.id, batch, idempotency_key=f"turn-{n}")
        for _ in range(n % 3):
            await svc.record_usage(session.id, Usage(1, 10, 5, 15))
        messages += n + 1
        usage_records += n % 3
    return ErasureReport(sessions, messages, usage_records)


async def user_rows(ledger: Ledger, user_id: str) -> dict[str, int]:
    """Rows that still reference ``user_id``'s sessions, per table."""
    counts = {}
    async with ledger.engine.connect() as connection:
        for table in ("conversation_messages", "conversation_batches", "session_usage"):
            result = await connection.execute(
                text(
                    f"SELECT count(*) FROM {table} t JOIN agent_sessions s ON s.id = t.session_id "
                    "WHERE s.user_id = :user_id"
                ),
                {"user_id": user_id},
            )
            counts[table] = int(result.scalar_one())
        result = await connection.execute(
            text("SELECT count(*) FROM agent_sessions WHERE user_id = :user_id"),
            {"user_id": user_id},
        )
        counts["agent_sessions"] = int(result.scalar_one())
    return counts


async def all_rows(ledger: Ledger) -> dict[str, int]:
    async with ledger.engine.connect() as connection:
        return {
            table: int(
                (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            )
            for table in (
                "agent_sessions",
                "conversation_messages",
                "conversation_batches",
                "session_usage",
            )
        }


async def histories(ledger: Ledger, user_id: str) -> list[SessionRecord | None]:
    page = await ledger.service.list_user_sessions(user_id, 1000)
    return [await ledger.service.get_session(s.id) for s in page]


async def test_erase_user_removes_everything_of_the_user_and_reports_it(ledger: Ledger) -> None:
    svc = ledger.service
    expected = await seed_user(ledger, "alice", 7)
    await seed_user(ledger, "bob", 3)
    bob_before = await histories(ledger, "bob")
    bob_usage = await svc.get_user_usage("bob")

    assert await svc.erase_user("alice", dry_run=True) == expected
    report = await svc.erase_user("alice")

    assert report == expected
    assert report.sessions == 7
    assert report.messages == 28
    assert report.usage_records == 6
    assert await user_rows(ledger, "alice") == dict.fromkeys(
        ("conversation_messages", "conversation_batches", "session_usage", "agent_sessions"), 0
    )
    assert list(await svc.list_user_sessions("alice")) == []
    assert await svc.get_user_usage("alice") == Usage()
    # Nothing left anywhere that belonged to alice: the totals are exactly bob's.
    assert await all_rows(ledger) == {
        "agent_sessions": 3,
        "conversation_messages": 6,
        "conversation_batches": 3,
        "session_usage": 3,
    }
    assert await histories(ledger, "bob") == bob_before
    assert await svc.get_user_usage("bob") == bob_usage

    # Erasing again (or an unknown user) finds nothing.
    assert await svc.erase_user("alice") == ErasureReport(0, 0, 0)
    assert await svc.erase_user("nobody", dry_run=True) == ErasureReport(0, 0, 0)


class Interrupted(Exception):
    pass


async def test_batches_commit_one_by_one_and_an_interrupted_erasure_resumes(
    ledger: Ledger,
) -> None:
    svc = ledger.service
    seeded = await seed_user(ledger, "alice", 5)
    totals: list[ErasureReport] = []

    def stop_after_two_batches(total: ErasureReport) -> None:
        totals.append(total)
        if len(totals) == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        await svc.erase_user("alice", batch_size=2, on_progress=stop_after_two_batches)

    # Progress is reported after each batch committed: two batches are gone for good.
    assert [t.sessions for t in totals] == [2, 4]
    assert totals[0].messages < totals[1].messages
    assert (await user_rows(ledger, "alice"))["agent_sessions"] == 1

    rest = await svc.erase_user("alice", batch_size=2, on_progress=totals.append)
    assert rest.sessions == 1
    assert totals[-1] == rest
    assert totals[1] + rest == seeded == ErasureReport(5, 15, 4)
    assert await user_rows(ledger, "alice") == dict.fromkeys(
        ("conversation_messages", "conversation_batches", "session_usage", "agent_sessions"), 0
    )


async def test_erasure_counts_trimmed_sessions_exactly(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("alice", "A")
    await svc.add_messages(session.id, [{"role": "user", "content": str(i)} for i in range(10)])
    await trim_front(ledger, session.id, 4)

    assert await svc.erase_user("alice", dry_run=True) == ErasureReport(1, 6, 0)
    assert await svc.erase_user("alice") == ErasureReport(1, 6, 0)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"user_id": ""}, InvalidInputError, "user_id"),
        ({"user_id": "x" * 256}, InvalidInputError, "user_id"),
        ({"user_id": 7}, InvalidInputError, "user_id"),
        ({"user_id": "alice", "batch_size": 0}, ValueError, "batch_size"),
        ({"user_id": "alice", "batch_size": 10_001}, ValueError, "batch_size"),
        ({"user_id": "alice", "batch_size": "5"}, TypeError, "batch_size"),
        ({"user_id": "alice", "batch_size": True}, TypeError, "batch_size"),
    ],
)
async def test_bad_arguments_erase_nothing(
    ledger: Ledger, arguments: dict[str, Any], error: type[Exception], match: str
) -> None:
    await seed_user(ledger, "alice", 2)
    before = await snapshot(ledger)
    with pytest.raises(error, match=match):
        await ledger.service.erase_user(**arguments)
    assert await snapshot(ledger) == before


async def test_erasure_racing_appends_counts_exactly_what_it_removed(ledger: Ledger) -> None:
    """Appends and usage records racing the erasure land before it (and are counted) or
    fail with SessionNotFoundError; the report matches what was really written."""
    svc = ledger.service
    sessions = [await svc.create_session("alice", "A") for _ in range(6)]
    bob = await svc.create_session("bob", "A")
    written = {"messages": 0, "usage": 0, "bob": 0}
    started = asyncio.Event()

    async def appender(session_id: uuid.UUID) -> None:
        for turn in range(30):
            try:
                await svc.add_messages(
                    session_id,
                    [
                        {"role": "user", "content": f"t{turn}"},
                        {"role": "assistant", "content": "a"},
                    ],
                )
            except SessionNotFoundError:
                return
            written["messages"] += 2
            try:
                await svc.record_usage(session_id, Usage(1, 1, 1, 2), user_id="alice")
            except SessionNotFoundError:
                return
            written["usage"] += 1
            started.set()
            await asyncio.sleep(0)

    async def bystander() -> None:
        for turn in range(20):
            await svc.add_message(bob.id, "user", f"bob {turn}")
            written["bob"] += 1
            await asyncio.sleep(0)

    async def eraser() -> ErasureReport:
        await started.wait()
        return await svc.erase_user("alice", batch_size=2)

    results = await asyncio.wait_for(
        asyncio.gather(eraser(), bystander(), *(appender(s.id) for s in sessions)), timeout=90
    )
    report = results[0]
    assert isinstance(report, ErasureReport)  # gather's list mixes the tasks' result types

    assert report.sessions == 6
    assert report.messages == written["messages"]
    assert report.usage_records == written["usage"]
    assert written["messages"] > 0
    assert await user_rows(ledger, "alice") == dict.fromkeys(
        ("conversation_messages", "conversation_batches", "session_usage", "agent_sessions"), 0
    )
    record = await svc.get_session(bob.id)
    assert record is not None
    assert [m.seq for m in record.messages] == list(range(1, written["bob"] + 1))
