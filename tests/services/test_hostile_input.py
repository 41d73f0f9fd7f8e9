"""Hostile and odd input: huge values, values past PostgreSQL's limits, deep JSON, and
property-based round trips of arbitrary text and JSON on both backends."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from agents.items import TResponseInputItem
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from agentledger import Ledger
from agentledger.db.dialect import Dialect, dialect_for
from agentledger.db.fastpath import DriverStatements
from agentledger.db.statements import pg_append_statement
from agentledger.domain import encoding
from agentledger.domain.records import SessionSpec
from agentledger.domain.time import utcnow
from agentledger.domain.validation import prepare_chat_message
from agentledger.errors import InvalidInputError, SessionNotFoundError
from tests.support.items import as_items, fields

# -- a 50 MB tool output -----------------------------------------------------------------------


@pytest.mark.slow
async def test_a_50_mb_tool_output_round_trips(ledger: Ledger) -> None:
    chunk = 'line of tool output: ünïcödé ✓ \x00 \ue000 {json} "quoted"\n'
    output = (chunk * (50 * 2**20 // len(chunk.encode()) + 1))[: 50 * 2**20]
    items: list[TResponseInputItem] = [
        {"type": "function_call", "call_id": "c1", "name": "dump", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": output},
    ]
    sdk = ledger.agent_session("big-output", user_id="u")
    await sdk.add_items(items)
    assert await sdk.get_items() == items
    assert fields((await sdk.get_items(limit=1))[0])["output"] == output


# -- values past PostgreSQL's limits are refused before anything is sent ------------------


def test_the_size_rule_uses_postgresql_limits() -> None:
    assert encoding.MAX_FIELD_BYTES == 2**30 - 1
    assert encoding.MAX_JSONB_BYTES == 2**28 - 1
    encoding.check_size(2**30 - 1, "content", encoding.MAX_FIELD_BYTES)
    with pytest.raises(InvalidInputError, match="1,073,741,823 bytes"):
        encoding.check_size(2**30, "content", encoding.MAX_FIELD_BYTES)
    with pytest.raises(InvalidInputError, match="268,435,455 bytes"):
        encoding.check_size(2**28, "tool_calls", encoding.MAX_JSONB_BYTES)


@pytest.fixture
def statements(ledger: Ledger) -> list[str]:
    """Every statement sent on the ledger's engine from now on."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(ledger.engine.sync_engine, "before_cursor_execute", record)
    return sent


async def test_oversized_values_are_refused_before_anything_is_sent(
    ledger: Ledger, statements: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real limits (1 GB / 256 MB) would need gigabytes of test memory; the rule is the
    # same with smaller ones (the limits are read on every call).
    session = await ledger.service.create_session(user_id="u", agent_name="a")
    monkeypatch.setattr(encoding, "MAX_FIELD_BYTES", 1_000)
    monkeypatch.setattr(encoding, "MAX_JSONB_BYTES", 500)
    statements.clear()
    svc = ledger.service
    with pytest.raises(InvalidInputError, match="more than the 1,000 bytes"):
        await svc.add_message(session.id, role="tool", content="é" * 501, tool_call_id="c")
    with pytest.raises(InvalidInputError, match="more than the 1,000 bytes"):
        await svc.add_items(
            session.id, [{"type": "function_call_output", "call_id": "c", "output": "x" * 1_001}]
        )
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "x" * 600}}]
    with pytest.raises(InvalidInputError, match="more than the 500 bytes"):
        await svc.add_message(session.id, role="assistant", content="", tool_calls=calls)
    with pytest.raises(InvalidInputError, match="more than the 500 bytes"):
        await svc.create_session(user_id="u", agent_name="a", metadata={"k": "v" * 600})
    with pytest.raises(InvalidInputError, match="more than the 500 bytes"):
        await svc.update_metadata(session.id, {"k": "v" * 600})
    assert statements == []
    monkeypatch.undo()
    assert await svc.get_items(session.id) == []


# -- deep JSON -------------------------------------------------------------------------------


def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for level in range(levels):
        value = {"a": value} if level % 2 else [value]
    return value


