"""The Ledger: the composition root. Engines -> unit-of-work factories -> services.

``Ledger.from_url()`` / ``Ledger.from_settings()`` create (and later dispose) their own engine;
``Ledger(engine)`` borrows a host's engine and never disposes it. Before the first unit of work
the Ledger checks once that the database is at agentledger's head revision, so a database that
was never migrated fails fast with the fix in the message rather than with a missing table
somewhere in the middle of an agent run (``migrate_on_start=True`` upgrades instead).

Nothing else lives here: engines are made by :mod:`agentledger.db.engine`, units of work by
:class:`agentledger.db.uow.EngineUnits`, schema administration is
:class:`agentledger.schema.admin.SchemaAdmin`, the use cases are the
:class:`~agentledger.services.SessionService`, and SDK sessions come from
:mod:`agentledger.integrations.openai_agents`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, overload

from sqlalchemy import Connection
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agentledger.config import LedgerSettings
from agentledger.db.engine import check_pooled_connections, configure_sqlite, create_engine
from agentledger.db.replica import ReadRouter
from agentledger.db.uow import EngineUnits, UnitOfWork
from agentledger.db.urls import safe_url
from agentledger.errors import ConfigurationError
from agentledger.schema.admin import SchemaAdmin
from agentledger.schema.adopt import AdoptionReport
from agentledger.schema.row_security import RowSecurityStatus
from agentledger.schema.state import SchemaState
from agentledger.services.facade import SessionService
from agentledger.services.telemetry import Telemetry

if TYPE_CHECKING:
    from agents.memory import SessionSettings

    from agentledger.integrations.openai_agents import (
        CompactionPolicy,
        ContextUserSession,
        LedgerSession,
        UserFromContext,
    )

# Kept importable from here (their documented home before agentledger.db.engine).
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
        telemetry: bool | Telemetry | None = None,
    ) -> None:
        """``read_engine`` (optional, e.g. a read replica) serves history reads and listings,
        with read-your-writes (:mod:`agentledger.db.replica`); writes never go there.
        ``owns_engine`` covers both engines. Settings come from ``settings`` only: a Ledger
        on a borrowed engine never reads the environment or a ``.env`` file behind the
        host's back (pass ``settings=LedgerSettings()`` for that). ``telemetry``:
        OpenTelemetry spans and metrics (docs/observability.md): ``True`` on the global
        providers, a :class:`~agentledger.services.telemetry.Telemetry` on its own, ``None``
        as the ``telemetry`` setting says (off by default)."""
        self._engine = engine
        self._read_engine = read_engine
        self._settings = settings if settings is not None else LedgerSettings.model_construct()
        self._owns_engine = owns_engine
        if self._settings.pgbouncer and self._settings.migrate_on_start:
            raise ConfigurationError(
                "migrate_on_start cannot be combined with pgbouncer=True: migrations run on the "
                f"direct URL, not through PgBouncer; {_MIGRATE_DIRECTLY}"
            )
        self._schema = SchemaAdmin(
            engine,
            host_alembic_ini=self._settings.host_alembic_ini,
            migrate_on_start=self._settings.migrate_on_start,
        )
        if read_engine is not None and read_engine.dialect.name != engine.dialect.name:
            raise ConfigurationError(
                f"the read database ({safe_url(read_engine.url)}) is "
                f"{read_engine.dialect.name} and the primary ({safe_url(engine.url)}) "
                f"{engine.dialect.name}: read_url must point at a replica of the primary "
                "database, on the same backend, or be left unset"
            )
        if telemetry is None:
            telemetry = self._settings.telemetry
        tracing = Telemetry() if telemetry is True else telemetry or None
        primary = None if tracing is None else tracing.on(engine.url)
        self._router = (
            None
            if read_engine is None
            else ReadRouter(
                engine,
                read_engine,
                prepare=self._schema.ensure,
                schema_head=self._revisions,
                retry_after=self._settings.read_retry_after,
                primary_spans=primary,
                replica_spans=None if tracing is None else tracing.on(read_engine.url),
            )
        )
        self._units = (
            EngineUnits(engine, self._schema.ensure, statement_spans=primary)
            if self._router is None
            else self._router.primary_units
        )
        self._service = SessionService(
            self.unit_of_work,
            read_uow_factory=None if read_engine is None else self.read_unit_of_work,
            schema_check=self._schema.ensure,
            telemetry=primary,
        )

    async def _revisions(self, engine: AsyncEngine) -> tuple[str, tuple[str, ...]]:
        """agentledger's head revision and the revisions applied on ``engine``."""
        state = await self._schema.state(engine)
        return state.head, state.current

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_url(
        cls,
        url: str | URL,
        *,
        read_url: str | URL | None = None,
        telemetry: bool | Telemetry | None = None,
        pgbouncer: bool | None = None,
        **engine_kwargs: Any,
    ) -> Ledger:
        """A Ledger on a new engine for ``url`` (``postgresql://`` runs on asyncpg).

        ``read_url`` adds a second engine for history reads and listings (a read replica);
        only the argument counts here, not ``AGENTLEDGER_READ_URL`` (that is
        :meth:`from_settings`). ``engine_kwargs`` apply to both engines. ``telemetry``: see
        :class:`Ledger` (``None``: the ``AGENTLEDGER_TELEMETRY`` setting).

        ``pgbouncer=True``: the URLs point at PgBouncer in transaction mode (or another
        transaction pooler); the driver then never relies on a statement prepared on another
        server connection, and migrations are refused (run them on the direct URL). Unset,
        ``AGENTLEDGER_PGBOUNCER`` decides (see docs/operations.md).
        """
        primary = _url_text(url)
        assert primary is not None
        given: dict[str, Any] = {} if pgbouncer is None else {"pgbouncer": pgbouncer}
        settings = LedgerSettings(database_url=primary, read_url=_url_text(read_url), **given)
        return cls._create(settings, engine_kwargs, telemetry)

    @classmethod
    def from_settings(cls, settings: LedgerSettings | None = None) -> Ledger:
        """A Ledger configured by :class:`LedgerSettings` (the environment by default)."""
        return cls._create(settings or LedgerSettings(), {})

    @classmethod
    def _create(
        cls,
        settings: LedgerSettings,
        engine_kwargs: dict[str, Any],
        telemetry: bool | Telemetry | None = None,
    ) -> Ledger:
        def engine_for(url: URL, kwargs: dict[str, Any]) -> AsyncEngine:
            return create_engine(
                url,
                kwargs,
                defaults=settings.engine_kwargs(url),
                sqlite_busy_timeout=settings.sqlite_busy_timeout,
                pgbouncer=settings.pgbouncer,
            )

        read_url = settings.read_engine_url
        return cls(
            engine_for(settings.url, engine_kwargs),
            settings=settings,
            owns_engine=True,
            read_engine=(
                None
                if read_url is None
                else engine_for(read_url, _bounded_connect(read_url, engine_kwargs))
            ),
            telemetry=telemetry,
        )

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
        """The service to use on behalf of ``user_id`` (SDK sessions, SessionAgent): scoped to
        that tenant (:meth:`SessionService.for_user`) when ``row_level_security`` is set, else
        the shared one, which keeps the single-round-trip hot paths. ``None``: the shared
        one."""
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
        return self._units(autocommit=autocommit, tenant=tenant)

    def read_unit_of_work(
        self, *, autocommit: bool = False, tenant: str | None = None
    ) -> UnitOfWork:
        """A unit of work for reads only: on the read engine when it has every write this
        ledger committed, else on the primary (see :mod:`agentledger.db.replica`)."""
        return self._units(autocommit=autocommit, tenant=tenant, route=self._router)

    @overload
    def agent_session(
        self,
        session_id: str,
        *,
        user_id: str | None = None,
        agent_name: str | None = None,
        settings: SessionSettings | None = None,
        user_from_context: None = None,
        compaction: CompactionPolicy | None = None,
    ) -> LedgerSession: ...

    @overload
    def agent_session(
        self,
        session_id: str,
        *,
        user_id: str | None = None,
        agent_name: str | None = None,
        settings: SessionSettings | None = None,
        user_from_context: UserFromContext,
        compaction: CompactionPolicy | None = None,
    ) -> ContextUserSession: ...

    def agent_session(
        self,
        session_id: str,
        *,
        user_id: str | None = None,
        agent_name: str | None = None,
        settings: SessionSettings | None = None,
        user_from_context: UserFromContext | None = None,
        compaction: CompactionPolicy | None = None,
    ) -> LedgerSession | ContextUserSession:
        """An OpenAI Agents SDK session (``Runner.run(..., session=...)``) over this ledger.

        ``user_from_context`` (e.g. ``lambda run: run.context.user_id``) takes the owner from
        each run's context instead, for one session object shared by many users; ``user_id``
        is then the user of calls made outside a run (none: such calls raise TypeError).
        ``compaction``: compact the context the model receives under that policy (see
        :class:`~agentledger.integrations.openai_agents.CompactionPolicy`)."""
        from agentledger.integrations.openai_agents import ContextUserSession, LedgerSession

        if user_from_context is not None:
            return ContextUserSession(
                session_id,
                stores=self,
                user_from_context=user_from_context,
                agent_name=agent_name or self._settings.default_agent_name,
                user_id=user_id if user_id is not None else self._settings.default_user_id,
                settings=settings,
                compaction=compaction,
            )
        user_id = self.owner(user_id)
        return LedgerSession(
            session_id,
            service=self.service_for(user_id),
            user_id=user_id,
            agent_name=agent_name or self._settings.default_agent_name,
            settings=settings,
            compaction=compaction,
        )

    # -- schema (see agentledger.schema.admin) -------------------------------------------

    async def upgrade(
        self, revision: str = "head", *, connection: AsyncConnection | Connection | None = None
    ) -> None:
        """Run agentledger's Alembic revisions up to ``revision``; a no-op when already there.

        With ``connection`` (a host's deploy step or env.py) it runs inside the caller's
        transaction and leaves committing to the caller. Refused on a ``pgbouncer=True``
        ledger without ``connection``: migrations run on the direct URL.
        """
        self._refuse_migrations_through_pooler(connection)
        await self._schema.upgrade(revision, connection)

    async def downgrade(
        self, revision: str, *, connection: AsyncConnection | Connection | None = None
    ) -> None:
        """Run agentledger's Alembic revisions down to ``revision`` (``"base"`` drops all)."""
        self._refuse_migrations_through_pooler(connection)
        await self._schema.downgrade(revision, connection)

    async def adopt(
        self, *, on_progress: Callable[[int, int], None] | None = None
    ) -> AdoptionReport:
        """Upgrade a database on the seed's schema in place, then to head (see
        :mod:`agentledger.schema.adopt`); a refusal or a failure leaves it as it was."""
        self._refuse_migrations_through_pooler(None)
        return await self._schema.adopt(on_progress)

    def _refuse_migrations_through_pooler(
        self, connection: AsyncConnection | Connection | None
    ) -> None:
        """Schema changes never run through a transaction pooler: their locks and a long DDL
        transaction would hold one of its few server connections, and a migration lock
        held for a session (advisory locks) does not survive its transaction there. A
        caller's own ``connection`` is the caller's choice."""
        if self._settings.pgbouncer and connection is None:
            raise ConfigurationError(
                "this Ledger runs through PgBouncer (pgbouncer=True / AGENTLEDGER_PGBOUNCER), "
                f"and migrations do not: {_MIGRATE_DIRECTLY}"
            )

    async def set_row_level_security(self, enabled: bool) -> RowSecurityStatus:
        """Switch PostgreSQL row-level security on (or off) for every agentledger table.

        The policies come with revision ``agentledger_0003``; this is the opt-in that makes
        them bind. It needs the tables' owner (the role that runs migrations), and binds only
        roles that are neither the owner, a superuser nor BYPASSRLS: see the returned
        status's ``exempt_because`` and ``docs/security.md``.
        """
        return await self._schema.switch_row_level_security(enabled)

    async def row_level_security(self) -> RowSecurityStatus:
        """Whether row-level security is on for each table, and whether it binds this role."""
        return await self._schema.row_level_security()

    async def current_revisions(self) -> tuple[str, ...]:
        """agentledger revisions applied to the database (empty when never migrated)."""
        return (await self._schema.state()).current

    async def schema_state(self) -> SchemaState:
        """Which agentledger revision the database is at, how that is known, and what to run
        to reach head (see :class:`agentledger.schema.SchemaState`)."""
        return await self._schema.state()

    async def ensure_schema(self) -> None:
        """Fail fast unless the database is at agentledger's head (checked once per Ledger).

        Call it at application startup to fail there, with the fix in the message, rather than
        at the first request."""
        await self._schema.ensure()

    # -- lifetime -----------------------------------------------------------------------

    async def dispose(self) -> None:
        """Close the pool, if this ledger created the engine (a borrowed one is left alone)."""
        if self._router is not None:
            self._router.close()
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


