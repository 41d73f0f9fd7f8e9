"""Bad input is refused with a clear error, writes nothing, and leaves the service usable.

Each test walks through many cases on one fresh database (a database per case would make the
suite slow) and reports every case that misbehaved, not only the first.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text

from agentledger import (
    AlreadyExistsError,
    InvalidInputError,
    Ledger,
    LedgerError,
    SessionNotFoundError,
    SessionService,
)
from agentledger.domain.records import SessionSpec

History = list[tuple[int, str, str, Any, Any]]
Call = Callable[[SessionService, uuid.UUID], Awaitable[object]]


class Unserializable:
    pass


async def history(ledger: Ledger, session_id: uuid.UUID) -> History:
    record = await ledger.service.get_session(session_id)
    assert record is not None
    return [(m.seq, m.role, m.content, m.tool_calls, m.tool_call_id) for m in record.messages]


async def count(ledger: Ledger, table: str) -> int:
    async with ledger.engine.connect() as connection:
        result = await connection.execute(text(f"SELECT count(*) FROM {table}"))
        return int(result.scalar_one())


def one(**message: Any) -> Call:
    """add_message with the given keyword arguments (role and content defaulted; the role
    that may carry the tool field given: assistant for tool_calls, tool for tool_call_id)."""
    role = (
        "tool" if "tool_call_id" in message else "assistant" if "tool_calls" in message else "user"
    )
    arguments = {"role": role, "content": "hello", **message}

    async def call(svc: SessionService, session_id: uuid.UUID) -> object:
        return await svc.add_message(session_id, **arguments)

    return call


def middle_of_three(**bad: Any) -> Call:
    """add_messages of three messages whose second one is changed by ``bad``."""

    async def call(svc: SessionService, session_id: uuid.UUID) -> object:
        return await svc.add_messages(
            session_id,
            [
                {"role": "user", "content": "first, valid"},
                {"role": "assistant", "content": "second, valid", **bad},
                {"role": "user", "content": "third, valid"},
            ],
        )

    return call


# (case, call, expected exception, text the message must contain)
BAD_MESSAGES: list[tuple[str, Call, type[Exception], str]] = [
    ("unknown role", one(role="wizard"), InvalidInputError, "unknown role 'wizard'"),
    ("role None", one(role=None), InvalidInputError, "role"),
    ("content int", one(content=42), InvalidInputError, "content must be a string"),
    ("content None", one(content=None), InvalidInputError, "content must be a string"),
    ("content bytes", one(content=b"x"), InvalidInputError, "content must be a string"),
    ("lone surrogate", one(content="bad \ud800 text"), InvalidInputError, "lone surrogate"),
    ("surrogate id", one(tool_call_id="id-\udfff"), InvalidInputError, "lone surrogate"),
    ("empty id", one(tool_call_id=""), InvalidInputError, "tool_call_id"),
    ("long id", one(tool_call_id="x" * 256), InvalidInputError, "tool_call_id"),
    # Stored escaped on PostgreSQL (two characters per NUL): 256 > varchar(255).
    ("long NUL id", one(tool_call_id="\x00" * 128), InvalidInputError, "tool_call_id"),
    ("NaN", one(tool_calls=[{"args": math.nan}]), InvalidInputError, "NaN"),
    ("Infinity", one(tool_calls=[{"args": [1.0, math.inf]}]), InvalidInputError, "Infinity"),
    ("-Infinity", one(tool_calls=[{"args": -math.inf}]), InvalidInputError, "Infinity"),
    ("object", one(tool_calls=[{"o": Unserializable()}]), InvalidInputError, "JSON"),
    ("set", one(tool_calls=[{"set": {1, 2}}]), InvalidInputError, "JSON"),
    ("surrogate in JSON", one(tool_calls=[{"n": "x\ud83d"}]), InvalidInputError, "surrogate"),
    ("tool_calls dict", one(tool_calls={"a": 1}), InvalidInputError, "tool_calls"),
    ("tool_calls of str", one(tool_calls=["call"]), InvalidInputError, "tool_calls"),
    # Regression: an unknown role in a batch did not say which message was at fault.
    ("mid role", middle_of_three(role="narrator"), InvalidInputError, "message 1: unknown role"),
    ("mid NaN", middle_of_three(tool_calls=[{"x": math.nan}]), InvalidInputError, "message 1"),
    ("mid surrogate", middle_of_three(content="\udc00"), InvalidInputError, "message 1 content"),
    ("mid unknown key", middle_of_three(extra=1), InvalidInputError, "message 1 has unknown"),
    ("mid object", middle_of_three(tool_calls=[{"x": object()}]), InvalidInputError, "message 1"),
    ("mid no content", middle_of_three(content=None), InvalidInputError, "message 1 content"),
]


async def test_bad_messages_write_nothing(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    await svc.add_message(session.id, "user", "message 1")
    problems: list[str] = []

    for case, call, error, match in BAD_MESSAGES:
        before = await history(ledger, session.id)
        record_before = await svc.get_session(session.id)
        assert record_before is not None
        try:
            await call(svc, session.id)
        except error as raised:
            if match not in str(raised):
                problems.append(f"{case}: message {str(raised)!r} lacks {match!r}")
        except Exception as raised:
            problems.append(f"{case}: raised {type(raised).__name__}: {raised}")
        else:
            problems.append(f"{case}: accepted")
        after = await history(ledger, session.id)
        if after != before:
            problems.append(f"{case}: history changed to {after[len(before) :]}")
        record_after = await svc.get_session(session.id)
        assert record_after is not None
        if record_after.updated_at != record_before.updated_at:
            problems.append(f"{case}: updated_at moved")
        # The next call works and the sequence has no gap.
        expected_seq = len(before) + 1
        added = await svc.add_message(session.id, "user", f"message {expected_seq}")
        if added.seq != expected_seq:
            problems.append(f"{case}: next seq is {added.seq}, expected {expected_seq}")

    assert problems == []
    final = await history(ledger, session.id)
    expected = len(BAD_MESSAGES) + 1
    assert [(row[0], row[2]) for row in final] == [
        (i, f"message {i}") for i in range(1, expected + 1)
    ]
    assert await count(ledger, "conversation_messages") == expected


async def test_bad_batch_with_idempotency_key_is_not_remembered(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    bad = [{"role": "user", "content": "ok"}, {"role": "user", "content": "\ud800"}]
    with pytest.raises(InvalidInputError):
        await svc.add_messages(session.id, bad, idempotency_key="k")
    assert await count(ledger, "conversation_batches") == 0
    result = await svc.add_messages(session.id, [{"role": "user", "content": "ok"}], "k")
    assert result.created is True
    assert list(result.seqs) == [1]


BAD_METADATA: list[tuple[str, Any]] = [
    ("list", ["a", "list"]),
    ("str", "a string"),
    ("int", 42),
    ("NaN", {"x": math.nan}),
    ("Infinity", {"x": [math.inf]}),
    ("set", {"x": {1, 2}}),
    ("object", {"x": Unserializable()}),
    ("surrogate", {"x": "\ud800"}),
    ("surrogate key", {"\udfff": 1}),
]


async def test_bad_metadata_creates_nothing(ledger: Ledger) -> None:
    svc = ledger.service
    problems: list[str] = []
    for case, metadata in BAD_METADATA:
        try:
            await svc.create_session("u1", "A", metadata)
        except InvalidInputError as raised:
            if "metadata" not in str(raised):
                problems.append(f"{case}: message {str(raised)!r} does not name metadata")
        except Exception as raised:
            problems.append(f"{case}: raised {type(raised).__name__}: {raised}")
        else:
            problems.append(f"{case}: accepted")
        if await count(ledger, "agent_sessions"):
            problems.append(f"{case}: a session was created")
    assert problems == []
    created = await svc.create_session("u1", "A", {"fine": True})
    assert [s.id for s in await svc.list_user_sessions("u1")] == [created.id]


BAD_NAMES: list[tuple[str, Any, Any]] = [
    ("empty user", "", "A"),
    ("long user", "u" * 256, "A"),
    ("user int", 1, "A"),
    ("NUL in user", "u\x001", "A"),
    ("surrogate user", "u\ud800", "A"),
    ("empty agent", "u1", ""),
    ("agent None", "u1", None),
]


async def test_bad_names_create_nothing(ledger: Ledger) -> None:
    svc = ledger.service
    for user_id, agent_name in ((u, a) for _, u, a in BAD_NAMES):
        with pytest.raises(InvalidInputError, match=r"user_id|agent_name"):
            await svc.create_session(user_id, agent_name)
    assert await count(ledger, "agent_sessions") == 0
    assert (await svc.create_session("u" * 255, "A")).user_id == "u" * 255


async def test_missing_session(ledger: Ledger) -> None:
    svc = ledger.service
    missing = uuid.uuid4()
    with pytest.raises(SessionNotFoundError, match=str(missing)):
        await svc.add_message(missing, "user", "hi")
    with pytest.raises(SessionNotFoundError):
        await svc.add_messages(missing, [{"role": "user", "content": "hi"}])
    with pytest.raises(SessionNotFoundError):
        await svc.add_messages(missing, [{"role": "user", "content": "hi"}], idempotency_key="k")
    with pytest.raises(SessionNotFoundError):
        await svc.add_messages(missing, [])
    assert await count(ledger, "conversation_messages") == 0
    assert await count(ledger, "agent_sessions") == 0
    # The next call works.
    session = await svc.create_session("u1", "A")
    assert (await svc.add_message(session.id, "user", "hi")).seq == 1


async def test_other_users_session_reads_as_missing(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("alice", "A")
    with pytest.raises(SessionNotFoundError):
        await svc.add_message(session.id, "user", "intrusion", user_id="mallory")
    with pytest.raises(SessionNotFoundError):
        await svc.add_messages(session.id, [{"role": "user", "content": "x"}], user_id="mallory")
    assert await history(ledger, session.id) == []
    assert (await svc.add_message(session.id, "user", "mine", user_id="alice")).seq == 1


MALFORMED_IDS = ["not-a-uuid", "", "1234", "0b0e7c9e-9d1f-4c43-9b2e-8f7d6a5c4b3", "g" * 32]


async def test_malformed_session_id(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    calls: list[Callable[[str], Awaitable[object]]] = [
        lambda bad: svc.get_session(bad),
        lambda bad: svc.add_message(bad, "user", "hi"),
        lambda bad: svc.add_messages(bad, [{"role": "user", "content": "hi"}]),
        lambda bad: svc.delete_session(bad),
        lambda bad: svc.get_usage(bad),
        lambda bad: svc.create_session("u1", "A", session_id=bad),
    ]
    for bad_id in MALFORMED_IDS:
        for call in calls:
            with pytest.raises(InvalidInputError, match="malformed session id"):
                await call(bad_id)
    assert await count(ledger, "conversation_messages") == 0
    assert [s.id for s in await svc.list_user_sessions("u1")] == [session.id]
    assert (await svc.add_message(session.id, "user", "works")).seq == 1


async def test_session_id_of_wrong_type(ledger: Ledger) -> None:
    svc = ledger.service
    for bad_id in (None, 42, 3.5, b"0b0e7c9e9d1f4c439b2e8f7d6a5c4b3a"):
        with pytest.raises(TypeError, match="session id"):
            await svc.get_session(bad_id)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="session id"):
            await svc.add_message(bad_id, "user", "hi")  # type: ignore[arg-type]
    assert await count(ledger, "conversation_messages") == 0


async def test_errors_are_ledger_errors_or_plain_argument_errors(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    with pytest.raises(LedgerError):
        await svc.add_message(session.id, "nobody", "x")
    with pytest.raises(ValueError, match="role"):  # InvalidInputError is also a ValueError
        await svc.add_message(session.id, "nobody", "x")
    with pytest.raises(TypeError, match="mapping"):
        await svc.add_messages(session.id, ["not a mapping"])  # type: ignore[list-item]
    assert await history(ledger, session.id) == []


@pytest.mark.parametrize(
    ("role", "fields", "said"),
    [
        ("tool", {}, "needs the tool_call_id"),
        ("user", {"tool_call_id": "call_1"}, "only a tool message has a tool_call_id"),
        ("assistant", {"tool_call_id": "call_1"}, "only a tool message has a tool_call_id"),
        ("user", {"tool_calls": [{"id": "c", "type": "function"}]}, "only an assistant"),
        ("tool", {"tool_calls": [{"id": "c"}], "tool_call_id": "c"}, "only an assistant"),
    ],
)
async def test_tool_fields_go_only_where_a_model_accepts_them(
    ledger: Ledger, role: str, fields: dict[str, Any], said: str
) -> None:
    svc = ledger.service
    session = await svc.create_session("u", "a")
    with pytest.raises(InvalidInputError, match=said):
        await svc.add_message(session.id, role, "x", **fields)
    with pytest.raises(InvalidInputError, match=said):
        await svc.add_messages(session.id, [{"role": role, "content": "x", **fields}])
    assert await svc.get_items(session.id) == []


async def test_a_second_session_of_a_name_is_refused_naming_the_name(ledger: Ledger) -> None:
    svc = ledger.service
    spec = SessionSpec("u", "a", "support-chat")
    first = uuid.uuid4()
    await svc.add_items(first, [{"role": "user", "content": "x"}], user_id="u", create_as=spec)
    second = uuid.uuid4()
    with pytest.raises(AlreadyExistsError, match="already has a session of that name"):
        await svc.add_items(second, [{"role": "user", "content": "y"}], user_id="u", create_as=spec)
    assert await svc.get_session(second) is None
    assert await svc.resolve_name("support-chat", user_id="u") == first
