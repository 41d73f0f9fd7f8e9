"""Helpers shared by the conversation-lifecycle tests (fork, rewind, metadata, erasure)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text

from agentledger import Ledger

#: Every table agentledger writes, with an order that makes a dump deterministic.
TABLES = {
    "agent_sessions": "id",
    "conversation_messages": "session_id, seq",
    "conversation_batches": "session_id, idempotency_key",
    "session_usage": "session_id, id",
}


async def snapshot(ledger: Ledger) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every agentledger table: equal before and after means nothing was written."""
    dump: dict[str, list[tuple[Any, ...]]] = {}
    async with ledger.engine.connect() as connection:
        for table, order in TABLES.items():
            result = await connection.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))
            dump[table] = [tuple(row) for row in result]
    return dump


async def trim_front(ledger: Ledger, session_id: uuid.UUID, through_seq: int) -> None:
    """Remove messages 1..through_seq the way retention trims a session from the front."""
    async with ledger.engine.begin() as connection:
        await connection.execute(
            text("DELETE FROM conversation_messages WHERE session_id = :sid AND seq <= :seq"),
            {"sid": _sid(ledger, session_id), "seq": through_seq},
        )
        await connection.execute(
            text("UPDATE agent_sessions SET trimmed_seq = :seq WHERE id = :sid"),
            {"sid": _sid(ledger, session_id), "seq": through_seq},
        )


async def count_rows(ledger: Ledger, table: str, session_id: uuid.UUID) -> int:
    async with ledger.engine.connect() as connection:
        result = await connection.execute(
            text(f"SELECT count(*) FROM {table} WHERE session_id = :sid"),
            {"sid": _sid(ledger, session_id)},
        )
        return int(result.scalar_one())


def _sid(ledger: Ledger, session_id: uuid.UUID) -> Any:
    """A session id as the backend stores it (SQLite: 32 hex digits; PostgreSQL: uuid)."""
    return session_id if ledger.engine.dialect.name == "postgresql" else session_id.hex
