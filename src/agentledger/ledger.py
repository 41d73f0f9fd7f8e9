"""The Ledger: the engine agentledger runs on, and everything handed out from it.

``Ledger.from_url()`` / ``Ledger.from_settings()`` create (and later dispose) their own engine;
``Ledger(engine)`` borrows a host's engine and never disposes it. Before the first unit of work
the Ledger checks once that the database is at agentledger's head revision, so a database that
was never migrated fails fast with the fix in the message rather than with a missing table
somewhere in the middle of an agent run (``migrate_on_start=True`` upgrades instead).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import Connection
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
)

from . import row_security, schema
from .adopt import ADOPTED_REVISION, AdoptionReport, adopt_seed_schema
from .config import LedgerSettings, safe_url
from .engine import check_pooled_connections, configure_sqlite, create_engine
from .errors import LedgerError, SchemaNotReadyError, translate_db_error, translated
from .fastpath import DriverStatements
from .row_security import RowSecurityStatus
from .service import SessionService
from .uow import UnitOfWork

if TYPE_CHECKING:
    from agents.memory import SessionSettings

    from .integrations.openai_agents import LedgerSession

logger = logging.getLogger("agentledger")

# Kept importable from here (their documented home before agentledger.engine).
__all__ = ["Ledger", "check_pooled_connections", "configure_sqlite"]


class Ledger:
    """Owns (or borrows) an ``AsyncEngine`` and hands out the service, units of work and SDK
    sessions that run on it."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        settings: LedgerSettings | None = None,
        owns_engine: bool = False,
        read_engine: AsyncEngine | None = None,
    ) -> None:
        """``read_engine`` (optional, e.g. a read replica) serves history reads and listings;
        writes never go there. ``owns_engine`` covers both engines."""
        self._engine = engine
        self._settings = settings or LedgerSettings(database_url=DEFAULT_URL_FOR_BORROWED)
        self._owns_engine = owns_engine
        self._makers = _EngineMakers(engine)
        self._read_engine = read_engine
        self._read_makers = None if read_engine is None else _EngineMakers(read_engine)
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()
        self._service = SessionService(
            self.unit_of_work,
            read_uow_factory=None if read_engine is None else self.read_unit_of_work,
        )

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_url(
        cls, url: str | URL, *, read_url: str | URL | None = None, **engine_kwargs: Any
    ) -> Ledger:
        """A Ledger on a new engine for ``url`` (``postgresql://`` runs on asyncpg).

        ``read_url`` adds a second engine for history reads and listings (a read replica);
        only the argument counts here, not ``AGENTLEDGER_READ_URL`` (that is
        :meth:`from_settings`). ``engine_kwargs`` apply to both engines.
        """
        primary = url if isinstance(url, str) else _url_text(url)
        assert primary is not None
        settings = LedgerSettings(database_url=primary, read_url=_url_text(read_url))
        return cls._create(settings, engine_kwargs)

    @classmethod
    def from_settings(cls, settings: LedgerSettings | None = None) -> Ledger:
        """A Ledger configured by :class:`LedgerSettings` (the environment by default)."""
        return cls._create(settings or LedgerSettings(), {})

    @classmethod
    def _create(cls, settings: LedgerSettings, engine_kwargs: dict[str, Any]) -> Ledger:
        engine = create_engine(settings.url, settings, engine_kwargs)
        read_url = settings.read_engine_url
        read_engine = None if read_url is None else create_engine(read_url, settings, engine_kwargs)
        return cls(engine, settings=settings, owns_engine=True, read_engine=read_engine)

    # -- what it hands out --------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def read_engine(self) -> AsyncEngine:
        """The engine history reads and listings run on (``engine`` when no read_url)."""
        return self._engine if self._read_engine is None else self._read_engine

    @property
    def settings(self) -> LedgerSettings:
        return self._settings

    @property
    def service(self) -> SessionService:
        """The :class:`SessionService` on this ledger's engine."""
        return self._service

    def service_for(self, user_id: str | None) -> SessionService:
        """The service to use on behalf of ``user_id`` (SDK sessions, SessionAgent, the CLI's
        ``--user``): scoped to that tenant (:meth:`SessionService.for_user`) when
        ``row_level_security`` is set, else the shared one, which keeps the single-round-trip
        hot paths. ``None``: the shared one."""
        if user_id is not None and self._settings.row_level_security:
            return self._service.for_user(user_id)
        return self._service

    def owner(self, user_id: str | None) -> str:
        """The owner of a session opened on someone's behalf: ``user_id``, else the
        ``default_user_id`` setting when the application set one (a single-user application);
        never a silent default that would file every session under one shared user."""
        if user_id is not None:
            return user_id
        if self._settings.default_user_id is not None:
            return self._settings.default_user_id
        raise TypeError(
            "pass user_id=... (the user who owns the session): sessions are never filed under "
            "a shared default user; a single-user application may set "
            "AGENTLEDGER_DEFAULT_USER_ID instead"
        )

    def unit_of_work(self, *, autocommit: bool = False, tenant: str | None = None) -> UnitOfWork:
        """A new unit of work on this ledger's engine (see :class:`UnitOfWork`)."""
        return self._makers.unit_of_work(autocommit, self.ensure_schema, tenant)

    def read_unit_of_work(
        self, *, autocommit: bool = False, tenant: str | None = None
    ) -> UnitOfWork:
        """A unit of work on the read engine (the primary's when there is none): only for
        reads, which may lag behind the primary's latest commits."""
        makers = self._makers if self._read_makers is None else self._read_makers
        return makers.unit_of_work(autocommit, self.ensure_schema, tenant)

    def agent_session(
        self,
        session_id: str,
        *,
        user_id: str | None = None,
        agent_name: str | None = None,
        settings: SessionSettings | None = None,
    ) -> LedgerSession:
        """An OpenAI Agents SDK session (``Runner.run(..., session=...)``) over this ledger."""
        from .integrations.openai_agents import LedgerSession

        user_id = self.owner(user_id)
        return LedgerSession(
            session_id,
            service=self.service_for(user_id),
            user_id=user_id,
            agent_name=agent_name or self._settings.default_agent_name,
            settings=settings,
        )

    # -- schema -------------------------------------------------------------------------

    async def upgrade(
        self, revision: str = "head", *, connection: AsyncConnection | Connection | None = None
    ) -> None:
        """Run agentledger's Alembic revisions up to ``revision``; a no-op when already there.

        With ``connection`` (a host's deploy step or env.py) it runs inside the caller's
        transaction and leaves committing to the caller.
        """
        await self._migrate(schema.upgrade, revision, connection)
        self._schema_ready = False

    async def downgrade(
        self, revision: str, *, connection: AsyncConnection | Connection | None = None
    ) -> None:
        """Run agentledger's Alembic revisions down to ``revision`` (``"base"`` drops all)."""
        await self._migrate(schema.downgrade, revision, connection)
        self._schema_ready = False

    async def adopt(
        self, *, on_progress: Callable[[int, int], None] | None = None
    ) -> AdoptionReport:
        """Upgrade a database on the seed's schema in place, then to head (see :mod:`.adopt`).

        The seed-to-revision-1 conversion and its stamp run in one transaction: a refusal or a
        failure leaves the database exactly as it was.
        """

        def convert(connection: Connection) -> AdoptionReport:
            report = adopt_seed_schema(connection, on_progress=on_progress)
            schema.stamp(connection, ADOPTED_REVISION)
            return report

        try:
            async with self._engine.begin() as connection:
                report = await connection.run_sync(convert)
        except LedgerError:
            raise
        except Exception as error:
            raise _migration_error(error, ADOPTED_REVISION) from error
        await self.upgrade()
        return report

    async def set_row_level_security(self, enabled: bool) -> RowSecurityStatus:
        """Switch PostgreSQL row-level security on (or off) for every agentledger table.

        The policies come with revision ``agentledger_0003``; this is the opt-in that makes
        them bind. It needs the tables' owner (the role that runs migrations), and binds only
        roles that are neither the owner, a superuser nor BYPASSRLS: see the returned
        status's ``exempt_because`` and ``docs/security.md``.
        """
        await self.ensure_schema()
        with translated():
            async with self._engine.begin() as connection:
                await connection.run_sync(row_security.switch, enabled)
                return await connection.run_sync(row_security.status)

    async def row_level_security(self) -> RowSecurityStatus:
        """Whether row-level security is on for each table, and whether it binds this role."""
        await self.ensure_schema()
        with translated():
            async with self._engine.connect() as connection:
                return await connection.run_sync(row_security.status)

    async def current_revisions(self) -> tuple[str, ...]:
        """agentledger revisions applied to the database (empty when never migrated)."""
        return (await self.schema_state()).current

    async def schema_state(self) -> schema.SchemaState:
        """Which agentledger revision the database is at, how that is known, and what to run
        to reach head (see :class:`agentledger.schema.SchemaState`)."""
        return await self._schema_state(self._engine)

    async def _schema_state(self, engine: AsyncEngine) -> schema.SchemaState:
        with translated():
            async with engine.connect() as connection:
                return await connection.run_sync(
                    schema.schema_state, self._settings.host_alembic_ini
                )

    async def ensure_schema(self) -> None:
        """Fail fast unless the database is at agentledger's head (checked once per Ledger).

        Call it at application startup to fail there, with the fix in the message, rather than
        at the first request."""
        if self._schema_ready:
            return
        async with self._schema_lock:
            if self._schema_ready:
                return
            if self._settings.migrate_on_start:
                await self.upgrade()
            state = await self.schema_state()
            if not state.at_head:
                found = ", ".join(state.current) if state.current else "no agentledger tables"
                raise SchemaNotReadyError(
                    f"the database at {safe_url(self._engine.url)} is not at agentledger's "
                    f"schema revision {state.head} (found: {found}); {state.advice()}"
                )
            if self._read_engine is not None:
                await self._check_read_engine(state.head)
            if self._engine.dialect.name == "sqlite":
                await self._check_sqlite_foreign_keys()
            self._schema_ready = True

    async def _check_read_engine(self, head: str) -> None:
        """The read engine must serve the same schema (a replica of the primary does)."""
        assert self._read_engine is not None
        current = (await self._schema_state(self._read_engine)).current
        if head not in current:
            state = ", ".join(current) if current else "no agentledger tables"
            raise SchemaNotReadyError(
                f"the read database at {safe_url(self._read_engine.url)} is not at agentledger's "
                f"schema revision {head} (found: {state}); read_url must point at a replica of "
                "the primary database (which follows its migrations), or be left unset"
            )

    async def _check_sqlite_foreign_keys(self) -> None:
        """Cascading deletes need SQLite's foreign keys, which are off unless switched on."""
        async with self._engine.connect() as connection:
            enabled = (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar()
        if not enabled:
            raise LedgerError(
                "this SQLite engine runs with foreign keys off, so deleting a session would "
                "leave its messages behind; call agentledger.configure_sqlite(engine) right "
                "after creating it (or use Ledger.from_url)"
            )

    async def _migrate(
        self,
        step: Any,
        revision: str,
        connection: AsyncConnection | Connection | None,
    ) -> None:
        try:
            if isinstance(connection, AsyncConnection):
                await connection.run_sync(step, revision)
            elif isinstance(connection, Connection):
                step(connection, revision)
            else:
                async with self._engine.begin() as own:
                    await own.run_sync(step, revision)
        except LedgerError:
            raise
        except Exception as error:
            raise _migration_error(error, revision) from error

    # -- lifetime -----------------------------------------------------------------------

    async def dispose(self) -> None:
        """Close the pool, if this ledger created the engine (a borrowed one is left alone)."""
        if self._owns_engine:
            await self._engine.dispose()
            if self._read_engine is not None:
                await self._read_engine.dispose()

    async def __aenter__(self) -> Self:
        if self._settings.migrate_on_start:
            await self.ensure_schema()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.dispose()

    def __repr__(self) -> str:
        if self._read_engine is None:
            return f"Ledger({safe_url(self._engine.url)!r})"
        return f"Ledger({safe_url(self._engine.url)!r}, read={safe_url(self._read_engine.url)!r})"


def _url_text(url: str | URL | None) -> str | None:
    if url is None or isinstance(url, str):
        return url
    return url.render_as_string(hide_password=False)


class _EngineMakers:
    """What units of work on one engine are made from."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.autocommit_sessions = self.sessions
        if engine.dialect.name == "postgresql":
            # One statement is atomic by itself: skip the BEGIN/COMMIT round trips.
            self.autocommit_sessions = async_sessionmaker(
                engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
            )
        # The agent loop's statements skip SQLAlchemy's execution layer on asyncpg.
        self.driver = DriverStatements.for_engine(engine)

    def unit_of_work(
        self, autocommit: bool, prepare: Callable[[], Awaitable[None]], tenant: str | None
    ) -> UnitOfWork:
        if tenant is not None:
            # The tenant setting lasts one transaction: no autocommit, no driver shortcut.
            return UnitOfWork(self.sessions, prepare=prepare, tenant=tenant)
        if autocommit:
            return UnitOfWork(self.autocommit_sessions, prepare=prepare, driver=self.driver)
        return UnitOfWork(self.sessions, prepare=prepare)


#: Settings of a Ledger built on a borrowed engine: defaults only, the URL is the engine's.
DEFAULT_URL_FOR_BORROWED = "sqlite+aiosqlite://"


def _migration_error(error: Exception, revision: str) -> LedgerError:
    """A database error keeps its typed translation; anything else (Alembic's own errors, such
    as an unknown revision) is reported with its text, which names the revision at fault."""
    if isinstance(error, SQLAlchemyError):
        return translate_db_error(error)
    return LedgerError(f"migrating to {revision!r} failed: {error}")
