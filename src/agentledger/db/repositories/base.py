"""What every repository holds: the unit of work's session (made on first use) and its
dialect strategy."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Executable, Result
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from agentledger.db.dialect import Dialect
from agentledger.db.fastpath import Statements
from agentledger.translation import referenced_error_from


class Repository:
    """Holds the unit of work's ``AsyncSession`` (through a callable that makes it on first use,
    so a hot path that runs through the driver never opens one), its :class:`Dialect` and its
    :class:`~agentledger.db.fastpath.Statements`: the way single statements run (straight
    through asyncpg in a single-statement unit on PostgreSQL, else through the session)."""

    def __init__(
        self, db: Callable[[], AsyncSession], dialect: Dialect, statements: Statements
    ) -> None:
        self._db_source = db
        self._dialect = dialect
        self._statements = statements

    @property
    def _db(self) -> AsyncSession:
        return self._db_source()

    async def _delete(
        self,
        statement: Executable,
        session_ids: Iterable[uuid.UUID],
        *,
        messages: bool = False,
    ) -> Result[Any]:
        """Run a statement that deletes rows another table's foreign key may refer to: a
        refusal leaves as :class:`~agentledger.errors.SessionReferencedError` naming the
        sessions, raised by the statement itself (PostgreSQL checks deferrable keys at once,
        not at the commit), so the caller can skip those sessions in a SAVEPOINT."""
        immediate = self._dialect.immediate_constraints
        if immediate is not None:
            await self._db.execute(immediate)
        try:
            return await self._db.execute(statement)
        except IntegrityError as error:
            referenced = referenced_error_from(error, tuple(session_ids), messages=messages)
            if referenced is None:
                raise
            raise referenced from error
