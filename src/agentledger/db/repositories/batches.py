"""Idempotent batches: the key, position and fingerprint of each batch stored under a key."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import insert, select

from agentledger.db.models import batches_table
from agentledger.db.repositories.base import Repository
from agentledger.domain.search import escape_like

_batches = batches_table


class BatchRepository(Repository):
    """The ``conversation_batches`` rows that make a retried batch land once."""

    async def find(self, session_id: uuid.UUID, key: str) -> tuple[int, int, datetime, str] | None:
        """``(first_seq, count, created_at, fingerprint)`` of a batch stored under ``key``."""
        result = await self._db.execute(
            select(
                _batches.c.first_seq,
                _batches.c.count,
                _batches.c.created_at,
                _batches.c.fingerprint,
            ).where(_batches.c.session_id == session_id, _batches.c.idempotency_key == key)
        )
        row = result.one_or_none()
        if row is None:
            return None
        first_seq, count, created_at, fingerprint = row
        return int(first_seq), int(count), created_at, str(fingerprint)

    async def keys(self, session_id: uuid.UUID, prefix: str) -> list[str]:
        """Idempotency keys of the session's batches that start with ``prefix`` (sorted)."""
        result = await self._db.execute(
            select(_batches.c.idempotency_key)
            .where(
                _batches.c.session_id == session_id,
                _batches.c.idempotency_key.like(escape_like(prefix) + "%", escape="\\"),
            )
            .order_by(_batches.c.idempotency_key)
        )
        return list(result.scalars())

    async def remember(
        self,
        session_id: uuid.UUID,
        key: str,
        first_seq: int,
        count: int,
        fingerprint: str,
        now: datetime,
    ) -> None:
        await self._db.execute(
            insert(_batches).values(
                session_id=session_id,
                idempotency_key=key,
                first_seq=first_seq,
                count=count,
                fingerprint=fingerprint,
                created_at=now,
            )
        )
