"""Usage as a history: the records of one session (usage per turn) and a user's usage per UTC
day and agent (the transcript browser's chart), on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from agentledger import Ledger, SessionService
from agentledger.domain.records import DailyUsage, Usage
from agentledger.errors import InvalidInputError

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def at(ledger: Ledger, when: datetime) -> SessionService:
    return SessionService(ledger.unit_of_work, clock=lambda: when)


async def test_usage_entries_are_the_sessions_runs_in_order(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("alice", "Coder")
    other = await svc.create_session("bob", "Coder")
    for hours, tokens in ((3, 30), (1, 10), (2, 20)):
        await at(ledger, NOW + timedelta(hours=hours)).record_usage(
            session.id, Usage(1, tokens, 0, tokens)
        )
    await svc.record_usage(other.id, Usage(1, 5, 5, 10))
    entries = await svc.get_usage_entries(session.id, user_id="alice")
    assert [entry.usage.total_tokens for entry in entries] == [10, 20, 30]
    assert entries[0].created_at == NOW + timedelta(hours=1)
    assert entries[0].created_at.tzinfo is not None
    assert [e.usage.total_tokens for e in await svc.get_usage_entries(session.id, limit=2)] == [
        10,
        20,
    ]
    assert await svc.get_usage_entries(session.id, user_id="bob") == []
    with pytest.raises(InvalidInputError):
        await svc.get_usage_entries(session.id, limit=0)


async def test_daily_usage_sums_per_utc_day_and_agent(ledger: Ledger) -> None:
    coder = await ledger.service.create_session("alice", "Coder")
    coder_two = await ledger.service.create_session("alice", "Coder")
    planner = await ledger.service.create_session("alice", "Planner")
    bob = await ledger.service.create_session("bob", "Coder")
    late = datetime(2026, 3, 8, 23, 59, 59, tzinfo=UTC)
    writes = [
        (coder.id, late, 100),
        (coder_two.id, late - timedelta(hours=5), 50),
        (coder.id, late + timedelta(seconds=2), 7),  # just after midnight UTC: the next day
        (planner.id, datetime(2026, 3, 9, 1, tzinfo=UTC), 30),
        (coder.id, datetime(2026, 2, 1, tzinfo=UTC), 999),  # before the window
        (bob.id, late, 4000),
    ]
    for session_id, when, tokens in writes:
        await at(ledger, when).record_usage(session_id, Usage(1, tokens, 0, tokens))
    daily = await at(ledger, NOW).get_daily_usage("alice", days=7)
    assert daily == [
        DailyUsage(date(2026, 3, 8), "Coder", Usage(2, 150, 0, 150)),
        DailyUsage(date(2026, 3, 9), "Coder", Usage(1, 7, 0, 7)),
        DailyUsage(date(2026, 3, 9), "Planner", Usage(1, 30, 0, 30)),
    ]
    assert await at(ledger, NOW).get_daily_usage("alice", days=1) == []
    assert await at(ledger, NOW).get_daily_usage("carol") == []
