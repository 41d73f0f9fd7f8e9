"""SessionService happy paths through the public API, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from agentledger import Ledger, MessageRecord, SessionRecord


def assert_utc(value: datetime) -> None:
    assert value.tzinfo is not None, f"{value!r} is naive"
    assert value.utcoffset() == timedelta(0), f"{value!r} is not UTC"


async def count_rows(ledger: Ledger, table: str, session_id: uuid.UUID) -> int:
    column = "id" if table == "agent_sessions" else "session_id"
    async with ledger.engine.connect() as connection:
        result = await connection.execute(
            text(f"SELECT count(*) FROM {table} WHERE {column} = :sid"),
            # SQLite stores Uuid as 32 hex digits, PostgreSQL as a native uuid.
            {"sid": session_id.hex if ledger.engine.dialect.name == "sqlite" else session_id},
        )
        return int(result.scalar_one())


async def test_create_and_get_session(ledger: Ledger) -> None:
    svc = ledger.service
    before = datetime.now(UTC)
    created = await svc.create_session("u1", "Assistant", {"topic": "billing", "n": [1, 2]})
    after = datetime.now(UTC)

    assert isinstance(created.id, uuid.UUID)
    assert created.user_id == "u1"
    assert created.agent_name == "Assistant"
    assert created.metadata == {"topic": "billing", "n": [1, 2]}
    assert created.messages == ()
    assert before <= created.created_at <= after
    assert created.updated_at == created.created_at

    fetched = await svc.get_session(created.id)
    assert fetched is not None
    assert fetched.id == created.id
    assert fetched.user_id == "u1"
    assert fetched.agent_name == "Assistant"
    assert fetched.metadata == {"topic": "billing", "n": [1, 2]}
    assert fetched.created_at == created.created_at
    assert fetched.messages == ()


async def test_create_session_without_metadata_has_empty_dict(ledger: Ledger) -> None:
    created = await ledger.service.create_session("u1", "A")
    fetched = await ledger.service.get_session(created.id)
    assert created.metadata == {}
    assert fetched is not None
    assert fetched.metadata == {}


async def test_create_session_with_chosen_id(ledger: Ledger) -> None:
    chosen = uuid.uuid4()
    created = await ledger.service.create_session("u1", "A", session_id=str(chosen))
    assert created.id == chosen
    assert await ledger.service.get_session(chosen) is not None


async def test_add_message_and_read_history(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    first = await svc.add_message(session.id, "user", "What is 2+2?")
    calls = [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{}"}}]
    second = await svc.add_message(session.id, "assistant", "", tool_calls=calls)
    third = await svc.add_message(session.id, "tool", "4", tool_call_id="call_1")
    fourth = await svc.add_message(session.id, "assistant", "It is 4.")

    assert isinstance(first, MessageRecord)
    assert [first.seq, second.seq, third.seq, fourth.seq] == [1, 2, 3, 4]

    record = await svc.get_session(session.id)
    assert record is not None
    assert [(m.seq, m.role, m.content) for m in record.messages] == [
        (1, "user", "What is 2+2?"),
        (2, "assistant", ""),
        (3, "tool", "4"),
        (4, "assistant", "It is 4."),
    ]
    assert record.messages[1].tool_calls == calls
    assert record.messages[0].tool_calls is None
    assert record.messages[2].tool_call_id == "call_1"
    assert record.messages[3].tool_call_id is None
    assert [m.id for m in record.messages] == [first.id, second.id, third.id, fourth.id]
    assert record.updated_at >= record.created_at
    assert record.updated_at == fourth.created_at


async def test_add_messages_batch_is_contiguous_and_ordered(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    await svc.add_message(session.id, "system", "Be brief.")
    result = await svc.add_messages(
        session.id,
        [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "three"},
        ],
    )
    assert result.created is True
    assert result.session_id == session.id
    assert list(result.seqs) == [2, 3, 4]

    record = await svc.get_session(session.id)
    assert record is not None
    assert [(m.seq, m.content) for m in record.messages] == [
        (1, "Be brief."),
        (2, "one"),
        (3, "two"),
        (4, "three"),
    ]


async def test_session_ids_accept_uuid_and_str(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    as_text = str(session.id)

    await svc.add_message(as_text, "user", "by str")
    await svc.add_message(session.id, "user", "by uuid")
    await svc.add_messages(as_text.upper(), [{"role": "user", "content": "by upper str"}])

    for spelling in (session.id, as_text, as_text.upper(), session.id.hex):
        record = await svc.get_session(spelling)
        assert record is not None, spelling
        assert record.id == session.id
        assert [m.content for m in record.messages] == ["by str", "by uuid", "by upper str"]

    assert await svc.delete_session(as_text) is True
    assert await svc.get_session(session.id) is None


async def test_records_are_frozen_and_outlive_the_unit_of_work(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A", {"k": "v"})
    await svc.add_message(session.id, "user", "hello")
    record = await svc.get_session(session.id)
    page = await svc.list_user_sessions("u1")
    assert record is not None

    with pytest.raises(dataclasses.FrozenInstanceError):
        record.user_id = "someone else"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.messages[0].content = "changed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        page.sessions[0].message_count = 99  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        session.agent_name = "B"  # type: ignore[misc]

    # No lazy loads: everything is readable with the engine's pool closed.
    await ledger.engine.dispose()
    assert isinstance(record, SessionRecord)
    assert record.messages[0].content == "hello"
    assert record.messages[0].seq == 1
    assert record.metadata == {"k": "v"}
    assert page.sessions[0].message_count == 1
    assert page.sessions[0].id == session.id


async def test_get_session_of_another_user_is_none(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("alice", "A")
    await svc.add_message(session.id, "user", "private")

    assert await svc.get_session(session.id, user_id="mallory") is None
    owned = await svc.get_session(session.id, user_id="alice")
    assert owned is not None
    assert [m.content for m in owned.messages] == ["private"]


async def test_get_missing_session_is_none(ledger: Ledger) -> None:
    assert await ledger.service.get_session(uuid.uuid4()) is None


async def test_delete_session_cascades_to_messages(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    keep = await svc.create_session("u1", "A")
    await svc.add_messages(session.id, [{"role": "user", "content": str(i)} for i in range(5)])
    await svc.add_message(keep.id, "user", "stays")
    assert await count_rows(ledger, "conversation_messages", session.id) == 5

    assert await svc.delete_session(session.id) is True

    assert await svc.get_session(session.id) is None
    assert await count_rows(ledger, "agent_sessions", session.id) == 0
    assert await count_rows(ledger, "conversation_messages", session.id) == 0
    assert await count_rows(ledger, "conversation_messages", keep.id) == 1


async def test_delete_missing_session_returns_false(ledger: Ledger) -> None:
    svc = ledger.service
    assert await svc.delete_session(uuid.uuid4()) is False
    session = await svc.create_session("u1", "A")
    assert await svc.delete_session(session.id) is True
    assert await svc.delete_session(session.id) is False


async def test_delete_session_of_another_user_keeps_it(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("alice", "A")
    assert await svc.delete_session(session.id, user_id="mallory") is False
    assert await svc.get_session(session.id) is not None
    assert await svc.delete_session(session.id, user_id="alice") is True


async def test_add_messages_40000_in_one_call(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    total = 40_000
    batch = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"}
        for i in range(total)
    ]

    result = await svc.add_messages(session.id, batch)

    assert result.count == total
    assert list(result.seqs) == list(range(1, total + 1))
    record = await svc.get_session(session.id)
    assert record is not None
    assert len(record.messages) == total
    assert [m.seq for m in record.messages] == list(range(1, total + 1))
    assert all(m.content == f"message {i}" for i, m in enumerate(record.messages))
    assert record.messages[-1].role == "assistant"
    assert await count_rows(ledger, "conversation_messages", session.id) == total
    # The session's counter agrees: the next message continues the sequence.
    assert (await svc.add_message(session.id, "user", "next")).seq == total + 1


async def test_idempotent_batch_is_stored_once(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    await svc.add_message(session.id, "user", "before")
    batch = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]

    first = await svc.add_messages(session.id, batch, idempotency_key="turn-1")
    retry = await svc.add_messages(session.id, batch, idempotency_key="turn-1")

    assert first.created is True
    assert retry.created is False
    assert list(first.seqs) == [2, 3]
    assert list(retry.seqs) == list(first.seqs)
    assert retry.created_at == first.created_at
    record = await svc.get_session(session.id)
    assert record is not None
    assert [m.content for m in record.messages] == ["before", "q", "a"]

    other = await svc.add_messages(session.id, batch, idempotency_key="turn-2")
    assert other.created is True
    assert list(other.seqs) == [4, 5]


async def test_idempotency_keys_are_per_session(ledger: Ledger) -> None:
    svc = ledger.service
    one = await svc.create_session("u1", "A")
    two = await svc.create_session("u1", "A")
    batch = [{"role": "user", "content": "hi"}]
    assert (await svc.add_messages(one.id, batch, idempotency_key="k")).created is True
    assert (await svc.add_messages(two.id, batch, idempotency_key="k")).created is True
    for session in (one, two):
        record = await svc.get_session(session.id)
        assert record is not None
        assert [m.content for m in record.messages] == ["hi"]
