"""cleanup_sessions (batched, clock-driven, dry run) and token usage totals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentledger import Ledger, SessionNotFoundError, SessionService, Usage

LONG_AGO = datetime.now(UTC) - timedelta(days=90)


def old_service(ledger: Ledger, when: datetime = LONG_AGO) -> SessionService:
    """A service whose clock says ``when``: what it writes looks idle since then."""
    return SessionService(ledger.unit_of_work, clock=lambda: when)


async def make_old_sessions(ledger: Ledger, count: int) -> list[uuid.UUID]:
    svc = old_service(ledger)
    ids = []
    for i in range(count):
        session = await svc.create_session("u1", "A")
        await svc.add_messages(session.id, [{"role": "user", "content": f"old {i}"}] * 3)
        ids.append(session.id)
    return ids


async def test_cleanup_deletes_old_sessions_in_batches(ledger: Ledger) -> None:
    old = await make_old_sessions(ledger, 5)
    fresh = await ledger.service.create_session("u1", "A")
    await ledger.service.add_message(fresh.id, "user", "new")
    # Created long ago but written to just now: not idle.
    revived = (await old_service(ledger).create_session("u1", "A")).id
    await ledger.service.add_message(revived, "user", "still here")

    progress: list[int] = []
    deleted = await ledger.service.cleanup_sessions(
        older_than=timedelta(days=30), batch_size=2, on_progress=progress.append
    )

    assert deleted == 5
    assert progress == [2, 4, 5]
    for session_id in old:
        assert await ledger.service.get_session(session_id) is None
    survivor = await ledger.service.get_session(fresh.id)
    assert survivor is not None
    assert [m.content for m in survivor.messages] == ["new"]
    assert await ledger.service.get_session(revived) is not None
    # Nothing left to clean.
    assert await ledger.service.cleanup_sessions(older_than=timedelta(days=30)) == 0


async def test_cleanup_with_batch_size_dividing_the_count(ledger: Ledger) -> None:
    await make_old_sessions(ledger, 4)
    progress: list[int] = []
    deleted = await ledger.service.cleanup_sessions(
        older_than=timedelta(days=1), batch_size=2, on_progress=progress.append
    )
    assert deleted == 4
    assert progress == [2, 4]


async def test_cleanup_dry_run_counts_without_deleting(ledger: Ledger) -> None:
    old = await make_old_sessions(ledger, 3)
    fresh = await ledger.service.create_session("u1", "A")

    assert await ledger.service.cleanup_sessions(older_than=timedelta(days=30), dry_run=True) == 3
    assert await ledger.service.count_idle_sessions(timedelta(days=30)) == (3, 9)
    for session_id in (*old, fresh.id):
        assert await ledger.service.get_session(session_id) is not None
    page = await ledger.service.list_user_sessions("u1")
    assert len(page) == 4


async def test_cleanup_respects_the_threshold(ledger: Ledger) -> None:
    await make_old_sessions(ledger, 2)  # 90 days old
    ten_days = old_service(ledger, datetime.now(UTC) - timedelta(days=10))
    recent = await ten_days.create_session("u1", "A")

    assert await ledger.service.cleanup_sessions(older_than=timedelta(days=100)) == 0
    assert await ledger.service.cleanup_sessions(older_than=timedelta(days=30)) == 2
    assert await ledger.service.get_session(recent.id) is not None
    assert await ledger.service.cleanup_sessions(older_than=timedelta(days=5)) == 1
    assert await ledger.service.get_session(recent.id) is None


async def test_cleanup_refuses_bad_arguments(ledger: Ledger) -> None:
    await make_old_sessions(ledger, 1)
    bad: list[tuple[Any, int]] = [(timedelta(days=-1), 10), (30, 10), (timedelta(days=1), 0)]
    for older_than, batch_size in bad:
        with pytest.raises(ValueError, match=r"older_than|batch_size"):
            await ledger.service.cleanup_sessions(older_than=older_than, batch_size=batch_size)
    assert len(await ledger.service.list_user_sessions("u1")) == 1


async def test_usage_totals(ledger: Ledger) -> None:
    svc = ledger.service
    one = await svc.create_session("alice", "A")
    two = await svc.create_session("alice", "A")
    other = await svc.create_session("bob", "A")

    assert await svc.get_usage(one.id) == Usage(0, 0, 0, 0)
    await svc.record_usage(
        one.id, Usage(requests=1, input_tokens=10, output_tokens=5, total_tokens=15)
    )
    await svc.record_usage(
        one.id, Usage(requests=2, input_tokens=20, output_tokens=7, total_tokens=27)
    )
    await svc.record_usage(
        two.id, Usage(requests=1, input_tokens=100, output_tokens=1, total_tokens=101)
    )
    await svc.record_usage(
        other.id, Usage(requests=9, input_tokens=9, output_tokens=9, total_tokens=18)
    )

    usage = await svc.get_usage(one.id)
    assert (usage.requests, usage.input_tokens, usage.output_tokens, usage.total_tokens) == (
        3,
        30,
        12,
        42,
    )
    assert await svc.get_usage(str(two.id)) == Usage(1, 100, 1, 101)
    assert await svc.get_user_usage("alice") == Usage(4, 130, 13, 143)
    assert await svc.get_user_usage("bob") == Usage(9, 9, 9, 18)
    assert await svc.get_user_usage("nobody") == Usage()

    # Usage goes with its session.
    assert await svc.delete_session(one.id) is True
    assert await svc.get_user_usage("alice") == Usage(1, 100, 1, 101)


async def test_usage_checks_owner_and_values(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("alice", "A")
    with pytest.raises(SessionNotFoundError):
        await svc.record_usage(session.id, Usage(1, 1, 1, 2), user_id="mallory")
    with pytest.raises(SessionNotFoundError):
        await svc.record_usage(uuid.uuid4(), Usage(1, 1, 1, 2))
    with pytest.raises(ValueError, match="input_tokens"):
        await svc.record_usage(session.id, Usage(1, -5, 1, 2))
    assert await svc.get_usage(session.id) == Usage()
    await svc.record_usage(session.id, Usage(1, 1, 1, 2), user_id="alice")
    assert await svc.get_usage(session.id, user_id="alice") == Usage(1, 1, 1, 2)
