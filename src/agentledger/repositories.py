"""Queries and statements over agentledger's tables. Repositories never commit.

The two hot paths of an agent loop, *append a turn* and *read the tail*, are one round trip each:
on PostgreSQL the append is a single statement that locks the session row, allocates a
contiguous range of sequence numbers and inserts every row from column arrays (``unnest``), so
its cost does not grow with the batch size in bind parameters (asyncpg allows at most 32,767 per
statement). SQLite, which has no arrays and no network round trip, runs the same steps as two
statements inside the unit of work's transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from .encoding import escape_nul, escape_nul_in_json, load_json
from .models import AgentSession, ConversationMessage, MessageBatch, SessionUsage
from .records import MessageRecord, SessionRecord, SessionSummary, Usage
from .types import UTCDateTime

_sessions = cast(Table, AgentSession.__table__)
_messages = cast(Table, ConversationMessage.__table__)
_batches = cast(Table, MessageBatch.__table__)
_usage = cast(Table, SessionUsage.__table__)


@dataclass(frozen=True, slots=True)
class NewRow:
    """A validated message ready to insert; JSON values are already encoded as text."""

    id: uuid.UUID
    role: str
    content: str
    tool_calls_json: str | None
    tool_call_id: str | None
    item_type: str
    item_json: str


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """What a session is created with when an append finds it missing (SDK first write)."""

    user_id: str
    agent_name: str


# One statement: lock + allocate (UPDATE ... RETURNING) and insert all rows from arrays.
_PG_APPEND = """
WITH s AS (
    {allocate}
), ins AS (
    INSERT INTO conversation_messages
        (session_id, seq, id, role, content, tool_calls, tool_call_id, item_type, item, created_at)
    SELECT CAST(:sid AS uuid), s.base + r.ord, r.id, r.role, r.content, CAST(r.tool_calls AS jsonb),
           r.tool_call_id, r.item_type, CAST(r.item AS json), CAST(:now AS timestamptz)
    FROM s, unnest(CAST(:ids AS uuid[]), CAST(:roles AS text[]), CAST(:contents AS text[]),
                   CAST(:tool_calls AS text[]), CAST(:tool_call_ids AS text[]),
                   CAST(:item_types AS text[]), CAST(:items AS text[]))
         WITH ORDINALITY AS r(id, role, content, tool_calls, tool_call_id, item_type, item, ord)
)
SELECT s.base FROM s
"""

_PG_ALLOCATE = """
    UPDATE agent_sessions
    SET last_seq = last_seq + CAST(:n AS bigint), updated_at = CAST(:now AS timestamptz)
    WHERE id = CAST(:sid AS uuid) {owner}
    RETURNING last_seq - CAST(:n AS bigint) AS base
"""

_PG_ALLOCATE_OR_CREATE = """
    INSERT INTO agent_sessions (id, user_id, agent_name, metadata, created_at, updated_at, last_seq)
    VALUES (CAST(:sid AS uuid), :uid, :agent_name, '{}', CAST(:now AS timestamptz),
            CAST(:now AS timestamptz), CAST(:n AS bigint))
    ON CONFLICT (id) DO UPDATE
        SET last_seq = agent_sessions.last_seq + CAST(:n AS bigint),
            updated_at = CAST(:now AS timestamptz)
        WHERE agent_sessions.user_id = :uid
    RETURNING last_seq - CAST(:n AS bigint) AS base
