"""What every repository holds: the unit of work's session (made on first use) and its
dialect strategy."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession

from agentledger.db.dialect import Dialect


class Repository:
    """Holds the unit of work's ``AsyncSession`` (through a callable that makes it on first use,
    so a hot path that runs through the driver never opens one) and its :class:`Dialect`."""

    def __init__(self, db: Callable[[], AsyncSession], dialect: Dialect) -> None:
        self._db_source = db
        self._dialect = dialect

    @property
    def _db(self) -> AsyncSession:
        return self._db_source()
