"""Compaction checkpoints: add, find the newest that applies, drop the ones a cut invalidated,
copy into a fork."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, literal, select

from agentledger.db.models import checkpoints_table, sessions_table
from agentledger.db.repositories.base import Repository
from agentledger.domain.records import Checkpoint, Usage

_checkpoints = checkpoints_table

_LATEST = (
    select(_checkpoints)
    .where(_checkpoints.c.session_id == bindparam("session_id"))
    .order_by(_checkpoints.c.upto_seq.desc(), _checkpoints.c.created_at.desc())
    .limit(1)
)


def checkpoint_of(row: Any) -> Checkpoint:
    return Checkpoint(
        id=row.id,
        upto_seq=int(row.upto_seq),
        items=tuple(row.items) if isinstance(row.items, list) else (),
        model=row.model,
        usage=Usage(
            int(row.requests), int(row.input_tokens), int(row.output_tokens), int(row.total_tokens)
        ),
        created_at=row.created_at,
    )


class CheckpointRepository(Repository):
    """The ``session_checkpoints`` rows."""

    async def add(
        self,
        session_id: uuid.UUID,
        *,
        upto_seq: int,
        items: list[Any],
        model: str | None,
        usage: Usage,
        now: datetime,
    ) -> Checkpoint:
        checkpoint_id = uuid.uuid4()
        await self._db.execute(
            insert(_checkpoints).values(
                session_id=session_id,
                id=checkpoint_id,
                upto_seq=upto_seq,
                items=items,
                model=model,
                requests=usage.requests,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens,
                created_at=now,
            )
        )
        return Checkpoint(checkpoint_id, upto_seq, tuple(items), model, usage, now)

    async def latest(self, session_id: uuid.UUID) -> Checkpoint | None:
        """The checkpoint that applies: the one covering the most, the newest among equals.
        On the model's read path, so one statement through the fast path."""
        rows = await self._statements.rows(_LATEST, {"session_id": session_id})
        return checkpoint_of(rows[0]) if rows else None

    async def all(self, session_id: uuid.UUID) -> list[Checkpoint]:
        """Every checkpoint of the session, oldest coverage first."""
        query = (
            select(_checkpoints)
            .where(_checkpoints.c.session_id == session_id)
            .order_by(_checkpoints.c.upto_seq, _checkpoints.c.created_at)
        )
        return [checkpoint_of(row) for row in await self._db.execute(query)]

    async def drop_after(self, session_id: uuid.UUID, last_seq: int) -> None:
        """Drop the checkpoints that cover messages after ``last_seq``: a rewind, pop or clear
        removed some of what they summarize, so they no longer apply."""
        await self._db.execute(
            delete(_checkpoints).where(
                _checkpoints.c.session_id == session_id, _checkpoints.c.upto_seq > last_seq
            )
        )

    async def copy(
        self, source: uuid.UUID, target: uuid.UUID, *, through_seq: int, offset: int
    ) -> None:
        """Copy into a fork the checkpoints within the history it copies (after ``offset``,
        where the source's retention trimmed it, up to ``through_seq``), their seqs moved
        down by ``offset`` as the fork's messages are."""
        upto = _checkpoints.c.upto_seq
        columns = [
            (upto - offset).label("upto_seq") if c.key == "upto_seq" else c
            for c in _checkpoints.c
            if c.key != "session_id"
        ]
        await self._db.execute(
            insert(_checkpoints).from_select(
                ["session_id", *(c.key for c in _checkpoints.c if c.key != "session_id")],
                select(literal(target, _checkpoints.c.session_id.type), *columns).where(
                    _checkpoints.c.session_id == source, upto > offset, upto <= through_seq
                ),
            )
        )

    async def drop_beyond_history(self, session_id: uuid.UUID) -> None:
        """Drop the checkpoints that cover messages after the session's ``last_seq`` now (a
        pop removed one of the messages they summarize)."""
        last = select(sessions_table.c.last_seq).where(sessions_table.c.id == session_id)
        await self._db.execute(
            delete(_checkpoints).where(
                _checkpoints.c.session_id == session_id,
                _checkpoints.c.upto_seq > last.scalar_subquery(),
            )
        )