"""

_PG_POP = """
WITH s AS (
    UPDATE agent_sessions
    SET last_seq = last_seq - 1, updated_at = CAST(:now AS timestamptz)
    WHERE id = CAST(:sid AS uuid) AND last_seq > 0 {owner}
    RETURNING last_seq + 1 AS seq
)
DELETE FROM conversation_messages m USING s
WHERE m.session_id = CAST(:sid AS uuid) AND m.seq = s.seq
RETURNING m.item
"""

_PG_OWNER = "AND user_id = :uid"


class SessionRepository:
    """Session rows: create, read with history, list, delete, find expired."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(
        self,
        *,
        session_id: uuid.UUID,
        user_id: str,
        agent_name: str,
        metadata: dict[str, Any],
        now: datetime,
    ) -> None:
        await self._session.execute(
            insert(_sessions).values(
                id=session_id,
                user_id=user_id,
                agent_name=agent_name,
                metadata=metadata,
                created_at=now,
                updated_at=now,
                last_seq=0,
            )
        )

    async def owner_of(self, session_id: uuid.UUID) -> str | None:
        """The ``user_id`` owning the session, or ``None`` when it does not exist."""
        result = await self._session.execute(
            select(_sessions.c.user_id).where(_sessions.c.id == session_id)
        )
        return result.scalar_one_or_none()

    async def lock(self, session_id: uuid.UUID, user_id: str | None) -> int | None:
        """Lock the session row for this transaction; return its ``last_seq`` (None: missing)."""
        statement = (
            update(_sessions)
            .where(_sessions.c.id == session_id)
            .values(last_seq=_sessions.c.last_seq)
            .returning(_sessions.c.last_seq)
        )
        if user_id is not None:
            statement = statement.where(_sessions.c.user_id == user_id)
        last_seq: int | None = (await self._session.execute(statement)).scalar_one_or_none()
        return last_seq

    async def get(self, session_id: uuid.UUID, user_id: str | None) -> SessionRecord | None:
        """The session and the prefix of its history up to the ``last_seq`` read with it."""
        query = select(_sessions).where(_sessions.c.id == session_id)
        if user_id is not None:
            query = query.where(_sessions.c.user_id == user_id)
        row = (await self._session.execute(query)).one_or_none()
        if row is None:
            return None
        message_rows = await self._session.execute(
            select(_messages)
            .where(_messages.c.session_id == session_id, _messages.c.seq <= row.last_seq)
            .order_by(_messages.c.seq)
        )
        messages = tuple(
            MessageRecord(
                seq=m.seq,
                role=m.role,
                content=m.content,
                tool_calls=m.tool_calls,
                tool_call_id=m.tool_call_id,
                created_at=m.created_at,
                id=m.id,
                item_type=m.item_type,
                item=m.item,
            )
            for m in message_rows
        )
        return SessionRecord(
            id=row.id,
            user_id=row.user_id,
            agent_name=row.agent_name,
            metadata=row.metadata,
            created_at=row.created_at,
            updated_at=row.updated_at,
            messages=messages,
        )

    async def list_for_user(
        self,
        user_id: str,
        *,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> list[SessionSummary]:
        """One keyset-paginated query, most recently updated first (ties broken by id)."""
        query = (
            select(_sessions)
            .where(_sessions.c.user_id == user_id)
            .order_by(_sessions.c.updated_at.desc(), _sessions.c.id.desc())
            .limit(limit)
        )
        if after is not None:
            updated_at, session_id = after
            query = query.where(
                tuple_(_sessions.c.updated_at, _sessions.c.id)
                < tuple_(literal(updated_at, UTCDateTime), literal(session_id, _sessions.c.id.type))
            )
        rows = await self._session.execute(query)
        return [
            SessionSummary(
                id=row.id,
                user_id=row.user_id,
                agent_name=row.agent_name,
                metadata=row.metadata,
                created_at=row.created_at,
                updated_at=row.updated_at,
                # Sequences are gap-free from 1, so the highest one is the count.
                message_count=row.last_seq,
            )
            for row in rows
        ]

    async def delete(self, session_id: uuid.UUID, user_id: str | None) -> bool:
        statement = delete(_sessions).where(_sessions.c.id == session_id)
        if user_id is not None:
            statement = statement.where(_sessions.c.user_id == user_id)
        result = await self._session.execute(statement.returning(_sessions.c.id))
        return result.first() is not None

    async def count_idle(self, cutoff: datetime) -> tuple[int, int]:
        """How many sessions (and messages) were last updated before ``cutoff``."""
        result = await self._session.execute(
            select(func.count(), func.coalesce(func.sum(_sessions.c.last_seq), 0)).where(
                _sessions.c.updated_at < cutoff
            )
        )
        sessions, messages = result.one()
        return int(sessions), int(messages)

    async def delete_idle_batch(self, cutoff: datetime, batch_size: int) -> int:
        """Delete up to ``batch_size`` sessions idle since ``cutoff``; return how many.

        The outer ``updated_at`` test is re-checked on the locked row, so a session that
        received a message while the batch was chosen survives.
        """
        chosen = (
            select(_sessions.c.id)
            .where(_sessions.c.updated_at < cutoff)
            .order_by(_sessions.c.updated_at)
            .limit(batch_size)
            .scalar_subquery()
        )
        result = await self._session.execute(
            delete(_sessions)
            .where(_sessions.c.updated_at < cutoff, _sessions.c.id.in_(chosen))
            .returning(_sessions.c.id)
        )
        return len(result.all())


class MessageRepository:
    """Message rows: append, tail reads, pop and clear."""

    def __init__(self, session: AsyncSession, *, postgres: bool) -> None:
        self._session = session
        self._postgres = postgres

    async def append(
        self,
        session_id: uuid.UUID,
        rows: Sequence[NewRow],
        *,
        user_id: str | None,
        now: datetime,
        create: SessionSpec | None = None,
    ) -> int | None:
        """Append ``rows`` after the session's last message; return the seq before the first.

        Returns ``None`` (and writes nothing) when the session is missing or not owned by
        ``user_id``; with ``create`` a missing session is created first, in the same statement.
        """
        if self._postgres:
            return await self._append_postgres(session_id, rows, user_id, now, create)
        return await self._append_portable(session_id, rows, user_id, now, create)

    async def _append_postgres(
        self,
        session_id: uuid.UUID,
        rows: Sequence[NewRow],
        user_id: str | None,
        now: datetime,
        create: SessionSpec | None,
    ) -> int | None:
        params: dict[str, Any] = {
            "sid": session_id,
            "n": len(rows),
            "now": now,
            "ids": [row.id for row in rows],
            "roles": [row.role for row in rows],
            "contents": [escape_nul(row.content) for row in rows],
            "tool_calls": [
                None if row.tool_calls_json is None else escape_nul_in_json(row.tool_calls_json)
                for row in rows
            ],
            "tool_call_ids": [
                None if row.tool_call_id is None else escape_nul(row.tool_call_id) for row in rows
            ],
            "item_types": [row.item_type for row in rows],
            "items": [row.item_json for row in rows],
        }
        if create is not None:
            allocate = _PG_ALLOCATE_OR_CREATE
            params["uid"] = create.user_id
            params["agent_name"] = create.agent_name
        else:
            allocate = _PG_ALLOCATE.format(owner=_PG_OWNER if user_id is not None else "")
            if user_id is not None:
                params["uid"] = user_id
        statement = _PG_APPEND.format(allocate=allocate)
        result = await self._session.execute(text(statement), params)
        base: int | None = result.scalar_one_or_none()
        return base

    async def _append_portable(
        self,
        session_id: uuid.UUID,
        rows: Sequence[NewRow],
        user_id: str | None,
        now: datetime,
        create: SessionSpec | None,
    ) -> int | None:
        count = len(rows)
        allocate: Any
        if create is not None:
            insert_session = sqlite_insert(_sessions).values(
                id=session_id,
                user_id=create.user_id,
                agent_name=create.agent_name,
                metadata={},
                created_at=now,
                updated_at=now,
                last_seq=count,
            )
            allocate = insert_session.on_conflict_do_update(
                index_elements=[_sessions.c.id],
                set_={"last_seq": _sessions.c.last_seq + count, "updated_at": now},
                where=_sessions.c.user_id == create.user_id,
            ).returning(_sessions.c.last_seq - count)
        else:
            allocate = (
                update(_sessions)
                .where(_sessions.c.id == session_id)
                .values(last_seq=_sessions.c.last_seq + count, updated_at=now)
                .returning(_sessions.c.last_seq - count)
            )
            if user_id is not None:
                allocate = allocate.where(_sessions.c.user_id == user_id)
        base: int | None = (await self._session.execute(allocate)).scalar_one_or_none()
        if base is None:
            return None
        statement = insert(_messages).values(
            session_id=bindparam("session_id", type_=_messages.c.session_id.type),
            tool_calls=bindparam("tool_calls", type_=Text),
            item=bindparam("item", type_=Text),
        )
        await self._session.execute(
            statement,
            [
                {
                    "session_id": session_id,
                    "seq": base + offset,
                    "id": row.id,
                    "role": row.role,
                    "content": row.content,
                    "tool_calls": row.tool_calls_json,
                    "tool_call_id": row.tool_call_id,
                    "item_type": row.item_type,
                    "item": row.item_json,
                    "created_at": now,
                }
                for offset, row in enumerate(rows, start=1)
            ],
        )
        return base

    async def items(
        self, session_id: uuid.UUID, limit: int | None, user_id: str | None
    ) -> list[Any]:
        """The stored items in order; with ``limit``, only the latest ``limit`` of them."""
        query = select(_messages.c.item).where(_messages.c.session_id == session_id)
        if user_id is not None:
            query = query.where(
                select(_sessions.c.id)
                .where(_sessions.c.id == session_id, _sessions.c.user_id == user_id)
                .exists()
            )
        if limit is None:
            result = await self._session.execute(query.order_by(_messages.c.seq))
            return list(result.scalars())
        result = await self._session.execute(query.order_by(_messages.c.seq.desc()).limit(limit))
        latest = list(result.scalars())
        latest.reverse()
        return latest

    async def pop(self, session_id: uuid.UUID, user_id: str | None, now: datetime) -> Any:
        """Remove the newest item and return it (``None`` when empty, missing or not owned)."""
        if self._postgres:
            params: dict[str, Any] = {"sid": session_id, "now": now}
            owner = ""
            if user_id is not None:
                owner = _PG_OWNER
                params["uid"] = user_id
            result = await self._session.execute(text(_PG_POP.format(owner=owner)), params)
            value = result.scalar_one_or_none()
            return load_json(value) if isinstance(value, str) else value
        allocate = (
            update(_sessions)
            .where(_sessions.c.id == session_id, _sessions.c.last_seq > 0)
            .values(last_seq=_sessions.c.last_seq - 1, updated_at=now)
            .returning(_sessions.c.last_seq + 1)
        )
        if user_id is not None:
            allocate = allocate.where(_sessions.c.user_id == user_id)
        seq = (await self._session.execute(allocate)).scalar_one_or_none()
        if seq is None:
            return None
        result = await self._session.execute(
            delete(_messages)
            .where(_messages.c.session_id == session_id, _messages.c.seq == seq)
            .returning(_messages.c.item)
        )
        return result.scalar_one_or_none()

    async def clear(self, session_id: uuid.UUID, now: datetime) -> None:
        """Delete every message and batch record; the next append starts at seq 1 again.

        The caller holds the session row's lock (:meth:`SessionRepository.lock`).
        """
        await self._session.execute(delete(_messages).where(_messages.c.session_id == session_id))
        await self._session.execute(delete(_batches).where(_batches.c.session_id == session_id))
        await self._session.execute(
            update(_sessions).where(_sessions.c.id == session_id).values(last_seq=0, updated_at=now)
        )

    async def find_batch(
        self, session_id: uuid.UUID, key: str
    ) -> tuple[int, int, datetime, str] | None:
        """``(first_seq, count, created_at, fingerprint)`` of a batch stored under ``key``."""
        result = await self._session.execute(
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

    async def batch_keys(self, session_id: uuid.UUID, prefix: str) -> list[str]:
        """Idempotency keys of the session's batches that start with ``prefix`` (sorted)."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        result = await self._session.execute(
            select(_batches.c.idempotency_key)
            .where(
                _batches.c.session_id == session_id,
                _batches.c.idempotency_key.like(pattern, escape="\\"),
            )
            .order_by(_batches.c.idempotency_key)
        )
        return list(result.scalars())

    async def remember_batch(
        self,
        session_id: uuid.UUID,
        key: str,
        first_seq: int,
        count: int,
        fingerprint: str,
        now: datetime,
    ) -> None:
        await self._session.execute(
            insert(_batches).values(
                session_id=session_id,
                idempotency_key=key,
                first_seq=first_seq,
                count=count,
                fingerprint=fingerprint,
                created_at=now,
            )
        )


class UsageRepository:
    """Token usage rows, one per agent run."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, session_id: uuid.UUID, usage: Usage, now: datetime) -> None:
        await self._session.execute(
            insert(_usage).values(
                session_id=session_id,
                id=uuid.uuid4(),
                requests=usage.requests,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens,
                created_at=now,
            )
        )

    async def totals(
        self, *, session_id: uuid.UUID | None = None, user_id: str | None = None
    ) -> Usage:
        """Sum usage of one session, or of every session of a user."""
        query = select(
            func.coalesce(func.sum(_usage.c.requests), 0),
            func.coalesce(func.sum(_usage.c.input_tokens), 0),
            func.coalesce(func.sum(_usage.c.output_tokens), 0),
            func.coalesce(func.sum(_usage.c.total_tokens), 0),
        )
        if session_id is not None:
            query = query.where(_usage.c.session_id == session_id)
        if user_id is not None:
            query = query.join_from(_usage, _sessions, _sessions.c.id == _usage.c.session_id).where(
                _sessions.c.user_id == user_id
            )
        requests, input_tokens, output_tokens, total_tokens = (
            await self._session.execute(query)
        ).one()
        return Usage(int(requests), int(input_tokens), int(output_tokens), int(total_tokens))
