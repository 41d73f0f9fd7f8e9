"""The API tokens' rows (``agentledger_api_tokens``): stored by hash, never by the token."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from agentledger.db.models import api_tokens_table
from agentledger.db.repositories.base import Repository
from agentledger.domain.tokens import ApiTokenRecord

_tokens = api_tokens_table
_COLUMNS = (
    _tokens.c.id,
    _tokens.c.user_id,
    _tokens.c.admin,
    _tokens.c.created_at,
    _tokens.c.revoked_at,
)


def _record(row: Any) -> ApiTokenRecord:
    return ApiTokenRecord(
        id=row.id,
        user_id=row.user_id,
        admin=bool(row.admin),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class TokenRepository(Repository):
    """Create, find (by hash), list and revoke tokens."""

    async def add(
        self, token_id: uuid.UUID, hashed: str, user_id: str, *, admin: bool, now: datetime
    ) -> ApiTokenRecord:
        await self._db.execute(
            insert(_tokens).values(
                id=token_id, token_hash=hashed, user_id=user_id, admin=admin, created_at=now
            )
        )
        return ApiTokenRecord(token_id, user_id, admin, now)

    async def active_by_hash(self, hashed: str) -> ApiTokenRecord | None:
        """The unrevoked token with this hash (one indexed lookup)."""
        row = (
            await self._db.execute(
                select(*_COLUMNS).where(
                    _tokens.c.token_hash == hashed, _tokens.c.revoked_at.is_(None)
                )
            )
        ).first()
        return None if row is None else _record(row)

    async def listed(self, user_id: str | None) -> list[ApiTokenRecord]:
        query = select(*_COLUMNS).order_by(_tokens.c.created_at, _tokens.c.id)
        if user_id is not None:
            query = query.where(_tokens.c.user_id == user_id)
        return [_record(row) for row in await self._db.execute(query)]

    async def any_active(self) -> bool:
        query = select(_tokens.c.id).where(_tokens.c.revoked_at.is_(None)).limit(1)
        return (await self._db.execute(query)).first() is not None

    async def revoke(
        self,
        now: datetime,
        *,
        token_id: uuid.UUID | None = None,
        hashed: str | None = None,
        user_id: str | None = None,
    ) -> int:
        """Revoke the token with this id or hash, or every token of ``user_id``; how many
        were active."""
        statement = update(_tokens).where(_tokens.c.revoked_at.is_(None)).values(revoked_at=now)
        if token_id is not None:
            statement = statement.where(_tokens.c.id == token_id)
        if hashed is not None:
            statement = statement.where(_tokens.c.token_hash == hashed)
        if user_id is not None:
            statement = statement.where(_tokens.c.user_id == user_id)
        result = await self._db.execute(statement)
        return int(getattr(result, "rowcount", 0) or 0)
