"""Token usage: one record per agent run, totals per session and per user."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agentledger.domain.records import DailyUsage, Usage, UsageEntry
from agentledger.domain.validation import (
    check_count,
    check_name,
    check_owner,
    check_usage,
    parse_session_id,
)
from agentledger.services.base import ServiceBase, SessionId, operation


class Usages(ServiceBase):
    """Usage use cases."""

    @operation()
    async def record_usage(
        self, session_id: SessionId, usage: Usage, *, user_id: str | None = None
    ) -> None:
        """Record the token usage of one agent run (turn) in the session."""
        sid = parse_session_id(session_id)
        user_id = check_owner(user_id)
        check_usage(usage)
        if user_id is not None or self._tenant is not None:
            # A separate read: on SQLite a transaction that reads before it writes may fail
            # at once under concurrent writers instead of waiting for the lock. Under
            # row-level security it turns another tenant's session into "not found" rather
            # than a policy violation that would confirm the session exists.
            async with self._uow(autocommit=True) as uow:
                await self._check_owner(uow, sid, user_id, missing_ok=False)
        async with self._uow() as uow:
            await uow.usage.add(sid, usage, self._now())
            await uow.commit()

    @operation()
    async def get_usage(self, session_id: SessionId, *, user_id: str | None = None) -> Usage:
        """Token usage totals of the session."""
        sid = parse_session_id(session_id)
        user_id = check_owner(user_id)
        async with self._read_uow(autocommit=True) as uow:
            if user_id is not None and not await self._readable(uow, sid, user_id):
                return Usage()
            return await uow.usage.totals(session_id=sid)

    @operation()
    async def get_user_usage(self, user_id: str) -> Usage:
        """Token usage totals over every session of ``user_id``."""
        user_id = check_name(user_id, "user_id")
        async with self._read_uow(autocommit=True) as uow:
            return await uow.usage.totals(user_id=user_id)

    @operation()
    async def get_usage_entries(
        self, session_id: SessionId, *, user_id: str | None = None, limit: int = 1000
    ) -> list[UsageEntry]:
        """The session's usage records (one per agent run, i.e. per turn), oldest first, at
        most ``limit``; a missing or another user's session has none."""
        sid = parse_session_id(session_id)
        user_id = check_owner(user_id)
        size = check_count(limit, "limit", maximum=MAX_USAGE_ENTRIES)
        async with self._read_uow(autocommit=True) as uow:
            if user_id is not None and not await self._readable(uow, sid, user_id):
                return []
            return await uow.usage.entries(sid, limit=size)

    @operation()
    async def get_daily_usage(self, user_id: str, *, days: int = 30) -> list[DailyUsage]:
        """``user_id``'s token usage per UTC day and agent over the last ``days`` days (today
        included), oldest first; days without runs are left out."""
        user_id = check_name(user_id, "user_id")
        span = check_count(days, "days", maximum=MAX_USAGE_DAYS)
        today = self._now().date()
        start = today - timedelta(days=span - 1)
        since = datetime(start.year, start.month, start.day, tzinfo=UTC)
        async with self._read_uow(autocommit=True) as uow:
            return await uow.usage.daily(user_id, since=since)


#: The most usage records one call returns, and the longest span of days a chart asks for.
MAX_USAGE_ENTRIES = 10_000
MAX_USAGE_DAYS = 3660
