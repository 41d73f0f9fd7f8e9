"""Token usage rows, one per agent run."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, insert, select

from agentledger.db.models import sessions_table, usage_table
from agentledger.db.repositories.base import Repository
from agentledger.domain.records import Usage

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
