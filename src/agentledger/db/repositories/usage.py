"""Token usage rows, one per agent run."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select

from agentledger.db.models import sessions_table, usage_table
from agentledger.db.repositories.base import Repository
from agentledger.domain.records import DailyUsage, Usage, UsageEntry
from agentledger.domain.time import as_day

_sessions = sessions_table
_usage = usage_table


class UsageRepository(Repository):
    """The ``session_usage`` rows."""

    async def add(self, session_id: uuid.UUID, usage: Usage, now: datetime) -> None:
        await self._db.execute(
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
        requests, input_tokens, output_tokens, total_tokens = (await self._db.execute(query)).one()
        return Usage(int(requests), int(input_tokens), int(output_tokens), int(total_tokens))

    async def entries(self, session_id: uuid.UUID, *, limit: int) -> list[UsageEntry]:
        """The session's usage records, oldest first (at most ``limit``)."""
        query = (
            select(*_AMOUNTS, _usage.c.created_at)
            .where(_usage.c.session_id == session_id)
            .order_by(_usage.c.created_at, _usage.c.id)
            .limit(limit)
        )
        rows = (await self._db.execute(query)).all()
        return [UsageEntry(_amounts(row), row.created_at) for row in rows]

    async def daily(self, user_id: str, *, since: datetime) -> list[DailyUsage]:
        """A user's usage summed per UTC day and agent from ``since`` on, oldest day first:
        one grouped query, however many runs there were."""
        day = self._dialect.utc_day(_usage.c.created_at).label("day")
        query = (
            select(
                day,
                _sessions.c.agent_name,
                *(func.coalesce(func.sum(column), 0).label(column.name) for column in _AMOUNTS),
            )
            .join_from(_usage, _sessions, _sessions.c.id == _usage.c.session_id)
            .where(_sessions.c.user_id == user_id, _usage.c.created_at >= since)
            .group_by(day, _sessions.c.agent_name)
            .order_by(day, _sessions.c.agent_name)
        )
        rows = (await self._db.execute(query)).all()
        return [DailyUsage(as_day(row.day), row.agent_name, _amounts(row)) for row in rows]


_AMOUNTS = (_usage.c.requests, _usage.c.input_tokens, _usage.c.output_tokens, _usage.c.total_tokens)


def _amounts(row: Any) -> Usage:
    return Usage(
        int(row.requests), int(row.input_tokens), int(row.output_tokens), int(row.total_tokens)
    )