async def test_deep_json_is_refused_with_a_typed_error(
    ledger: Ledger, statements: list[str]
) -> None:
    svc = ledger.service
    session = await svc.create_session(user_id="u", agent_name="a")
    deep = _deep(5_000)
    statements.clear()
    with pytest.raises(InvalidInputError, match="nested"):
        await svc.add_items(session.id, [{"type": "message", "role": "user", "content": deep}])
    with pytest.raises(InvalidInputError, match="nested"):
        await svc.add_items(session.id, [{"type": "reasoning", "summary": [], "x": deep}])
    with pytest.raises(InvalidInputError, match="nested"):
        await svc.add_message(
            session.id,
            role="assistant",
            content="",
            tool_calls=[{"id": "c", "type": "function", "function": {"name": "f"}, "x": deep}],
        )
    with pytest.raises(InvalidInputError, match="nested"):
        await svc.create_session(user_id="u", agent_name="a", metadata={"deep": deep})
    with pytest.raises(InvalidInputError, match="nested"):
        await svc.update_metadata(session.id, {"deep": deep})
    sdk = ledger.agent_session(str(session.id), user_id="u")
    with pytest.raises(InvalidInputError, match="nested"):
        await sdk.add_items([{"type": "message", "role": "user", "content": deep}])
    assert statements == []
    # Just inside the bound is fine.
    shallow = _deep(encoding.MAX_JSON_DEPTH - 2)  # inside the item object
    await svc.add_items(session.id, [{"type": "custom", "payload": shallow}])
    assert (await svc.get_items(session.id))[0]["payload"] == shallow


# -- property-based round trips ----------------------------------------------------------------

# Valid Unicode: every code point but the lone surrogates (which UTF-8 cannot encode).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=200)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
# Metadata is jsonb on PostgreSQL, which keeps numbers as `numeric` and prints a float of
# 1e16 or more without exponent, so it reads back as an int of slightly different value
# (docs/reliability.md); SDK items (a `json` column) are exact for every float.
METADATA_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15)
    | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(
    contents=st.lists(TEXT, min_size=1, max_size=4), metadata=st.dictionaries(TEXT, METADATA_JSON)
)
async def test_text_and_metadata_round_trip_through_the_service(
    ledger: Ledger, contents: list[str], metadata: dict[str, Any]
) -> None:
    svc = ledger.service
    session = await svc.create_session(user_id="u", agent_name="a", metadata=metadata)
    await svc.add_messages(session.id, [{"role": "user", "content": text} for text in contents])
    record = await svc.get_session(session.id)
    assert record is not None
    assert record.metadata == metadata
    assert [m.content for m in record.messages] == contents


@PROPERTY_SETTINGS
@given(payloads=st.lists(JSON, min_size=1, max_size=4), text=TEXT)
async def test_items_round_trip_through_the_sdk_session(
    ledger: Ledger, payloads: list[Any], text: str
) -> None:
    items = [{"type": "custom_item", "payload": payload, "note": text} for payload in payloads]
    items.append({"type": "message", "role": "user", "content": text})
    sdk = ledger.agent_session(f"prop-{len(text)}-{id(payloads)}", user_id="u")
    await sdk.clear_session()
    await sdk.add_items(as_items(items))
    assert await sdk.get_items() == items
    assert await sdk.pop_item() == items[-1]


# -- one message, one batch: what fits one statement -------------------------------------------
#
# The append sends a whole batch's fields as arrays in ONE statement, and PostgreSQL accepts at
# most PQ_LARGE_MESSAGE_LIMIT bytes in one protocol message (past it, it drops the connection).
# The real limit needs gigabytes of test memory; the rule reads `MAX_STATEMENT_BYTES` at every
# call, so the tests lower that one constant.

#: Bytes of message fields one statement may carry in these tests.
BUDGET = 10_000


@pytest.fixture
def small_statements(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoding, "MAX_STATEMENT_BYTES", encoding.STATEMENT_RESERVE_BYTES + BUDGET)


def _appends(statements: list[str]) -> int:
    return sum("INSERT INTO conversation_messages" in statement for statement in statements)


