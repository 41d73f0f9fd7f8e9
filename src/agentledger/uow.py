"""The unit of work: agentledger's only transaction boundary.

``async with uow: ...; await uow.commit()`` — anything not committed is rolled back when the block
ends, whether it ended by an exception, a cancellation or simply without a commit. Repositories
hang off the unit of work and never commit themselves.

A unit of work either *owns* its :class:`~sqlalchemy.ext.asyncio.AsyncSession` (made from a
sessionmaker) or *borrows* the caller's ``AsyncSession``/``AsyncConnection``. A borrowed one runs
inside a SAVEPOINT: ``commit()`` releases it (the caller's own commit makes it durable) and a
failure rolls back only agentledger's part. agentledger never commits, rolls back or closes a
transaction it did not open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol, Self

from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncSession,
    AsyncSessionTransaction,
    async_sessionmaker,
)

from .fastpath import DriverStatements
from .maintenance_repository import MaintenanceRepository
from .repositories import MessageRepository, SessionRepository, UsageRepository
from .row_security import SCOPE_TO_TENANT


class UnitOfWorkFactory(Protocol):
    """Makes units of work; ``autocommit=True`` is a hint for single-statement work.

    A factory may honour the hint on backends where one statement is atomic by itself and a
    BEGIN/COMMIT pair costs network round trips (PostgreSQL); it must ignore it otherwise, and
    whenever ``tenant`` is given: the tenant setting lives as long as a transaction, so a
    tenant-scoped unit of work always runs in one (see :mod:`agentledger.row_security`).
    """

    def __call__(self, *, autocommit: bool = False, tenant: str | None = None) -> UnitOfWork: ...


class UnitOfWork:
    """Transaction boundary with the repositories bound to it."""

    sessions: SessionRepository
    messages: MessageRepository
    usage: UsageRepository
    maintenance: MaintenanceRepository

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession] | None = None,
        *,
        borrow: AsyncSession | AsyncConnection | None = None,
        prepare: Callable[[], Awaitable[None]] | None = None,
        driver: DriverStatements | None = None,
        tenant: str | None = None,
    ) -> None:
        """``driver`` (single-statement units that own their connections only) lets the
        message repository send its hot-path statements straight through asyncpg; see
        :mod:`agentledger.fastpath`. ``tenant``: on PostgreSQL, name this user to the
        row-level security policies for the whole transaction (SQLite has none)."""
        if (session_factory is None) == (borrow is None):
            raise TypeError("UnitOfWork needs exactly one of session_factory or borrow=")
        if driver is not None and borrow is not None:
            raise TypeError("a borrowed unit of work runs in the caller's transaction: no driver=")
        if driver is not None and tenant is not None:
            raise TypeError("a tenant-scoped unit of work needs a transaction: no driver=")
        self._tenant = tenant
        self._factory = session_factory
        self._driver = driver
        self._borrowed = borrow
        self._session: AsyncSession | None = None
        self._savepoint: AsyncSessionTransaction | None = None
        self._prepare = prepare
        self._committed = False
        self._entered = False

    @property
    def session(self) -> AsyncSession:
        """The AsyncSession this unit of work runs on (only inside ``async with``)."""
        if self._session is None:
            if not self._entered or self._factory is None:
                raise RuntimeError(
                    "use the UnitOfWork inside `async with` before touching .session"
                )
            # Created on first use: a hot path that ran through the driver never needs one.
            self._session = self._factory()
        return self._session

    @property
    def dialect_name(self) -> str:
        return self.session.get_bind().dialect.name

    async def __aenter__(self) -> Self:
        if self._prepare is not None:
            await self._prepare()
        self._committed = False
        self._entered = True
        if self._factory is not None and self._driver is not None:
            # The driver runs PostgreSQL statements; the session waits until one needs it.
            self.sessions = SessionRepository(lambda: self.session)
            self.messages = MessageRepository(
                lambda: self.session, postgres=True, driver=self._driver
            )
            self.usage = UsageRepository(lambda: self.session)
            self.maintenance = MaintenanceRepository(lambda: self.session)
            return self
        if self._factory is not None:
            self._session = self._factory()
        elif isinstance(self._borrowed, AsyncSession):
            self._session = self._borrowed
            self._savepoint = await self._borrowed.begin_nested()
        else:
            assert isinstance(self._borrowed, AsyncConnection)
            if not self._borrowed.in_transaction():
                # A fresh connection: begin the transaction the caller would have autobegun on
                # its next statement. It is the caller's to commit or roll back; given a
                # connection outside any transaction, the session below would otherwise
                # begin, and commit, a transaction of its own.
                await self._borrowed.begin()
            # Joins the caller's transaction; our commit/rollback only touch a SAVEPOINT.
            self._session = AsyncSession(
                bind=self._borrowed,
                join_transaction_mode="create_savepoint",
                expire_on_commit=False,
            )
        postgres = self.dialect_name == "postgresql"
        if postgres and self._tenant is not None:
            try:
                await self._session.execute(SCOPE_TO_TENANT, {"tenant": self._tenant})
            except BaseException as error:
                # __aexit__ never runs for a failed __aenter__: release what we hold here.
                await self.__aexit__(type(error), error, error.__traceback__)
                raise
        self.sessions = SessionRepository(self._session)
        self.messages = MessageRepository(self._session, postgres=postgres)
        self.usage = UsageRepository(self._session)
        self.maintenance = MaintenanceRepository(self._session)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        session = self._session
        owned = self._factory is not None
        try:
            # Closing an owned session rolls back whatever it did not commit, in the same
            # step that returns its connection to the pool: no separate rollback needed.
            if not self._committed and not owned:
                await self.rollback()
        finally:
            # (No session at all: the hot path ran through the driver and never needed one.)
            if session is not None and self._savepoint is None and self._borrowed_session is None:
                await session.close()
            self._session = None
            self._savepoint = None
            self._entered = False

    @property
    def _borrowed_session(self) -> AsyncSession | None:
        return self._borrowed if isinstance(self._borrowed, AsyncSession) else None

    def savepoint(self) -> AsyncSessionTransaction:
        """A SAVEPOINT inside this unit of work (``async with uow.savepoint(): ...``): a
        failure inside rolls back only what the block did, and the transaction goes on."""
        return self.session.begin_nested()

    async def commit(self) -> None:
        """Make the work durable (owned) or release the SAVEPOINT into the caller's transaction."""
        if self._savepoint is not None:
            await self._savepoint.commit()
        elif self._factory is None or self._session is not None:
            await self.session.commit()
        # else: no session was ever needed; statements that went through the driver (autocommit
        # units only) committed by themselves.
        self._committed = True

    async def rollback(self) -> None:
        """Discard the work (owned) or roll back to the SAVEPOINT (borrowed)."""
        if self._savepoint is not None:
            if self._savepoint.is_active:
                await self._savepoint.rollback()
        else:
            await self.session.rollback()
