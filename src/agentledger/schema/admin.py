"""Schema administration for a Ledger: migrate, adopt, check, switch row-level security.

Every step runs through a unit of work on a connection of the Ledger's engine
(:func:`agentledger.db.engine.migration_connection`, which on SQLite keeps foreign keys off
while tables are rebuilt), or inside the caller's transaction when a host hands one over.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agentledger.db.engine import migration_connection
from agentledger.db.uow import UnitOfWork
from agentledger.db.urls import safe_url
from agentledger.errors import (
    LedgerError,
    SchemaNotReadyError,
)
from agentledger.schema import alembic, row_security
from agentledger.schema.adopt import ADOPTED_REVISION, AdoptionReport, adopt_seed_schema
from agentledger.schema.row_security import RowSecurityStatus
from agentledger.schema.state import SchemaState, schema_state
from agentledger.translation import translated

T = TypeVar("T")


class SchemaAdmin:
    """The schema of one Ledger's database (its read replica's is checked by the read router,
    :mod:`agentledger.db.replica`, at its first use)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        host_alembic_ini: str | None = None,
        migrate_on_start: bool = False,
    ) -> None:
        self._engine = engine
        self._host_alembic_ini = host_alembic_ini
        self._migrate_on_start = migrate_on_start
        self._ready = False
        #: One lock per event loop: an asyncio lock used from two loops (threads each running
        #: asyncio.run) can hang its waiters, and the check is safe to run once per loop.
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._first_check = threading.Lock()

    # -- running steps --------------------------------------------------------------------------

    @asynccontextmanager
    async def _unit(self) -> AsyncIterator[tuple[UnitOfWork, Connection]]:
        """A unit of work over a migration connection, and its sync connection for Alembic."""
        async with migration_connection(self._engine) as connection:
            await connection.begin()
            async with UnitOfWork(borrow=connection) as uow:
                sync = (await uow.connection()).sync_connection
                assert sync is not None
                yield uow, sync
                await uow.commit()
            await connection.commit()

    async def run(
        self,
        step: Callable[..., T],
        *args: Any,
        connection: AsyncConnection | Connection | None = None,
    ) -> T:
        """Run ``step(sync_connection, *args)`` in its own unit of work, or on the caller's
        ``connection`` (inside the caller's transaction, which the caller commits)."""
        try:
            with translated():
                if isinstance(connection, AsyncConnection):
                    return await connection.run_sync(step, *args)
                if isinstance(connection, Connection):
                    return step(connection, *args)
                async with self._unit() as (uow, sync):
                    return await uow.db.run_sync(lambda _session: step(sync, *args))
        except (CommandError, RevisionError) as error:
            # Alembic's own refusals (an unknown revision, ...) name what is wrong.
            raise LedgerError(f"migrating failed: {error}") from error

    async def _own_history(self) -> None:
        """Refuse agentledger's own history commands where its revisions run in the host's,
        or where a newer agentledger migrated the database (its revisions are not here)."""
        state = await self.state()
        if state.unknown:
            raise SchemaNotReadyError(f"cannot migrate this database: {state.advice()}")
        if state.in_host_history:
            raise SchemaNotReadyError(
                "agentledger's revisions run in your application's Alembic history here, so "
                f"agentledger's own commands must not migrate this database; {state.advice()}"
            )

    # -- what a Ledger exposes ------------------------------------------------------------------

    async def upgrade(self, revision: str, connection: AsyncConnection | Connection | None) -> None:
        if connection is None:
            await self._own_history()
        await self.run(alembic.upgrade, revision, connection=connection)
        self._ready = False

    async def downgrade(
        self, revision: str, connection: AsyncConnection | Connection | None
    ) -> None:
        if connection is None:
            await self._own_history()

        def step(sync: Connection, target: str) -> None:
            alembic.refuse_dropping_referenced_tables(sync, target)
            alembic.downgrade(sync, target)

        await self.run(step, revision, connection=connection)
        self._ready = False

    async def adopt(self, on_progress: Callable[[int, int], None] | None) -> AdoptionReport:
        """Upgrade a database on the seed's schema in place, then to head; the conversion and
        its stamp run in one transaction: a refusal or a failure leaves it as it was."""

        def convert(connection: Connection) -> AdoptionReport:
            report = adopt_seed_schema(connection, on_progress=on_progress)
            alembic.stamp(connection, ADOPTED_REVISION)
            return report

        report = await self.run(convert)
        await self.upgrade("head", None)
        return report

    async def state(self, engine: AsyncEngine | None = None) -> SchemaState:
        with translated():
            async with (engine or self._engine).connect() as connection:
                return await connection.run_sync(schema_state, self._host_alembic_ini)

    async def switch_row_level_security(self, enabled: bool) -> RowSecurityStatus:
        await self.ensure()

        def switch(connection: Connection) -> RowSecurityStatus:
            row_security.switch(connection, enabled)
            return row_security.status(connection)

        return await self.run(switch)

    async def row_level_security(self) -> RowSecurityStatus:
        await self.ensure()
        return await self.run(row_security.status)

    async def ensure(self) -> None:
        """Fail fast unless the database is at agentledger's head (checked once)."""
        if self._ready:
            return
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop) or self._locks.setdefault(loop, asyncio.Lock())
        async with lock:
            if self._ready:
                return
            # The first check across event loops (threads) runs one at a time: it makes the
            # engine's first connection, which SQLAlchemy guards with a lock of the first loop
            # that waits on it (another loop's waiter would never wake). A thread waits here
            # only until the first check is done; the per-loop lock above keeps tasks of one
            # loop from waiting on this one.
            with self._first_check:
                if self._ready:
                    return
                await self._check()

    async def _check(self) -> None:
        """The "at head" check (after the upgrade ``migrate_on_start`` asks for)."""
        if self._migrate_on_start:
            await self.upgrade("head", None)
        state = await self.state()
        if not state.at_head:
            found = ", ".join(state.current) if state.current else "no agentledger tables"
            raise SchemaNotReadyError(
                f"the database at {safe_url(self._engine.url)} is not at agentledger's "
                f"schema revision {state.head} (found: {found}); {state.advice()}"
            )
        if self._engine.dialect.name == "sqlite":
            await self._check_sqlite_foreign_keys()
        self._ready = True

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
