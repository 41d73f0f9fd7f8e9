"""Compare-and-append: ``expected_last_seq=N`` stores a batch only onto a session that still
ends at seq N; otherwise StaleSessionError (with the current last seq) and nothing written."""

from __future__ import annotations

import asyncio

import pytest

from agentledger import (
    ConflictError,
    InvalidInputError,
    Ledger,
    SessionNotFoundError,
    StaleSessionError,
)
from tests.support.items import contents


async def test_an_append_onto_the_expected_last_seq_is_stored(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u", "a")
    first = await svc.add_messages(
        session.id, [{"role": "user", "content": "one"}], expected_last_seq=0
    )
    assert first.first_seq == 1
    record = await svc.add_message(session.id, "assistant", "two", expected_last_seq=1)
    assert record.seq == 2
    third = await svc.add_items(
        session.id, [{"role": "user", "content": "three"}], expected_last_seq=2
    )
    assert (third.first_seq, third.count) == (3, 1)
    assert contents(await svc.get_items(session.id)) == ["one", "two", "three"]


async def test_a_stale_expected_last_seq_writes_nothing(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u", "a")
    await svc.add_messages(session.id, [{"role": "user", "content": f"m{n}"} for n in range(3)])
    for call in (
        svc.add_messages(session.id, [{"role": "user", "content": "late"}], expected_last_seq=2),
        svc.add_message(session.id, "user", "late", expected_last_seq=0),
        svc.add_items(
            session.id,
            [{"role": "user", "content": "late"}],
            expected_last_seq=7,
            idempotency_key="k1",
        ),
    ):
        with pytest.raises(StaleSessionError) as caught:
            await call
        assert caught.value.last_seq == 3
        assert "expected_last_seq=3" in str(caught.value)
        assert isinstance(caught.value, ConflictError)
        assert caught.value.retryable is False
    assert contents(await svc.get_items(session.id)) == ["m0", "m1", "m2"]
    # The key of the refused batch was not used up.
    assert await svc.batch_keys(session.id) == []
    # After a pop the session ends one seq earlier; the next append lands there.
    await svc.pop_item(session.id)
    with pytest.raises(StaleSessionError) as caught:
        await svc.add_message(session.id, "user", "x", expected_last_seq=3)
    assert caught.value.last_seq == 2


async def test_a_retried_idempotent_batch_returns_the_first_result(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u", "a")
    batch = [{"role": "user", "content": "once"}]
    first = await svc.add_messages(session.id, batch, "turn-1", expected_last_seq=0)
    # The retry's expectation is stale now, but it is the same batch: it was stored once.
    again = await svc.add_messages(session.id, batch, "turn-1", expected_last_seq=0)
    assert again.first_seq == first.first_seq
    assert again.created is False
    assert contents(await svc.get_items(session.id)) == ["once"]


async def test_concurrent_writers_with_the_same_expectation_one_wins(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u", "a")
    await svc.add_message(session.id, "user", "start")

    async def writer(n: int) -> str:
        try:
            await svc.add_items(
                session.id, [{"role": "assistant", "content": f"w{n}"}], expected_last_seq=1
            )
        except StaleSessionError:
            return "stale"
        return "stored"

    outcomes = await asyncio.gather(*(writer(n) for n in range(6)))
    assert sorted(outcomes) == ["stale"] * 5 + ["stored"]
    assert len(await svc.get_items(session.id)) == 2


async def test_bad_expectations_are_refused_before_anything_is_read(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u", "a")
    with pytest.raises(InvalidInputError, match="expected_last_seq"):
        await svc.add_message(session.id, "user", "x", expected_last_seq=-1)
    with pytest.raises(TypeError, match="expected_last_seq"):
        await svc.add_message(session.id, "user", "x", expected_last_seq="0")  # type: ignore[arg-type]
    # Another user's session stays invisible: not found, not stale.
    with pytest.raises(SessionNotFoundError):
        await svc.add_message(session.id, "user", "x", user_id="intruder", expected_last_seq=0)
    assert await svc.get_items(session.id) == []
