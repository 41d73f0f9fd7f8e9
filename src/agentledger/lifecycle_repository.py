"""Queries and statements of the conversation lifecycle: search, transcripts and retention.

Kept apart from :mod:`agentledger.repositories` (the agent loop's hot paths): nothing here runs
on every turn. Like every repository, it never commits; the service decides the transactions.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    REAL,
    ColumnElement,
    Select,
    and_,
    bindparam,
    delete,
    false,
    func,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncSession

from .encoding import DamagedJSON
from .maintenance_repository import AgentScope
from .models import messages_table, sessions_table
from .repositories import intact_items, warn_damaged
from .search import SearchTerms, ascii_lower, like_pattern
from .types import SEARCH_CONFIG

_sessions = sessions_table
_messages = messages_table


@dataclass(frozen=True, slots=True)
class SearchRow:
    session_id: uuid.UUID
    seq: int
    role: str
    content: str
    item_type: str
    created_at: datetime
    agent_name: str
    rank: float


@dataclass(frozen=True, slots=True)
class SessionState:
    """The columns of a session row that transcripts and retention need."""

    id: uuid.UUID
    user_id: str
    agent_name: str
    title: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    trimmed_seq: int
    last_seq: int


class LifecycleRepository:
    """Search, transcript reads/writes and retention statements over agentledger's tables."""

    def __init__(self, session: AsyncSession, *, postgres: bool) -> None:
        self._session = session
        self._postgres = postgres

    # -- search --------------------------------------------------------------------------------

    async def search(
        self,
        user_id: str,
        terms: SearchTerms,
        *,
        limit: int,
        after: tuple[float, uuid.UUID, int] | None,
        agent_name: str | None,
        include_archived: bool,
    ) -> list[SearchRow]:
        """Hits of ``user_id``'s messages, best first, then by ``(session_id, seq)``."""
        matches: ColumnElement[bool]
        if self._postgres:
            query = func.websearch_to_tsquery(
                literal_column(f"'{SEARCH_CONFIG}'::regconfig"), bindparam("query", terms.text)
            )
            matches = _messages.c.search_vector.op("@@")(query)
            rank: ColumnElement[float] = func.ts_rank(_messages.c.search_vector, query, type_=REAL)
        else:
            matches = _portable_match(terms)
            rank = _portable_rank(terms)
        statement: Select[Any] = (
            select(
                _messages.c.session_id,
                _messages.c.seq,
                _messages.c.role,
                _messages.c.content,
                _messages.c.item_type,
                _messages.c.created_at,
                _sessions.c.agent_name,
                rank.label("rank"),
            )
            .join_from(_messages, _sessions, _sessions.c.id == _messages.c.session_id)
            .where(_sessions.c.user_id == user_id, matches)
            .order_by(rank.desc(), _messages.c.session_id, _messages.c.seq)
            .limit(limit)
        )
        if agent_name is not None:
            statement = statement.where(_sessions.c.agent_name == agent_name)
        if not include_archived:
            statement = statement.where(_sessions.c.archived_at.is_(None))
        if after is not None:
            after_rank, after_session, after_seq = after
            bound_rank = sql_cast(bindparam("after_rank", after_rank), REAL)
            statement = statement.where(
                or_(
                    rank < bound_rank,
                    and_(
                        rank == bound_rank,
                        tuple_(_messages.c.session_id, _messages.c.seq)
                        > tuple_(
                            bindparam("after_session", after_session, _messages.c.session_id.type),
                            bindparam("after_seq", after_seq),
                        ),
                    ),
                )
            )
        rows = await self._session.execute(statement)
        return [
            SearchRow(
                session_id=row.session_id,
                seq=row.seq,
                role=row.role,
                content=row.content,
                item_type=row.item_type,
                created_at=row.created_at,
                agent_name=row.agent_name,
                rank=float(row.rank),
            )
            for row in rows
        ]

    # -- transcripts ---------------------------------------------------------------------------

    async def session_state(
        self, session_id: uuid.UUID, user_id: str | None = None, *, share_lock: bool = False
    ) -> SessionState | None:
        """The session row (``None``: missing, or not ``user_id``'s).

        ``share_lock`` holds appends and trims back until the transaction ends (PostgreSQL
        ``FOR SHARE``; SQLite's read transaction is a snapshot anyway), so the history read next
        matches the row.
        """
        statement = select(_sessions).where(_sessions.c.id == session_id)
        if user_id is not None:
            statement = statement.where(_sessions.c.user_id == user_id)
        if share_lock:
            statement = statement.with_for_update(read=True)
        row = (await self._session.execute(statement)).one_or_none()
        if row is None:
            return None
        return SessionState(
            id=row.id,
            user_id=row.user_id,
            agent_name=row.agent_name,
            title=row.title,
            metadata=row.metadata,
            created_at=row.created_at,
            updated_at=row.updated_at,
            archived_at=row.archived_at,
            trimmed_seq=row.trimmed_seq,
            last_seq=row.last_seq,
        )

    async def history(
        self, session_id: uuid.UUID, *, after_seq: int, upto_seq: int
    ) -> tuple[list[tuple[int, Any, datetime]], list[int]]:
        """``(seq, item, created_at)`` of the messages ``after_seq < seq <= upto_seq``, in
        order, and the seqs of the damaged ones among them (left out, logged)."""
        rows = await self._session.execute(
            select(_messages.c.seq, _messages.c.item, _messages.c.created_at)
            .where(
                _messages.c.session_id == session_id,
                _messages.c.seq > after_seq,
                _messages.c.seq <= upto_seq,
            )
            .order_by(_messages.c.seq)
        )
        history = []
        damaged = []
        for seq, item, created_at in rows:
            if isinstance(item, DamagedJSON):
                warn_damaged(session_id, seq, item)  # left out, as in every read
                damaged.append(int(seq))
            else:
                history.append((int(seq), item, created_at))
        return history, damaged

    async def move_empty_start(self, session_id: uuid.UUID, start_seq: int) -> bool:
        """Let an empty session's next message get ``start_seq + 1``; False unless empty."""
        result = await self._session.execute(
            update(_sessions)
            .where(
                _sessions.c.id == session_id,
                _sessions.c.last_seq == _sessions.c.trimmed_seq,
                _sessions.c.last_seq <= start_seq,
            )
            .values(last_seq=start_seq, trimmed_seq=start_seq)
            .returning(_sessions.c.id)
        )
        return result.first() is not None

    async def set_created_at(
        self, session_id: uuid.UUID, stamps: Sequence[tuple[int, datetime]]
    ) -> None:
        """Give imported messages their original ``created_at`` (informational only)."""
        if not stamps:
            return
        await self._session.execute(
            update(_messages)
            .where(
                _messages.c.session_id == session_id,
                _messages.c.seq == bindparam("stamp_seq"),
            )
            .values(created_at=bindparam("stamp_at")),
            [{"stamp_seq": seq, "stamp_at": when} for seq, when in stamps],
        )

    async def set_updated_at(self, session_id: uuid.UUID, when: datetime) -> None:
        await self._session.execute(
            update(_sessions).where(_sessions.c.id == session_id).values(updated_at=when)
        )

    # -- retention -----------------------------------------------------------------------------

    async def trim_candidates(
        self,
        scope: AgentScope,
        max_messages: int,
        *,
        after: uuid.UUID | None,
        limit: int,
        active_since: datetime | None = None,
    ) -> list[uuid.UUID]:
        """Ids of the scope's sessions holding more than ``max_messages``, in id order
        (``active_since``: only those updated since then; the others are being deleted)."""
        statement = (
            select(_sessions.c.id)
            .where(
                scope.condition(),
                _sessions.c.last_seq - _sessions.c.trimmed_seq > max_messages,
            )
            .order_by(_sessions.c.id)
            .limit(limit)
        )
        if after is not None:
            statement = statement.where(_sessions.c.id > after)
        if active_since is not None:
            statement = statement.where(_sessions.c.updated_at >= active_since)
        return list((await self._session.execute(statement)).scalars())

    async def lock_counters(self, session_id: uuid.UUID) -> tuple[int, int] | None:
        """Lock the session row for this transaction; ``(trimmed_seq, last_seq)`` or None."""
        result = await self._session.execute(
            update(_sessions)
            .where(_sessions.c.id == session_id)
            .values(last_seq=_sessions.c.last_seq)
            .returning(_sessions.c.trimmed_seq, _sessions.c.last_seq)
        )
        row = result.one_or_none()
        return None if row is None else (int(row[0]), int(row[1]))

    async def read_counters(self, session_id: uuid.UUID) -> tuple[int, int] | None:
        """``(trimmed_seq, last_seq)`` without a lock (dry runs)."""
        result = await self._session.execute(
            select(_sessions.c.trimmed_seq, _sessions.c.last_seq).where(
                _sessions.c.id == session_id
            )
        )
        row = result.one_or_none()
        return None if row is None else (int(row[0]), int(row[1]))

    async def items_between(
        self, session_id: uuid.UUID, *, after_seq: int, upto_seq: int
    ) -> list[Any]:
        rows = await self._session.execute(
            select(_messages.c.item, _messages.c.seq)
            .where(
                _messages.c.session_id == session_id,
                _messages.c.seq > after_seq,
                _messages.c.seq <= upto_seq,
            )
            .order_by(_messages.c.seq)
        )
        return intact_items(session_id, rows)

    async def trim_front(self, session_id: uuid.UUID, new_trimmed_seq: int) -> None:
        """Delete the messages up to ``new_trimmed_seq`` and record it (row lock held)."""
        await self._session.execute(
            delete(_messages).where(
                _messages.c.session_id == session_id, _messages.c.seq <= new_trimmed_seq
            )
        )
        await self._session.execute(
            update(_sessions)
            .where(_sessions.c.id == session_id)
            .values(trimmed_seq=new_trimmed_seq)
        )


# -- the SQLite search fallback ------------------------------------------------------------------


def _contains(term: str) -> ColumnElement[bool]:
    return _messages.c.content.like(like_pattern(term), escape="\\")


def _portable_match(terms: SearchTerms) -> ColumnElement[bool]:
    alternatives = []
    for group in terms.groups:
        conditions = [_contains(term) for term in group.include]
        conditions.extend(~_contains(term) for term in group.exclude)
        alternatives.append(and_(*conditions) if conditions else false())
    return or_(*alternatives)


def _portable_rank(terms: SearchTerms) -> ColumnElement[float]:
    """Occurrences of the wanted terms (ASCII case-insensitive, as LIKE), as a float."""
    lowered = func.lower(_messages.c.content)
    counts: Sequence[ColumnElement[Any]] = [
        (func.length(lowered) - func.length(func.replace(lowered, ascii_lower(term), "")))
        / len(term)
        for term in terms.wanted
    ]
    total: ColumnElement[Any] = counts[0] if counts else literal_column("0")
    for count in counts[1:]:
        total = total + count
    return sql_cast(total, REAL)
