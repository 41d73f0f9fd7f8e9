"""Alembic environment for agentledger's own revisions.

Runs on a connection handed over in ``config.attributes["connection"]`` (``ledger.upgrade()``, the
CLI, or a host's deploy step); otherwise it makes an engine from ``sqlalchemy.url`` or the
agentledger settings (``AGENTLEDGER_DATABASE_URL`` / ``DATABASE_URL``) and disposes only that one.
It never calls ``fileConfig``: the host's logging stays as the host set it.

On PostgreSQL every online run first takes agentledger's migration lock (a transaction-level
advisory lock, :func:`agentledger.schema.migration_lock`), so that two deploys migrating at
once run one after the other; the second finds the database at head. Offline (``--sql``) the
script is printed and nothing connects.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from agentledger.config import LedgerSettings
from agentledger.db.engine import create_engine, migration_connection
from agentledger.db.models import metadata
from agentledger.schema.alembic import (
    LOCK_TIMEOUT_ATTRIBUTE,
    MIGRATION_LOCK_TIMEOUT,
    VERSION_TABLE,
    include_object,
    migration_lock,
    offline_lock_statement,
)

config = context.config


def _url() -> str:
    configured = config.get_main_option("sqlalchemy.url")
    return configured or LedgerSettings().database_url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
    )


def _run(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        # Before Alembic reads the version table: a deploy that waited here sees the
        # revisions the one before it committed.
        migration_lock(
            connection, config.attributes.get(LOCK_TIMEOUT_ATTRIBUTE, MIGRATION_LOCK_TIMEOUT)
        )
        context.run_migrations()


async def _run_with_own_engine() -> None:
    # Made like every engine of agentledger's; on SQLite that lets SQLAlchemy own the
    # transaction, so a failed upgrade leaves nothing half-built.
    # On SQLite its foreign keys are off while tables are rebuilt (see migration_connection).
    engine = create_engine(_url())
    try:
        async with migration_connection(engine) as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def run_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_object=include_object,
        literal_binds=True,
    )
    with context.begin_transaction():
        # The script applied by hand takes the same lock as `agentledger db upgrade`, so it
        # never runs alongside a deploy's migration (it waits for it instead).
        context.execute(offline_lock_statement())
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_with_own_engine())


if context.is_offline_mode():
    run_offline()
else:
    run_online()
