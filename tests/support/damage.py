"""Damage a stored message by hand, as an operator's stray UPDATE would: reads must leave it out
(docs/reliability.md)."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from agentledger import Ledger


async def damage_row(
    ledger: Ledger, session_id: uuid.UUID, seq: int, backend: str, *, secret: str = ""
) -> None:
    """Make message ``seq``'s stored item undecodable: invalid JSON text on SQLite; on
    PostgreSQL, whose json type refuses invalid text, nesting too deep for Python's decoder.
    ``secret`` is put inside, for tests that check logs never show it."""
    if backend == "sqlite":
        bad = "{not json " + secret
        statement = (
            "UPDATE conversation_messages SET item = :bad WHERE session_id = :sid AND seq = :seq"
        )
        sid: str | uuid.UUID = session_id.hex
    else:
        bad = "[" * 5_000 + f'"{secret}"' + "]" * 5_000
        statement = (
            "UPDATE conversation_messages SET item = CAST(:bad AS json) "
            "WHERE session_id = :sid AND seq = :seq"
        )
        sid = session_id
    async with ledger.engine.begin() as connection:
        result = await connection.execute(text(statement), {"bad": bad, "sid": sid, "seq": seq})
        assert result.rowcount == 1