def test_the_statement_rule_uses_postgresql_limits() -> None:
    max_alloc_size = 2**30 - 1  # PostgreSQL's MaxAllocSize: 1 GB - 1
    pq_large_message_limit = max_alloc_size - 1
    assert pq_large_message_limit == encoding.MAX_STATEMENT_BYTES
    assert max_alloc_size == encoding.MAX_FIELD_BYTES
    # The reserve covers the Bind message's framing, the statement's scalar parameters
    # (user id and agent name: 255 characters, at most 1,020 bytes each) and array headers.
    assert 4_096 <= encoding.STATEMENT_RESERVE_BYTES <= 2**16
    budget = encoding.statement_budget()
    assert budget == 2**30 - 2 - encoding.STATEMENT_RESERVE_BYTES
    fits = {"content": budget - encoding.MESSAGE_OVERHEAD_BYTES}
    assert encoding.check_message_size(fits, "message") == budget
    with pytest.raises(InvalidInputError, match=f"more than the {budget:,} bytes"):
        encoding.check_message_size({"content": 600_000_000, "item": 600_000_100}, "message")
    assert encoding.statement_runs([budget, 1, budget - 1, 1]) == [
        range(0, 1),
        range(1, 3),
        range(3, 4),
    ]
    assert encoding.statement_runs([]) == []


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_message_sizes_count_what_postgresql_receives(ledger: Ledger) -> None:
    """The size of a row is exactly what its elements take in the append's Bind message."""
    sent: list[Any] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if "INSERT INTO conversation_messages" in statement:
            sent.append(parameters)

    event.listen(ledger.engine.sync_engine, "before_cursor_execute", capture)
    calls = [{"id": "c", "type": "function", "function": {"arguments": "\x00\ue000"}}]
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "plain ascii"},
        {"role": "tool", "content": "nul \x00 escape \ue000 ünï ✓", "tool_call_id": "id\x00\ue000"},
        {"role": "assistant", "content": "", "tool_calls": calls},
    ]
    session = await ledger.service.create_session(user_id="u", agent_name="a")
    await ledger.service.add_messages(session.id, messages)
    [parameters] = sent
    driver = DriverStatements(ledger.engine)
    names = driver.parameter_names(pg_append_statement(create=False, owned=False))
    arrays = dict(zip(names, parameters, strict=True))
    text_arrays = ("roles", "contents", "tool_calls", "tool_call_ids", "item_types", "items")
    for index, message in enumerate(messages):
        elements = [arrays[name][index] for name in text_arrays]
        on_the_wire = 4 + 16 + sum(4 + len((value or "").encode()) for value in elements)
        assert prepare_chat_message(message).size == on_the_wire


async def test_a_message_over_one_statement_is_refused_before_anything_is_sent(
    ledger: Ledger, statements: list[str], small_statements: None
) -> None:
    svc = ledger.service
    session = await svc.create_session(user_id="u", agent_name="a")
    before = await svc.get_session(session.id)
    statements.clear()
    # Each field is far under its own limit; the item repeats the content, so together they
    # pass one statement's budget.
    content = "é" * 2_600  # 5,200 bytes, sent twice
    with pytest.raises(InvalidInputError) as refused:
        await svc.add_message(session.id, role="user", content=content)
    message = str(refused.value)
    assert "content 5,200" in message
    assert "item 5,2" in message
    assert f"more than the {BUDGET:,} bytes" in message
    assert "store large payloads elsewhere" in message
    with pytest.raises(InvalidInputError, match="message 1 is"):
        await svc.add_messages(
            session.id,
            [{"role": "user", "content": "small"}, {"role": "user", "content": content}],
            idempotency_key="k1",
        )
    new_id = uuid.uuid4()
    with pytest.raises(InvalidInputError, match="item 0 is"):
        await svc.add_items(
            new_id,
            [{"type": "function_call_output", "call_id": "c", "output": "x" * BUDGET}],
            create_as=SessionSpec(user_id="u", agent_name="a"),
            idempotency_key="k2",
        )
    assert statements == []
    assert await svc.get_session(new_id) is None
    assert await svc.get_session(session.id) == before
    assert await svc.batch_keys(session.id) == []


@pytest.mark.parametrize("key", [None, "turn-1"])
async def test_a_batch_over_one_statement_is_split_atomically_in_order(
    ledger: Ledger, backend: str, statements: list[str], small_statements: None, key: str | None
) -> None:
    svc = ledger.service
    session = await svc.create_session(user_id="u", agent_name="a")
    await svc.add_message(session.id, role="system", content="before")
    # Seven messages of about 3 KB each (content and item): three statements' worth.
    batch = [{"role": "user", "content": f"{index}:" + "x" * 1_400} for index in range(7)]
    sizes = [prepare_chat_message(message).size for message in batch]
    assert all(size < BUDGET for size in sizes)
    assert sum(sizes) > 2 * BUDGET
    statements.clear()
    result = await svc.add_messages(session.id, batch, idempotency_key=key)
    assert _appends(statements) == len(encoding.statement_runs(sizes)) == 3
    assert list(result.seqs) == [2, 3, 4, 5, 6, 7, 8]
    record = await svc.get_session(session.id)
    assert record is not None
    assert [m.seq for m in record.messages] == list(range(1, 9))
    assert [m.content for m in record.messages] == ["before"] + [m["content"] for m in batch]
    if key is not None:  # a retry is stored once
        retry = await svc.add_messages(session.id, batch, idempotency_key=key)
        assert (retry.created, list(retry.seqs)) == (False, list(result.seqs))
        assert await svc.batch_keys(session.id) == [key]
        assert len(await svc.get_items(session.id)) == 8
    # The connection (pool) serves the next turns; one that fits goes in one statement again.
    statements.clear()
    assert (await svc.add_message(session.id, role="user", content="after")).seq == 9
    assert _appends(statements) == 1


