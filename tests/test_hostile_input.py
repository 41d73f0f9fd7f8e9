"""Hostile and odd input: huge values, values past PostgreSQL's limits, deep JSON, and
property-based round trips of arbitrary text and JSON on both backends."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from agentledger import Ledger, encoding
from agentledger.errors import InvalidInputError

# -- a 50 MB tool output -----------------------------------------------------------------------


@pytest.mark.slow
async def test_a_50_mb_tool_output_round_trips(ledger: Ledger) -> None:
    chunk = 'line of tool output: ünïcödé ✓ \x00 \ue000 {json} "quoted"\n'
    output = (chunk * (50 * 2**20 // len(chunk.encode()) + 1))[: 50 * 2**20]
    items = [
        {"type": "function_call", "call_id": "c1", "name": "dump", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": output},
    ]
    sdk = ledger.agent_session("big-output", user_id="u")
    await sdk.add_items(items)
    assert await sdk.get_items() == items
    assert (await sdk.get_items(limit=1))[0]["output"] == output


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
    await sdk.add_items(items)
    assert await sdk.get_items() == items
    assert await sdk.pop_item() == items[-1]
