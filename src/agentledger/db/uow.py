"""The unit of work: agentledger's only transaction boundary.

``async with uow: ...; await uow.commit()`` — anything not committed is rolled back when the block
ends, whether it ended by an exception, a cancellation or simply without a commit. Every
repository hangs off the unit of work (``uow.sessions``, ``uow.messages``, ``uow.batches``,
``uow.usage``, ``uow.search``, ``uow.maintenance``) and never commits itself; schema
administration runs on one too (``uow.connection()``).

How it holds its transaction is one of four small strategies, chosen when it is made:

* :class:`_OwnedTransaction` — an ``AsyncSession`` of its own: BEGIN ... COMMIT;
* :class:`_SingleStatements` — single statements that commit by themselves (PostgreSQL's
  autocommit, where a BEGIN/COMMIT pair costs round trips); its statements go through the
  asyncpg fast path when :meth:`FastPath.statements` allows, the one place that decides;
* :class:`_BorrowedSession` / :class:`_BorrowedConnection` — inside the caller's transaction
  (``service.using(...)``): a SAVEPOINT, so ``commit()`` releases it (the caller's own commit
  makes it durable) and a failure rolls back only agentledger's part. agentledger never
  commits, rolls back or closes a transaction it did not open.

``tenant``: on PostgreSQL, the first statement of the transaction names that user to the
row-level security policies (see :mod:`agentledger.schema.row_security`).

``route`` / ``wrote``: with a read replica, a unit of reads may move to the replica's engine
when it starts, and units on the primary report that they may have written; both serve the
read-your-writes routing of :mod:`agentledger.db.replica`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar, cast

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    AsyncSessionTransaction,
    async_sessionmaker,
)
from sqlalchemy.sql import Executable

from agentledger.db.dialect import Dialect, dialect_for
from agentledger.db.fastpath import FastPath, SessionStatements, Statements, StatementSpans
from agentledger.db.repositories.base import Repository
from agentledger.db.repositories.batches import BatchRepository
from agentledger.db.repositories.checkpoints import CheckpointRepository
from agentledger.db.repositories.maintenance import MaintenanceRepository
from agentledger.db.repositories.messages import MessageRepository
from agentledger.db.repositories.partitions import PartitionRepository
from agentledger.db.repositories.scoped_state import ScopedStateRepository
from agentledger.db.repositories.search import SearchRepository
from agentledger.db.repositories.sessions import SessionRepository
from agentledger.db.repositories.tokens import TokenRepository
from agentledger.db.repositories.usage import UsageRepository
from agentledger.errors import LedgerDatabaseError
from agentledger.translation import (
    referenced_error_from,
    server_report,
    sqlstate_of,
)

R = TypeVar("R", bound=Repository)


class UnitOfWorkFactory(Protocol):
    """Makes units of work; ``autocommit=True`` is a hint for single-statement work.

    A factory may honour the hint on backends where one statement is atomic by itself and a
    BEGIN/COMMIT pair costs network round trips (PostgreSQL); it must ignore it otherwise, and
    whenever ``tenant`` is given: the tenant setting lives as long as a transaction, so a
    tenant-scoped unit of work always runs in one (see :mod:`agentledger.schema.row_security`).
    """

    def __call__(self, *, autocommit: bool = False, tenant: str | None = None) -> UnitOfWork: ...


class Route(Protocol):
    """Moves a unit of work of reads to another engine when it starts (the read replica's
    router, :class:`agentledger.db.replica.ReadRouter`)."""

    async def choose(self) -> EngineUnits | None:
        """The units to run on instead (``None``: stay where the unit was made)."""
        ...

    def ticket(self) -> int:
        """Taken when a unit starts on the chosen units, given back to :meth:`ended`."""
        ...

    def ended(self, ticket: int, error: BaseException | None) -> BaseException | None:
        """A unit that ran on the chosen units ended, with ``error`` or without: what to raise
        (``None``: ``error`` itself, or nothing)."""
        ...


class _Transaction:
    """How a unit of work holds its transaction (one of the four below)."""

    #: Whether its statements share one transaction (False: each commits by itself).
    atomic = True

    async def begin(self) -> AsyncSession | None:
        """Start; the session to run on now (``None``: made on first use)."""
        raise NotImplementedError

    def dialect_name(self) -> str:
        raise NotImplementedError

    def new_session(self) -> AsyncSession:
        raise RuntimeError("this unit of work has its session already")

    async def commit(self, session: AsyncSession | None) -> None:
        if session is not None:
            await session.commit()

    async def rollback(self, session: AsyncSession | None) -> None:
        if session is not None:
            await session.rollback()

    async def end(self, session: AsyncSession | None, *, committed: bool) -> None:
        """Release what it holds; closing an owned session rolls back what it did not commit."""
        if session is not None:
            await session.close()


def _maker_dialect(sessions: async_sessionmaker[AsyncSession]) -> str:
    bind = sessions.kw.get("bind")
    assert bind is not None, "the sessionmaker of a unit of work needs bind=engine"
    return str(bind.dialect.name)


class _OwnedTransaction(_Transaction):
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def begin(self) -> AsyncSession | None:
        return self._sessions()

    def dialect_name(self) -> str:
        return _maker_dialect(self._sessions)


class _SingleStatements(_Transaction):
    atomic = False

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def begin(self) -> AsyncSession | None:
        return None  # a hot path that runs through the driver never needs a session

    def new_session(self) -> AsyncSession:
        return self._sessions()

    def dialect_name(self) -> str:
        return _maker_dialect(self._sessions)


class _OneConnection:
    """The statements of a unit of single statements on the fast path: each through the
    driver on a pooled connection of its own, unless the unit's ORM session exists (a
    statement only SQLAlchemy runs made it), which holds a connection until the unit ends;
    they then run on that one. A unit never holds two pooled connections at once: with a
    small pool, tasks each holding one and waiting for a second would wait for each other
    until ``pool_timeout``."""

    def __init__(
        self,
        driver: Statements,
        session: Statements,
        no_session_yet: Callable[[], bool],
    ) -> None:
        self._driver = driver
        self._session = session
        self._no_session_yet = no_session_yet

    async def rows(
        self,
        statement: Executable,
        params: Mapping[str, Any],
        *,
        into: Callable[..., Any] | None = None,
    ) -> Sequence[Any]:
        runner = self._driver if self._no_session_yet() else self._session
        return await runner.rows(statement, params, into=into)

    async def scalar(self, statement: Executable, params: Mapping[str, Any]) -> Any:
        runner = self._driver if self._no_session_yet() else self._session
        return await runner.scalar(statement, params)


class _BorrowedSession(_Transaction):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._savepoint: AsyncSessionTransaction | None = None

    async def begin(self) -> AsyncSession | None:
        # The savepoint would flush the caller's pending changes anyway; flushing first keeps
        # their failure from being mistaken for one of agentledger's.
        try:
            await self._session.flush()
        except SQLAlchemyError as error:
            said = server_report(error).describe() or type(error).__name__
            raise LedgerDatabaseError(
                "your session's pending changes could not be flushed before agentledger's "
                f"savepoint ({said}), so SQLAlchemy rolled your transaction back; nothing of "
                "agentledger's was written. Roll the session back (`await session.rollback()`), "
                "fix those changes and run the whole unit of work again",
                sqlstate=sqlstate_of(error),
            ) from error
        self._savepoint = await self._session.begin_nested()
        return self._session

    def dialect_name(self) -> str:
        return str(self._session.get_bind().dialect.name)

    async def commit(self, session: AsyncSession | None) -> None:
        assert self._savepoint is not None
        await self._savepoint.commit()

    async def rollback(self, session: AsyncSession | None) -> None:
        if self._savepoint is not None and self._savepoint.is_active:
            await self._savepoint.rollback()

    async def end(self, session: AsyncSession | None, *, committed: bool) -> None:
        if not committed:
            await self.rollback(session)
        self._savepoint = None  # the caller's session stays open, in the caller's transaction


class _BorrowedConnection(_Transaction):
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def begin(self) -> AsyncSession | None:
        if not self._connection.in_transaction():
            # A fresh connection: begin the transaction the caller would have autobegun on
            # its next statement. It is the caller's to commit or roll back; given a
            # connection outside any transaction, the session below would otherwise begin,
            # and commit, a transaction of its own.
            await self._connection.begin()
        # Joins the caller's transaction; our commit/rollback only touch a SAVEPOINT.
        return AsyncSession(
            bind=self._connection,
            join_transaction_mode="create_savepoint",
            expire_on_commit=False,
        )

    def dialect_name(self) -> str:
        return str(self._connection.dialect.name)

    async def end(self, session: AsyncSession | None, *, committed: bool) -> None:
        if session is not None:
            if not committed:
                await session.rollback()
            await session.close()


class UnitOfWork:
    """Transaction boundary with the repositories bound to it."""

    #: How this unit of work runs its hot statements (see :mod:`agentledger.db.fastpath`).
    statements: Statements

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession] | None = None,
        *,
        borrow: AsyncSession | AsyncConnection | None = None,
        prepare: Callable[[], Awaitable[None]] | None = None,
        autocommit: bool = False,
        fast_path: FastPath | None = None,
        tenant: str | None = None,
        wrote: Callable[[], None] | None = None,
        route: Route | None = None,
    ) -> None:
        """``autocommit``: single statements that commit by themselves (only with a
        ``session_factory`` on an AUTOCOMMIT engine, and never with ``tenant``); their hot
        statements may take ``fast_path``. ``prepare`` runs before the unit starts (the
        Ledger's schema check). ``wrote`` is called once the unit may have written: after its
        commit, or when single statements (which commit by themselves) end in an error.
        ``route`` may move the unit to another engine's units when it starts (reads)."""
        if (session_factory is None) == (borrow is None):
            raise TypeError("UnitOfWork needs exactly one of session_factory or borrow=")
        if autocommit and (borrow is not None or tenant is not None):
            raise TypeError("a borrowed or tenant-scoped unit of work runs in a transaction")
        self._transaction: _Transaction
        if isinstance(borrow, AsyncSession):
            self._transaction = _BorrowedSession(borrow)
        elif isinstance(borrow, AsyncConnection):
            self._transaction = _BorrowedConnection(borrow)
        elif borrow is not None:
            raise TypeError("borrow= takes an AsyncSession or an AsyncConnection")
        else:
            assert session_factory is not None
            self._transaction = (
                _SingleStatements(session_factory)
                if autocommit
                else _OwnedTransaction(session_factory)
            )
        self._fast_path = fast_path if autocommit else None
        self._autocommit = autocommit
        self._wrote = wrote
        self._route = route
        self._routed = False
        self._ticket = 0
        self._prepare = prepare
        self._tenant = tenant
        self._session: AsyncSession | None = None
        self._committed = False
        self._entered = False

    @property
    def db(self) -> AsyncSession:
        """The ``AsyncSession`` this unit of work runs on (only inside ``async with``)."""
        if not self._entered:
            raise RuntimeError("use the UnitOfWork inside `async with` before touching .db")
        if self._session is None:
            self._session = self._transaction.new_session()
        return self._session

    @property
    def dialect(self) -> Dialect:
        """The per-dialect strategy of this unit's database (see :mod:`agentledger.db.dialect`)."""
        return dialect_for(self._transaction.dialect_name())

    @property
    def borrowed(self) -> bool:
        """Whether this unit runs inside the caller's transaction (``service.using(...)``)."""
        return isinstance(self._transaction, (_BorrowedSession, _BorrowedConnection))

    @property
    def atomic(self) -> bool:
        """Whether this unit's statements share one transaction."""
        return self._transaction.atomic

    async def connection(self) -> AsyncConnection:
        """The connection of this unit's transaction (schema administration runs DDL on it)."""
        return await self.db.connection()

    def savepoint(self) -> AsyncSessionTransaction:
        """A SAVEPOINT inside this unit of work (``async with uow.savepoint(): ...``): a
        failure inside rolls back only what the block did, and the transaction goes on."""
        return self.db.begin_nested()

    async def __aenter__(self) -> Self:
        if self._prepare is not None:
            await self._prepare()
        if self._route is not None:
            units = await self._route.choose()
            self._routed = units is not None
            self._ticket = self._route.ticket()
            if units is not None:
                self._transaction, self._fast_path = units.strategy(
                    autocommit=self._autocommit, tenant=self._tenant
                )
        self._committed = False
        self._session = await self._transaction.begin()
        self._entered = True
        try:
            driver = None if self._fast_path is None else self._fast_path.statements()
            session_statements = SessionStatements(lambda: self.db)
            self.statements = (
                session_statements
                if driver is None
                else _OneConnection(driver, session_statements, lambda: self._session is None)
            )
            self._bind_repositories()
            if self._tenant is not None and self.dialect.tenant_scope is not None:
                await self.db.execute(self.dialect.tenant_scope, {"tenant": self._tenant})
        except BaseException as error:
            # __aexit__ never runs for a failed __aenter__: release what we hold here.
            await self.__aexit__(type(error), error, error.__traceback__)
            raise
        return self

    def _bind_repositories(self) -> None:
        """Repositories are made on first use (a hot path needs one of the six)."""
        self._repositories: dict[type[Repository], Repository] = {}
        dialect = self.dialect
        if self.borrowed:
            # The caller's transaction keeps its own constraint timing: SET CONSTRAINTS would
            # outlive our SAVEPOINT and check the caller's deferred rows early.
            dialect = dialect.with_deferred_constraints_kept()
        self._repository_dialect = dialect

    def _repository(self, kind: type[R]) -> R:
        found = self._repositories.get(kind)
        if found is None:
            db = lambda: self.db  # noqa: E731 - the session is made on first use too
            if kind is MessageRepository:
                found = MessageRepository(
                    db, self._repository_dialect, self.statements, atomic=self.atomic
                )
            else:
                found = kind(db, self._repository_dialect, self.statements)
            self._repositories[kind] = found
        return cast(R, found)

    @property
    def sessions(self) -> SessionRepository:
        return self._repository(SessionRepository)

    @property
    def messages(self) -> MessageRepository:
        return self._repository(MessageRepository)

    @property
    def batches(self) -> BatchRepository:
        return self._repository(BatchRepository)

    @property
    def usage(self) -> UsageRepository:
        return self._repository(UsageRepository)

    @property
    def search(self) -> SearchRepository:
        return self._repository(SearchRepository)

    @property
    def maintenance(self) -> MaintenanceRepository:
        return self._repository(MaintenanceRepository)

    @property
    def checkpoints(self) -> CheckpointRepository:
        return self._repository(CheckpointRepository)

    @property
    def partitions(self) -> PartitionRepository:
        return self._repository(PartitionRepository)

    @property
    def tokens(self) -> TokenRepository:
        return self._repository(TokenRepository)

    @property
    def scoped_state(self) -> ScopedStateRepository:
        return self._repository(ScopedStateRepository)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self._transaction.end(self._session, committed=self._committed)
        finally:
            self._session = None
            self._entered = False
            if exc is not None and self._wrote is not None and not self._transaction.atomic:
                self._wrote()  # a statement before the failure may have committed
        if self._routed and self._route is not None:
            replacement = self._route.ended(self._ticket, exc)
            if replacement is not None:
                raise replacement from exc

    async def commit(self) -> None:
        """Make the work durable (owned) or release the SAVEPOINT into the caller's transaction.
        Statements that ran through the driver (single statements) committed by themselves.

        A foreign key checked only now (``DEFERRABLE INITIALLY DEFERRED``; SQLite cannot be
        told to check one earlier) that refuses a delete raises
        :class:`~agentledger.errors.SessionReferencedError`, as at the delete itself."""
        try:
            await self._transaction.commit(self._session)
        except SQLAlchemyError as error:
            # SQLite keeps the transaction open after a refused COMMIT: end it here, or the
            # connection would go back to the pool inside it.
            with contextlib.suppress(SQLAlchemyError):
                await self._transaction.rollback(self._session)
            referenced = referenced_error_from(error, ())
            if referenced is None:
                raise
            raise referenced from error
        self._committed = True
        if self._wrote is not None:
            self._wrote()

    async def rollback(self) -> None:
        """Discard the work (owned) or roll back to the SAVEPOINT (borrowed)."""
        await self._transaction.rollback(self._session)


class EngineUnits:
    """The unit-of-work factory of one engine (what the Ledger hands its services): owned
    transactions, single statements on PostgreSQL's AUTOCOMMIT (with the fast path), and
    tenant-scoped transactions. Honours ``autocommit`` only where one statement commits by
    itself, and never with a tenant."""

    def __init__(
        self,
        engine: AsyncEngine,
        prepare: Callable[[], Awaitable[None]],
        *,
        statement_spans: StatementSpans | None = None,
        wrote: Callable[[], None] | None = None,
    ) -> None:
        """``statement_spans``: telemetry that may cover the fast path's statements on an
        engine OpenTelemetry's SQLAlchemy instrumentation watches (see FastPath). ``wrote``:
        told about every unit that may have written (see :class:`UnitOfWork`)."""
        self._prepare = prepare
        self._wrote = wrote
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._single = self._sessions
        self._fast_path: FastPath | None = None
        if dialect_for(engine.dialect.name).autocommit_statements:
            self._single = async_sessionmaker(
                engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
            )
            self._fast_path = FastPath.for_engine(engine, statement_spans=statement_spans)
        self._autocommit = self._single is not self._sessions

    @property
    def fast_path(self) -> FastPath | None:
        return self._fast_path

    def __call__(
        self, *, autocommit: bool = False, tenant: str | None = None, route: Route | None = None
    ) -> UnitOfWork:
        """A unit of work on this engine; with ``route``, a unit of reads that ``route`` may
        move to another engine when it starts (it reports no writes)."""
        wrote = None if route is not None else self._wrote
        if autocommit and self._autocommit and tenant is None:
            return UnitOfWork(
                self._single,
                prepare=self._prepare,
                autocommit=True,
                fast_path=self._fast_path,
                wrote=wrote,
                route=route,
            )
        return UnitOfWork(
            self._sessions, prepare=self._prepare, tenant=tenant, wrote=wrote, route=route
        )

    def strategy(
        self, *, autocommit: bool, tenant: str | None
    ) -> tuple[_Transaction, FastPath | None]:
        """How a unit of work made here holds its transaction, and its fast path."""
        if autocommit and self._autocommit and tenant is None:
            return _SingleStatements(self._single), self._fast_path
        return _OwnedTransaction(self._sessions), None