#: Seconds a read waits to connect to the read replica before it falls back to the primary
#: (unless read_url's ``connect_timeout`` or ``connect_args`` say otherwise).
READ_CONNECT_TIMEOUT = 5.0


def _bounded_connect(url: URL, engine_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``engine_kwargs`` for the read engine: a replica that hangs (rather than refusing)
    would hold a read for asyncpg's default connect timeout (60 s) before it falls back to
    the primary, so connecting gives up after :data:`READ_CONNECT_TIMEOUT` unless the URL or
    ``connect_args`` say otherwise."""
    connect_args = dict(engine_kwargs.get("connect_args") or {})
    if url.get_backend_name() != "postgresql" or (
        {"timeout", "connect_timeout"} & (set(url.query) | set(connect_args))
    ):
        return engine_kwargs
    return {**engine_kwargs, "connect_args": {**connect_args, "timeout": READ_CONNECT_TIMEOUT}}


_MIGRATE_DIRECTLY = (
    "run them on the database's direct URL (PostgreSQL's own host and port), e.g. "
    "`AGENTLEDGER_PGBOUNCER=false agentledger --database-url "
    "postgresql://USER@DB-HOST:5432/DBNAME db upgrade` (or `db downgrade REV`, `db adopt`), "
    "or `await Ledger.from_url(direct_url, pgbouncer=False).upgrade()` "
    "(see docs/operations.md)"
)


def _url_text(url: str | URL | None) -> str | None:
    if url is None or isinstance(url, str):
        return url
    return url.render_as_string(hide_password=False)
