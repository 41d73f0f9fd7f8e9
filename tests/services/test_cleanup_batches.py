"""cleanup_sessions bounds each batch by messages too, so no batch holds its locks for long."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from agentledger import Ledger, SessionService

LONG_AGO = datetime.now(UTC) - timedelta(days=90)


async def old_session(ledger: Ledger, messages: int, age: int = 0) -> uuid.UUID:
    """A session idle for 90 days (and ``age`` seconds) holding ``messages`` messages."""
    when = LONG_AGO - timedelta(seconds=age)
    svc = SessionService(ledger.unit_of_work, clock=lambda: when)
    session = await svc.create_session("u1", "A")
    await svc.add_messages(session.id, [{"role": "user", "content": "old"}] * messages)
    return session.id


async def test_batches_stop_at_the_message_budget(ledger: Ledger) -> None:
    sizes = [5, 5, 2, 2, 2, 30, 1]
    # Oldest first: that is the order cleanup takes them in.
    ids = [await old_session(ledger, size, age=len(sizes) - i) for i, size in enumerate(sizes)]
    fresh = await ledger.service.create_session("u1", "A")
    progress: list[int] = []
    deleted = await ledger.service.cleanup_sessions(
        older_than=timedelta(days=30),
        batch_size=100,
        max_batch_messages=7,
        on_progress=progress.append,
    )
    assert deleted == len(sizes)
    # 5 | 5+2 | 2+2 | 30 (bigger than the budget: alone) | 1
    assert progress == [1, 3, 5, 6, 7]
    for session_id in ids:
        assert await ledger.service.get_session(session_id) is None
    assert await ledger.service.get_session(fresh.id) is not None


async def test_session_count_still_bounds_batches(ledger: Ledger) -> None:
    for age in range(5):
        await old_session(ledger, 1, age)
    progress: list[int] = []
    deleted = await ledger.service.cleanup_sessions(
        older_than=timedelta(days=30), batch_size=2, on_progress=progress.append
    )
    assert deleted == 5
    assert progress == [2, 4, 5]


async def test_message_budget_must_be_positive(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="max_batch_messages"):
        await ledger.service.cleanup_sessions(older_than=timedelta(days=1), max_batch_messages=0)