async def test_a_first_write_split_over_statements_creates_the_session_once(
    ledger: Ledger, small_statements: None
) -> None:
    svc = ledger.service
    sid = uuid.uuid4()
    items = [{"type": "message", "role": "user", "content": "y" * 2_000} for _ in range(6)]
    result = await svc.add_items(sid, items, create_as=SessionSpec(user_id="u", agent_name="a"))
    assert list(result.seqs) == [1, 2, 3, 4, 5, 6]
    assert await svc.get_items(sid, user_id="u") == items
    other = SessionSpec(user_id="intruder", agent_name="a")
    with pytest.raises(SessionNotFoundError):
        await svc.add_items(sid, items, create_as=other)
    assert len(await svc.get_items(sid)) == 6


class Injected(Exception):
    """A failure injected between two statements of a split batch."""


@pytest.mark.parametrize("key", [None, "turn-1"])
async def test_a_failure_in_the_middle_of_a_split_batch_leaves_nothing(
    ledger: Ledger,
    backend: str,
    small_statements: None,
    monkeypatch: pytest.MonkeyPatch,
    key: str | None,
) -> None:
    svc = ledger.service
    session = await svc.create_session(user_id="u", agent_name="a")
    await svc.add_message(session.id, role="system", content="before")
    before = await svc.get_session(session.id)
    strategy = type(dialect_for(backend))
    real = strategy.append
    calls = 0

    async def first_statement_then_fail(self: Dialect, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Injected
        return await real(self, *args, **kwargs)  # the first part really reaches the database

    monkeypatch.setattr(strategy, "append", first_statement_then_fail)
    batch = [{"role": "user", "content": "z" * 1_400} for _ in range(5)]
    with pytest.raises(Injected):
        await svc.add_messages(session.id, batch, idempotency_key=key)
    new_id = uuid.uuid4()
    calls = 0
    items = [{"type": "message", "role": "user", "content": "z" * 1_400} for _ in range(5)]
    with pytest.raises(Injected):
        await svc.add_items(new_id, items, create_as=SessionSpec(user_id="u", agent_name="a"))
    assert calls == 2
    monkeypatch.setattr(strategy, "append", real)
    assert await svc.get_session(session.id) == before
    assert await svc.get_session(new_id) is None
    assert await svc.batch_keys(session.id) == []
    # Nothing half-done is left behind: the same batch goes in whole, right after "before".
    result = await svc.add_messages(session.id, batch, idempotency_key=key)
    assert list(result.seqs) == [2, 3, 4, 5, 6]
    assert len(await svc.get_items(session.id)) == 6


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite has no autocommit units
async def test_an_autocommit_unit_refuses_a_batch_that_needs_several_statements(
    ledger: Ledger, small_statements: None
) -> None:
    session = await ledger.service.create_session(user_id="u", agent_name="a")
    rows = [prepare_chat_message({"role": "user", "content": "w" * 3_000}) for _ in range(3)]
    async with ledger.unit_of_work(autocommit=True) as uow:
        with pytest.raises(RuntimeError, match="with a transaction"):
            await uow.messages.append(session.id, rows, user_id=None, now=utcnow())
    assert await ledger.service.get_items(session.id) == []


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_row_past_sqlites_own_length_limit_is_refused_typed(database_url: str) -> None:
    """SQLite stores at most SQLITE_MAX_LENGTH bytes (1e9 by default) in a value or a row,
    a little under PostgreSQL's limits that the input checks use. The limit is lowered on the
    one pooled connection (sqlite3's ``setlimit``, run on aiosqlite's thread) so that the
    server-side refusal happens at a test-sized message: a typed error, nothing written."""
    import sqlite3

    async with Ledger.from_url(database_url, pool_size=1, max_overflow=0) as ledger:
        session = await ledger.service.create_session("u1", "A")
        await ledger.service.add_message(session.id, "user", "fits")
        async with ledger.engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None
            await raw._execute(raw._conn.setlimit, sqlite3.SQLITE_LIMIT_LENGTH, 10_000)
        with pytest.raises(InvalidInputError, match="SQLITE_MAX_LENGTH"):
            await ledger.service.add_message(session.id, "tool", "x" * 6_000, tool_call_id="c1")
        record = await ledger.service.get_session(session.id)
        assert record is not None
        assert [m.content for m in record.messages] == ["fits"]
