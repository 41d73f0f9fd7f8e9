"""U+0000 and other valid Unicode round-trip exactly through every text and JSON field.

PostgreSQL text/jsonb cannot hold U+0000; agentledger escapes it (with U+E000) and must give
back exactly what it got, including text that already contains the escape character.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text

from agentledger import Ledger

AWKWARD_TEXTS = [
    "nul \x00 in the middle",
    "\x00",
    "\x00\x00leading and trailing\x00",
    "escape char \ue000 alone",
    "escape then nul \ue000\x00, nul then escape \x00\ue000, and \ue0000 \ue000\ue000",
    "emoji 👩‍👩‍👧‍👦 🎉 and astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "CJK 漢字かなカナ 한국어",
    "RTL עברית العربية \u200f\u202e",
    "combining e\u0301 a\u0308 \u0345 Å vs A\u030a",
    "noncharacters \uffff \ufffe \U0010ffff",
    'json-ish \\u0000 and \\\\u0000 "quoted" \\ backslash',
    "controls \x01\x1f\x7f\t\n\r",
]


async def test_unicode_round_trips_exactly(ledger: Ledger) -> None:
    svc = ledger.service
    problems: list[str] = []
    for value in AWKWARD_TEXTS:
        metadata = {"note": value, value: [value, {"nested": value}], "plain": "x"}
        session = await svc.create_session("u1", "A", metadata)
        tool_calls = [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": value},
                value: value,
            }
        ]
        tool_call_id = value[:255]
        await svc.add_message(session.id, "assistant", value, tool_calls=tool_calls)
        await svc.add_message(session.id, "tool", value, tool_call_id=tool_call_id)
        await svc.add_messages(
            session.id,
            [
                {"role": "tool", "content": value, "tool_call_id": tool_call_id},
            ],
        )

        record = await svc.get_session(session.id)
        assert record is not None
        listed = {s.id: s for s in await svc.list_user_sessions("u1", limit=100)}[session.id]
        items = await svc.get_items(session.id)
        first, second, third = record.messages
        observed: dict[str, Any] = {
            "metadata": record.metadata,
            "returned metadata": session.metadata,
            "listed metadata": listed.metadata,
            "content 1": first.content,
            "tool_calls 1": first.tool_calls,
            "content 2": second.content,
            "tool_call_id 2": second.tool_call_id,
            "content 3": third.content,
            "tool_calls 3": third.tool_calls,
            "tool_call_id 3": third.tool_call_id,
            "item content": items[0]["content"],
            "item tool_calls": items[0]["tool_calls"],
            "item tool output": items[1].get("output"),
        }
        expected: dict[str, Any] = {
            "metadata": metadata,
            "returned metadata": metadata,
            "listed metadata": metadata,
            "content 1": value,
            "tool_calls 1": tool_calls,
            "content 2": value,
            "tool_call_id 2": tool_call_id,
            "content 3": value,
            "tool_calls 3": None,
            "tool_call_id 3": tool_call_id,
            "item content": value,
            "item tool_calls": tool_calls,
            "item tool output": value,
        }
        for field, wanted in expected.items():
            if observed[field] != wanted:
                problems.append(f"{value!r}: {field} came back as {observed[field]!r}")
    assert problems == []


async def test_tool_call_id_with_nul_uses_the_column_width(ledger: Ledger) -> None:
    # Regression: tool_call_id refused U+0000 although its column is built to store it.
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    longest = "\x00" * 127 + "x"  # 255 characters once U+0000 is escaped on PostgreSQL
    plain = "y" * 255
    await svc.add_message(session.id, "tool", "out", tool_call_id=longest)
    await svc.add_message(session.id, "tool", "out", tool_call_id=plain)
    record = await svc.get_session(session.id)
    assert record is not None
    assert [m.tool_call_id for m in record.messages] == [longest, plain]


async def test_plain_text_is_stored_unescaped(ledger: Ledger) -> None:
    """Text without U+0000 / U+E000 is stored as is, so SQL users and indexes see real text."""
    svc = ledger.service
    session = await svc.create_session("u1", "A", {"k": "v"})
    await svc.add_message(session.id, "user", "plain text ✓")
    await svc.add_message(session.id, "user", "with nul \x00")
    sid: Any = session.id.hex if ledger.engine.dialect.name == "sqlite" else session.id
    async with ledger.engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT content FROM conversation_messages WHERE session_id = :s ORDER BY seq"
                ),
                {"s": sid},
            )
        ).all()
    assert rows[0][0] == "plain text ✓"
    # Whatever the backend stores for U+0000, it must not be the text with NUL stripped.
    assert rows[1][0] != "with nul "
    assert isinstance(session.id, uuid.UUID)
