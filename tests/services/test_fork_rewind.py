"""fork_session and rewind_session: exact copies and cuts, ownership, bad input, concurrency."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest

from agentledger import (
    InvalidInputError,
    Ledger,
    SessionNotFoundError,
    SessionRecord,
)
from tests.services.test_listing import counting_statements
from tests.support.lifecycle import count_rows, snapshot, trim_front

TOOL_CALL = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}


async def seeded(ledger: Ledger, **metadata: Any) -> SessionRecord:
    """A session of u1 with five messages (a tool call, a result holding U+0000)."""
    svc = ledger.service
    session = await svc.create_session("u1", "Helper", metadata or {"topic": "weather"})
    await svc.add_messages(
        session.id,
        [
            {"role": "user", "content": "What's the weather in Lisbon?"},
            {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
            {"role": "tool", "content": "sunny\x00 24C", "tool_call_id": "c1"},
            {"role": "assistant", "content": "It is sunny."},
            {"role": "user", "content": "And tomorrow?"},
        ],
    )
    record = await svc.get_session(session.id)
    assert record is not None
    return record


def chat(record: SessionRecord) -> list[tuple[Any, ...]]:
    return [
        (m.seq, m.role, m.content, m.tool_calls, m.tool_call_id, m.item_type, m.item)
        for m in record.messages
    ]


# -- fork ---------------------------------------------------------------------------------------


async def test_fork_copies_a_prefix_renumbered_with_new_ids(ledger: Ledger) -> None:
    svc = ledger.service
    source = await seeded(ledger)
    await svc.set_title(source.id, "Weather chat")

    fork = await svc.fork_session(source.id, at_seq=3)

    assert fork.id != source.id
    assert (fork.user_id, fork.agent_name, fork.metadata) == ("u1", "Helper", {"topic": "weather"})
    assert fork.title == "Weather chat"
    assert chat(fork) == chat(source)[:3]
    assert fork.messages[2].content == "sunny\x00 24C"
    # Copied timestamps are the originals'; ids are new (unique per copy).
    assert [m.created_at for m in fork.messages] == [m.created_at for m in source.messages[:3]]
    assert not {m.id for m in fork.messages} & {m.id for m in source.messages}
    assert len({m.id for m in fork.messages}) == 3

    # The returned record is what a fresh read gives; the SDK view matches item for item.
    assert await svc.get_session(fork.id) == fork
    assert await svc.get_items(fork.id) == (await svc.get_items(source.id))[:3]

    # Both histories go on independently, each gap-free.
    added = await svc.add_message(fork.id, "assistant", "Branch B")
    assert added.seq == 4
    await svc.add_message(source.id, "assistant", "Branch A")
    source_after = await svc.get_session(source.id)
    assert source_after is not None
    assert [m.seq for m in source_after.messages] == [1, 2, 3, 4, 5, 6]
    assert source_after.messages[-1].content == "Branch A"
    fork_after = await svc.get_session(fork.id)
    assert fork_after is not None
    assert [(m.seq, m.content) for m in fork_after.messages][-1] == (4, "Branch B")

    counts = {s.id: s.message_count for s in await svc.list_user_sessions("u1")}
    assert counts == {source.id: 6, fork.id: 4}


async def test_fork_defaults_to_the_whole_history_and_can_share_nothing(ledger: Ledger) -> None:
    svc = ledger.service
    source = await seeded(ledger)

    whole = await svc.fork_session(source.id, title="Copy", user_id="u1")
    assert chat(whole) == chat(source)
    assert whole.title == "Copy"
    assert (await svc.get_session(source.id)) == source  # the source is untouched

    empty = await svc.fork_session(source.id, at_seq=0)
    assert empty.messages == ()
    assert empty.metadata == source.metadata
    first = await svc.add_message(empty.id, "user", "fresh start")
    assert first.seq == 1

    blank = await svc.create_session("u1", "Helper")
    blank_fork = await svc.fork_session(blank.id)
    assert blank_fork.messages == ()
    assert blank_fork.id != blank.id


async def test_fork_of_a_trimmed_session_starts_at_seq_one(ledger: Ledger) -> None:
    svc = ledger.service
    source = await seeded(ledger)
    await trim_front(ledger, source.id, 2)

    fork = await svc.fork_session(source.id, at_seq=4)

    assert [(m.seq, m.content) for m in fork.messages] == [
        (1, "sunny\x00 24C"),
        (2, "It is sunny."),
    ]
    summary = next(s for s in await svc.list_user_sessions("u1") if s.id == fork.id)
    assert summary.message_count == 2
    assert (await svc.add_message(fork.id, "user", "next")).seq == 3
    with pytest.raises(InvalidInputError, match=r"holds seqs 3\.\.5; pass a seq from 2 to 5"):
        await svc.fork_session(source.id, at_seq=1)


async def test_fork_of_another_users_session_reads_as_missing(ledger: Ledger) -> None:
    svc = ledger.service
    source = await seeded(ledger)
    before = await snapshot(ledger)

    with pytest.raises(SessionNotFoundError, match="mallory"):
        await svc.fork_session(source.id, user_id="mallory")
    with pytest.raises(SessionNotFoundError):
        await svc.fork_session(uuid.uuid4())
    with pytest.raises(SessionNotFoundError):
        await svc.fork_session(uuid.uuid4(), user_id="u1")

    assert await snapshot(ledger) == before


@pytest.mark.parametrize(
    ("at_seq", "error"),
    [
        (6, InvalidInputError),
        (10**12, InvalidInputError),
        (-1, InvalidInputError),
        ("3", TypeError),
        (2.0, TypeError),
        (True, TypeError),
    ],
)
async def test_fork_outside_the_history_writes_nothing(
    ledger: Ledger, at_seq: Any, error: type[Exception]
) -> None:
    svc = ledger.service
    source = await seeded(ledger)
    before = await snapshot(ledger)
    with pytest.raises(error, match="at_seq"):
        await svc.fork_session(source.id, at_seq=at_seq)
    for bad_title in ("", "   ", "x" * 256, "\ud800"):
        with pytest.raises(InvalidInputError, match="title"):
            await svc.fork_session(source.id, title=bad_title)
    with pytest.raises(InvalidInputError, match="malformed session id"):
        await svc.fork_session("not-a-uuid")
    assert await snapshot(ledger) == before


async def test_fork_costs_the_same_statements_for_any_history_size(ledger: Ledger) -> None:
    svc = ledger.service

    async def statements_for_fork(size: int) -> tuple[list[str], SessionRecord]:
        session = await svc.create_session("u1", "A")
        await svc.add_messages(
            session.id, [{"role": "user", "content": f"m{i}"} for i in range(size)]
        )
        with counting_statements(ledger) as statements:
            fork = await svc.fork_session(session.id)
        return statements, fork

    small, _ = await statements_for_fork(3)
    large, fork = await statements_for_fork(3000)

    assert len(small) == len(large), (small, large)
    assert len(large) <= 7, large  # lock, create, copy messages, copy checkpoints, reread
    assert [m.seq for m in fork.messages] == list(range(1, 3001))
    assert [m.content for m in fork.messages[:2]] == ["m0", "m1"]
    assert fork.messages[-1].content == "m2999"
    assert await count_rows(ledger, "conversation_messages", fork.id) == 3000


# -- rewind -------------------------------------------------------------------------------------


async def test_rewind_drops_the_tail_and_appends_continue_gap_free(ledger: Ledger) -> None:
    svc = ledger.service
    source = await seeded(ledger)

    removed = await svc.rewind_session(source.id, 3)

    assert removed == 2
    record = await svc.get_session(source.id)
    assert record is not None
    assert chat(record) == chat(source)[:3]
    assert record.updated_at >= source.updated_at
    assert (await svc.add_message(source.id, "assistant", "again")).seq == 4
    summary = (await svc.list_user_sessions("u1")).sessions[0]
    assert summary.message_count == 4

    # Rewinding to the end changes nothing (not even updated_at); to 0 empties the session.
    current = await svc.get_session(source.id)
    assert await svc.rewind_session(source.id, 4, user_id="u1") == 0
    assert await svc.get_session(source.id) == current
    assert await svc.rewind_session(source.id, 0) == 4
    emptied = await svc.get_session(source.id)
    assert emptied is not None
    assert emptied.messages == ()
    assert await count_rows(ledger, "conversation_messages", source.id) == 0
    assert (await svc.add_message(source.id, "user", "restart")).seq == 1


async def test_rewind_forgets_idempotency_keys_of_dropped_batches(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    first = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]
    second = [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    third = [{"role": "user", "content": "q3"}, {"role": "assistant", "content": "a3"}]
    await svc.add_messages(session.id, first, idempotency_key="turn-1")
    await svc.add_messages(session.id, second, idempotency_key="turn-2")
    await svc.add_messages(session.id, third, idempotency_key="turn-3")
    await svc.add_messages(session.id, [], idempotency_key="empty")

    assert await svc.rewind_session(session.id, 3) == 3

    # turn-1 lies wholly before the cut: its retry is still recognized and stores nothing.
    retry_first = await svc.add_messages(session.id, first, idempotency_key="turn-1")
    assert (retry_first.created, list(retry_first.seqs)) == (False, [1, 2])
    assert await svc.batch_keys(session.id) == ["empty", "turn-1"]
    # turn-2 reached past the cut (seq 4): a retry appends it again, right after the cut.
    retry_second = await svc.add_messages(session.id, second, idempotency_key="turn-2")
    assert (retry_second.created, list(retry_second.seqs)) == (True, [4, 5])
    retry_third = await svc.add_messages(session.id, third, idempotency_key="turn-3")
    assert (retry_third.created, list(retry_third.seqs)) == (True, [6, 7])
    record = await svc.get_session(session.id)
    assert record is not None
    assert [(m.seq, m.content) for m in record.messages] == [
        (1, "q1"),
        (2, "a1"),
        (3, "q2"),
        (4, "q2"),
        (5, "a2"),
        (6, "q3"),
        (7, "a3"),
    ]


async def test_rewind_of_another_users_session_or_bad_seq_writes_nothing(ledger: Ledger) -> None:
    svc = ledger.service
    source = await seeded(ledger)
    await trim_front(ledger, source.id, 1)
    before = await snapshot(ledger)

    with pytest.raises(SessionNotFoundError, match="mallory"):
        await svc.rewind_session(source.id, 2, user_id="mallory")
    with pytest.raises(SessionNotFoundError):
        await svc.rewind_session(uuid.uuid4(), 0)
    for bad, error in ((6, InvalidInputError), (0, InvalidInputError), (-1, InvalidInputError)):
        with pytest.raises(error, match="to_seq"):
            await svc.rewind_session(source.id, bad)
    for wrong_type in ("2", None, 1.5, False):
        with pytest.raises(TypeError, match="to_seq"):
            await svc.rewind_session(source.id, wrong_type)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="user_id"):
        await svc.rewind_session(source.id, 2, user_id="")

    assert await snapshot(ledger) == before
    # The trimmed front is the lowest point a rewind can reach.
    assert await svc.rewind_session(source.id, 1) == 4


async def test_rewinds_racing_appends_never_leave_a_gap(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    rng = random.Random(7)
    appended: list[str] = []
    removed_total = 0
    snapshots: list[list[int]] = []
    done = asyncio.Event()

    async def writer(number: int) -> None:
        for batch in range(6):
            contents = [f"w{number}-b{batch}-{i}" for i in range(rng.randint(1, 3))]
            await svc.add_messages(session.id, [{"role": "user", "content": c} for c in contents])
            appended.extend(contents)
            await asyncio.sleep(0)

    async def rewinder() -> None:
        nonlocal removed_total
        for _ in range(8):
            record = await svc.get_session(session.id)
            assert record is not None
            if record.messages:
                target = rng.randint(0, record.messages[-1].seq)
                try:
                    removed = await svc.rewind_session(session.id, target)
                except InvalidInputError:
                    continue  # another rewind cut below the target in the meantime
                # (Not `removed_total += await ...`: that reads the total before awaiting.)
                removed_total += removed
            await asyncio.sleep(0)

    async def reader() -> None:
        while not done.is_set():
            record = await svc.get_session(session.id)
            assert record is not None
            snapshots.append([m.seq for m in record.messages])
            await asyncio.sleep(0)

    readers = [asyncio.create_task(reader()) for _ in range(2)]
    try:
        await asyncio.wait_for(
            asyncio.gather(*(writer(n) for n in range(8)), *(rewinder() for _ in range(3))),
            timeout=90,
        )
    finally:
        done.set()
    await asyncio.wait_for(asyncio.gather(*readers), timeout=30)

    record = await svc.get_session(session.id)
    assert record is not None
    seqs = [m.seq for m in record.messages]
    assert seqs == list(range(1, len(seqs) + 1))
    assert all(s == list(range(1, len(s) + 1)) for s in snapshots)
    assert removed_total > 0, "no rewind removed anything; the test proves nothing"
    # Every message appended is either still there or was counted as removed, exactly once.
    assert len(seqs) + removed_total == len(appended)
    assert len({m.content for m in record.messages}) == len(seqs)
    assert await count_rows(ledger, "conversation_messages", session.id) == len(seqs)
    summary = (await svc.list_user_sessions("u1")).sessions[0]
    assert summary.message_count == len(seqs)
    assert (await svc.add_message(session.id, "user", "last")).seq == len(seqs) + 1


async def test_rewind_through_the_sdk_session_id(ledger: Ledger) -> None:
    sdk_session = ledger.agent_session("support", user_id="u1", agent_name="Helper")
    items: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]
    await sdk_session.add_items(items)

    removed = await ledger.service.rewind_session(
        sdk_session.ledger_session_id, 1, user_id=sdk_session.user_id
    )

    assert removed == 2
    assert await sdk_session.get_items() == items[:1]
    other = ledger.agent_session(str(sdk_session.ledger_session_id), user_id="mallory")
    with pytest.raises(SessionNotFoundError):
        await ledger.service.rewind_session(other.ledger_session_id, 0, user_id=other.user_id)
    assert await sdk_session.get_items() == items[:1]


async def test_a_retried_batch_after_pop_is_never_acknowledged_over_other_messages(
    ledger: Ledger,
) -> None:
    svc = ledger.service
    session = await svc.create_session("u", "a")
    batch = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]
    await svc.add_messages(session.id, batch, idempotency_key="turn-1")
    popped = await svc.pop_item(session.id)
    assert popped["content"] == "a1"
    await svc.add_message(session.id, "assistant", "a1-regenerated")  # lands at seq 2

    retried = await svc.add_messages(session.id, batch, idempotency_key="turn-1")

    # The key was forgotten with the popped item: the retry is stored, not acknowledged as
    # seqs 1-2 (which now hold q1 and a1-regenerated).
    assert retried.created
    assert list(retried.seqs) == [3, 4]
    contents = [m["content"] for m in await svc.get_items(session.id)]
    assert contents == ["q1", "a1-regenerated", "q1", "a1"]
