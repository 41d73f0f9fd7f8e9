"""Ordering under concurrency: a gap-free per-session sequence, atomic batches, prefix reads.

32 writers append batches to ONE session while readers poll it. Whatever interleaving the
database chooses, the final history must hold every message exactly once with seqs 1..N, every
batch contiguous and in its own order, every writer's batches in the order it sent them, and
every snapshot a reader saw must be a prefix of the final history. SQLite serializes the
writers through its busy timeout; PostgreSQL through the session row's lock.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict

from agentledger import AppendResult, Ledger
from agentledger.domain.records import SessionSpec

WRITERS = 32
BATCHES_PER_WRITER = 4
READERS = 4


def label(writer: int, batch: int, index: int) -> str:
    return f"w{writer:02d}-b{batch}-i{index}"


def parse(content: str) -> tuple[int, int, int]:
    writer, batch, index = content.split("-")
    return int(writer[1:]), int(batch[1:]), int(index[1:])


async def test_concurrent_writers_and_readers_on_one_session(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    rng = random.Random(20240501)
    plan = {
        writer: [rng.randint(1, 5) for _ in range(BATCHES_PER_WRITER)] for writer in range(WRITERS)
    }
    results: dict[tuple[int, int], AppendResult] = {}
    snapshots: list[list[str]] = []
    item_snapshots: list[list[str]] = []
    writers_done = asyncio.Event()

    async def writer(number: int) -> None:
        for batch, size in enumerate(plan[number]):
            messages = [
                {"role": "user" if i % 2 == 0 else "assistant", "content": label(number, batch, i)}
                for i in range(size)
            ]
            if size == 1 and batch % 2 == 0:
                only = messages[0]
                added = await svc.add_message(session.id, only["role"], only["content"])
                results[number, batch] = AppendResult(
                    session.id, added.seq, 1, added.created_at, True
                )
            else:
                results[number, batch] = await svc.add_messages(session.id, messages)
            await asyncio.sleep(0)

    async def reader() -> None:
        while not writers_done.is_set():
            record = await svc.get_session(session.id)
            assert record is not None
            assert [m.seq for m in record.messages] == list(range(1, len(record.messages) + 1))
            snapshots.append([m.content for m in record.messages])
            items = await svc.get_items(session.id)
            item_snapshots.append([item["content"] for item in items])
            await asyncio.sleep(0)

    readers = [asyncio.create_task(reader()) for _ in range(READERS)]
    try:
        await asyncio.wait_for(asyncio.gather(*(writer(n) for n in range(WRITERS))), timeout=60)
    finally:
        writers_done.set()
    await asyncio.wait_for(asyncio.gather(*readers), timeout=30)

    expected_total = sum(sum(sizes) for sizes in plan.values())
    record = await svc.get_session(session.id)
    assert record is not None
    final = [m.content for m in record.messages]

    # Nothing lost, nothing duplicated, seqs exactly 1..N.
    assert [m.seq for m in record.messages] == list(range(1, expected_total + 1))
    assert sorted(final) == sorted(
        label(w, b, i)
        for w, sizes in plan.items()
        for b, size in enumerate(sizes)
        for i in range(size)
    )

    # Every batch is contiguous, in its own order, where its AppendResult said it landed.
    positions: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for message in record.messages:
        writer_number, batch, index = parse(message.content)
        positions[writer_number, batch].append((message.seq, index))
    for (writer_number, batch), placed in positions.items():
        seqs = [seq for seq, _ in placed]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (writer_number, batch)
        assert [index for _, index in placed] == list(range(len(placed)))
        assert list(results[writer_number, batch].seqs) == seqs

    # A writer awaited each batch before sending the next: its batches keep that order.
    for writer_number in plan:
        firsts = [positions[writer_number, b][0][0] for b in range(BATCHES_PER_WRITER)]
        assert firsts == sorted(firsts), writer_number

    # Readers only ever saw prefixes of the final history (and they did see something).
    assert snapshots, "readers never ran"
    for snapshot in (*snapshots, *item_snapshots):
        assert snapshot == final[: len(snapshot)]
    assert any(0 < len(s) < expected_total for s in snapshots + item_snapshots), (
        "no reader overlapped the writers; the test proves nothing"
    )
    summary = (await svc.list_user_sessions("u1")).sessions[0]
    assert summary.message_count == expected_total


async def test_concurrent_writers_on_many_sessions_stay_independent(ledger: Ledger) -> None:
    svc = ledger.service
    sessions = [await svc.create_session("u1", "A") for _ in range(4)]

    async def writer(number: int) -> None:
        session = sessions[number % len(sessions)]
        for batch in range(3):
            await svc.add_messages(
                session.id, [{"role": "user", "content": f"{number}-{batch}-{i}"} for i in range(2)]
            )

    await asyncio.wait_for(asyncio.gather(*(writer(n) for n in range(16))), timeout=60)
    for session in sessions:
        record = await svc.get_session(session.id)
        assert record is not None
        # 16 writers over 4 sessions: 4 writers x 3 batches x 2 messages each.
        assert [m.seq for m in record.messages] == list(range(1, 25))


async def test_concurrent_idempotent_retries_store_the_batch_once(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    batch = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]

    results = await asyncio.wait_for(
        asyncio.gather(
            *(svc.add_messages(session.id, batch, idempotency_key="turn-7") for _ in range(8))
        ),
        timeout=60,
    )

    assert sum(result.created for result in results) == 1
    assert {tuple(result.seqs) for result in results} == {(1, 2)}
    record = await svc.get_session(session.id)
    assert record is not None
    assert [(m.seq, m.content) for m in record.messages] == [(1, "q"), (2, "a")]


async def test_concurrent_idempotent_first_writes_create_the_session_once(ledger: Ledger) -> None:
    """Regression: retries of a first write racing on a new session id each tried to create
    it, and all but one failed with AlreadyExistsError instead of finding the stored batch."""
    svc = ledger.service
    new_id = uuid.uuid4()
    batch = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    spec = SessionSpec("u1", "A")

    results = await asyncio.wait_for(
        asyncio.gather(
            *(
                svc.add_items(new_id, batch, create_as=spec, idempotency_key="turn-1")
                for _ in range(8)
            )
        ),
        timeout=60,
    )

    assert sum(result.created for result in results) == 1
    assert {tuple(result.seqs) for result in results} == {(1, 2)}
    record = await svc.get_session(new_id, user_id="u1")
    assert record is not None
    assert [(m.seq, m.content) for m in record.messages] == [(1, "q"), (2, "a")]
