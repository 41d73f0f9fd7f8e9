"""Full-text search over one user's messages (how each backend matches: the dialect)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import REAL, Select, and_, bindparam, or_, select, tuple_
from sqlalchemy import cast as sql_cast

from agentledger.db.models import messages_table, sessions_table
from agentledger.db.repositories.base import Repository
from agentledger.domain.search import SearchTerms

_sessions = sessions_table
_messages = messages_table


class SearchRepository(Repository):
    """Matches of a query among a user's messages, best first."""

    async def search(
        self,
        user_id: str,
        terms: SearchTerms,
        *,
        limit: int,
        after: tuple[float, uuid.UUID, int] | None,
        agent_name: str | None,
        include_archived: bool,
    ) -> list[Any]:
        """Rows ``(session_id, seq, role, content, item_type, created_at, agent_name, framework,
        rank)``
        of ``user_id``'s matching messages, best first, then by ``(session_id, seq)``."""
        matches, rank = self._dialect.search(terms)
        statement: Select[Any] = (
            select(
                _messages.c.session_id,
                _messages.c.seq,
                _messages.c.role,
                _messages.c.content,
                _messages.c.item_type,
                _messages.c.created_at,
                _sessions.c.agent_name,
                _sessions.c.framework,
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
        return list(await self._db.execute(statement))
