"""Alembic plumbing: where the revisions live, and running them on a connection.

The revisions ship inside the wheel (``agentledger/migrations``) and keep their own version table,
:data:`VERSION_TABLE`, so a host application's ``alembic_version`` is never touched. Hosts that
fold agentledger's revisions into their own history (``version_locations``) find them on the
``agentledger`` branch; :func:`host_include_object` keeps a host's autogenerate away from
agentledger's tables. There a host revision that ``depends_on`` one of agentledger's takes its
place in ``alembic_version``, so :func:`current_revisions` walks the host's history (given its
``alembic.ini``) to see which of agentledger's revisions are applied.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic import context as alembic_context
from alembic import op as alembic_op
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError

from agentledger.db.models import OWNED_TABLES
from agentledger.db.urls import normalize_url
from agentledger.errors import (
    ConfigurationError,
    InvalidInputError,
    LedgerError,
    LedgerTimeoutError,
    SchemaNotReadyError,
    UnsupportedBackendError,
)
from agentledger.translation import sqlstate_of

#: agentledger's own Alembic version table.
VERSION_TABLE = "agentledger_alembic_version"
#: Branch label of agentledger's history inside a host's Alembic history.
BRANCH_LABEL = "agentledger"
#: The table a host's Alembic uses when agentledger's versions are in its version_locations.
HOST_VERSION_TABLE = "alembic_version"

#: The PostgreSQL advisory lock every migration of agentledger's takes, in two int4 keys
#: (``pg_locks`` shows them as ``classid`` and ``objid``, with ``objsubid`` 2): "aglg", 1.
MIGRATION_LOCK_KEYS = (0x61676C67, 1)
#: How long a migration waits for another one to finish (seconds) before it gives up.
MIGRATION_LOCK_TIMEOUT = 600.0
#: config.attributes key through which env.py learns how long to wait for the lock.
LOCK_TIMEOUT_ATTRIBUTE = "agentledger_migration_lock_timeout"
#: SQLSTATE lock_not_available: ``lock_timeout`` expired.
_LOCK_NOT_AVAILABLE = "55P03"


def migrations_path() -> str:
    """Filesystem path of the shipped ``migrations`` folder (for a host's version_locations)."""
    return str(resources.files("agentledger") / "migrations")


def versions_path() -> str:
    """Filesystem path of the shipped revision files."""
    return str(resources.files("agentledger") / "migrations" / "versions")


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` pointing at the shipped revisions (no ini file needed)."""
    config = Config()
    config.set_main_option("script_location", migrations_path())
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The single head of agentledger's history."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:  # pragma: no cover - guarded by the test suite
        raise RuntimeError(f"agentledger's migrations must have one head, found {heads}")
    return heads[0]


@contextmanager
def _beside_the_callers_alembic() -> Iterator[None]:
    """Run an Alembic command of ours without disturbing one of the caller's that is under
    way: a host's ``env.py`` may call :func:`upgrade` (or ``Ledger.upgrade(connection=...)``)
    before configuring its own migrations. Alembic keeps the running environment and
    operations in module-level proxies (``alembic.context``, ``alembic.op``), and a finished
    command clears them, so the host's ``context.configure`` would then fail
    (``'NoneType' object has no attribute 'configure'``). The caller's proxies are put back."""
    saved = [(proxy, getattr(proxy, "_proxy", None)) for proxy in (alembic_context, alembic_op)]
    try:
        yield
    finally:
        for _module, previous in saved:
            if previous is not None:
                previous._install_proxy()


def offline_lock_statement() -> str:
    """The migration lock as a statement of an offline (``--sql``) script: waits for a
    migration under way, with no time limit (``psql`` users set ``lock_timeout`` themselves)."""
    classid, objid = MIGRATION_LOCK_KEYS
    return f"SELECT pg_advisory_xact_lock({classid}, {objid})"


def migration_lock(connection: Connection, timeout: float | None = MIGRATION_LOCK_TIMEOUT) -> None:
    """On PostgreSQL, wait until no other migration of agentledger's runs on this database,
    then hold that off until ``connection``'s transaction ends (a no-op on SQLite).

    agentledger's ``env.py`` calls it before every online migration, so two deploys that run
    ``agentledger db upgrade`` (or ``ledger.upgrade()``) at once migrate one after the other:
    the second finds the database at head and does nothing. The lock is transaction-level
    (``pg_advisory_xact_lock``): agentledger's revisions run in one transaction, the lock is
    released by its commit or rollback, also when the process dies, and it works through a
    transaction-pooling PgBouncer, where a session-level lock could be left on a server
    connection another client gets. A host whose own Alembic runs agentledger's revisions
    (``version_locations``) calls it in its ``env.py`` inside ``context.begin_transaction()``,
    before ``context.run_migrations()``.

    Waits at most ``timeout`` seconds (``None``: as long as it takes), then raises
    :class:`~agentledger.errors.LedgerTimeoutError` saying how to find the lock's holder.
    """
    if connection.dialect.name != "postgresql":
        return  # SQLite: the database file's own write lock serializes writers
    wait_ms = 0 if timeout is None else max(1, round(timeout * 1000))
    previous = connection.execute(text("SELECT current_setting('lock_timeout')")).scalar_one()
    connection.execute(
        text("SELECT set_config('lock_timeout', :wait, true)"), {"wait": f"{wait_ms}ms"}
    )
    classid, objid = MIGRATION_LOCK_KEYS
    try:
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:classid, :objid)"),
            {"classid": classid, "objid": objid},
        )
    except DBAPIError as error:
        if sqlstate_of(error) != _LOCK_NOT_AVAILABLE:
            raise
        raise LedgerTimeoutError(
            f"another migration of agentledger's has been running on this database for more "
            f"than {timeout:g} s (it holds the migration lock), so this one gave up without "
            "changing anything. Let it finish, then check with `agentledger db current "
            "--check`; if nothing should be migrating, find the session holding the lock with "
            "`SELECT pid, state, query FROM pg_stat_activity WHERE pid IN (SELECT pid FROM "
            f"pg_locks WHERE locktype = 'advisory' AND classid = {classid} AND objid = {objid} "
            "AND objsubid = 2)`",
            sqlstate=_LOCK_NOT_AVAILABLE,
        ) from error
    connection.execute(text("SELECT set_config('lock_timeout', :wait, true)"), {"wait": previous})


def upgrade(
    connection: Connection,
    revision: str = "head",
    *,
    lock_timeout: float | None = MIGRATION_LOCK_TIMEOUT,
) -> None:
    """Run ``alembic upgrade`` on ``connection`` (the caller owns the transaction).

    On PostgreSQL it first waits up to ``lock_timeout`` seconds for any other migration of
    agentledger's on this database to finish (:func:`migration_lock`); the lock is held until
    the caller's transaction ends.

    Refuses when agentledger's tables exist without its version table: they were created by a
    host's own Alembic history or by the seed's schema, and a second history would only fail
    on "table already exists" halfway through.
    """
    tables = set(inspect(connection).get_table_names())
    if VERSION_TABLE not in tables and "agent_sessions" in tables:
        raise SchemaNotReadyError(
            "agent_sessions exists but agentledger_alembic_version does not, so agentledger's "
            f"own history did not create this schema; {_foreign_schema_advice(tables)}"
        )
    _run(command.upgrade, connection, revision, lock_timeout=lock_timeout)


def offline_upgrade_sql(url: str, revision: str = "head") -> str:
    """The SQL ``alembic upgrade --sql`` prints for ``revision`` (``head``, a revision, or
    ``FROM:TO``; without ``FROM``: from an empty database), for review before a deploy.

    Alembic's offline mode: nothing connects to ``url``, whose dialect alone is used. The
    script is one transaction (``BEGIN`` ... ``COMMIT``) and records the revisions in
    agentledger's version table, as ``agentledger db upgrade`` does. PostgreSQL only: on SQLite
    agentledger migrates with the file's foreign keys switched off while tables are rebuilt,
    which a script replayed with ``sqlite3`` would not do.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise UnsupportedBackendError(
            "offline SQL (`agentledger db upgrade --sql`) is printed for PostgreSQL only; a "
            "SQLite database is migrated in place with `agentledger db upgrade` (copy the file "
            "first to keep a backup). To review the PostgreSQL SQL without a server, pass any "
            "PostgreSQL URL: `agentledger --database-url postgresql:///review db upgrade --sql`"
        )
    config = alembic_config(parsed.render_as_string(hide_password=False))
    if ":" in revision:
        _check_range(ScriptDirectory.from_config(config), revision)
    buffer = io.StringIO()
    config.output_buffer = buffer
    try:
        with _beside_the_callers_alembic():
            command.upgrade(config, revision, sql=True)
    except (CommandError, RevisionError) as error:
        raise LedgerError(f"cannot print the SQL for {revision!r}: {error}") from error
    return buffer.getvalue()


def _check_range(script: ScriptDirectory, revision: str) -> None:
    """``FROM:TO`` must name two revisions with ``FROM`` before ``TO``: Alembic prints an
    empty script for a backwards or empty range, which a reviewer would read as "nothing to
    do"."""
    start, _, end = revision.partition(":")
    if not start or not end:
        raise InvalidInputError(
            f"the range {revision!r} needs both ends, FROM:TO (e.g. agentledger_0003:head); "
            "to print everything from an empty database, pass just the revision to reach"
        )
    try:
        first = None if start == "base" else script.get_revision(start)
        last = None if end == "base" else script.get_revision(end)
    except (CommandError, RevisionError) as error:
        raise LedgerError(f"cannot print the SQL for {revision!r}: {error}") from error
    if last is None:
        raise InvalidInputError(
            f"the range {revision!r} ends at base (an empty database), which an upgrade never "
            "reaches; name the revision to reach as TO"
        )
    if first is None:
        return  # base:TO, from an empty database
    if first.revision == last.revision:
        raise InvalidInputError(
            f"the range {revision!r} is empty: FROM and TO are the same revision; name the "
            "revision the database is at as FROM and a later one as TO"
        )
    if first.revision not in {
        rev.revision for rev in script.iterate_revisions(last.revision, "base")
    }:
        raise InvalidInputError(
            f"the range {revision!r} runs backwards or across branches: {start} does not come "
            f"before {end}; an upgrade's SQL goes from the earlier revision to the later one"
        )


def downgrade(connection: Connection, revision: str) -> None:
    """Run ``alembic downgrade`` on ``connection`` (the caller owns the transaction)."""
    _run(command.downgrade, connection, revision)


def refuse_dropping_referenced_tables(connection: Connection, target: str) -> None:
    """Before a downgrade to ``target``: when it would drop agentledger's tables (below
    ``agentledger_0001``) while foreign keys of other tables refer to them, refuse, naming
    the keys. PostgreSQL would refuse with a bare dependency error; SQLite, whose foreign keys
    are off while agentledger migrates, would drop them and leave those tables pointing at
    nothing."""
    if not _drops_tables(connection, target):
        return
    inspector = inspect(connection)
    keys = [
        f"{table}.{key.get('name') or '(unnamed key)'} -> {key['referred_table']}"
        for table in inspector.get_table_names()
        if table not in OWNED_TABLES
        for key in inspector.get_foreign_keys(table)
        if key.get("referred_table") in OWNED_TABLES
    ]
    if keys:
        raise LedgerError(
            f"downgrading to {target} drops agentledger's tables, but foreign keys of your "
            f"tables refer to them: {', '.join(keys)}; drop those keys (or their tables) in "
            "your own migration first, then downgrade again (nothing was changed)"
        )


def _drops_tables(connection: Connection, target: str) -> bool:
    """Whether a downgrade to ``target`` goes below ``agentledger_0001``: ``base`` (or
    ``branch@base``), or a relative ``-N`` at least as deep as the applied history."""
    if target == "base" or target.endswith("@base"):
        return True
    steps = target.rsplit("@", 1)[-1]
    if not (steps.startswith("-") and steps[1:].isdigit()):
        return False
    script = ScriptDirectory.from_config(alembic_config())
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    heads = context.get_current_heads()
    if not heads:
        return False
    depth = max(len(list(script.walk_revisions("base", head))) for head in heads)
    return int(steps[1:]) >= depth


def stamp(connection: Connection, revision: str) -> None:
    """Record ``revision`` as applied without running it (the caller owns the transaction)."""
    _run(command.stamp, connection, revision)


def _run(
    step: Any,
    connection: Connection,
    revision: str,
    *,
    lock_timeout: float | None = MIGRATION_LOCK_TIMEOUT,
) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    config.attributes[LOCK_TIMEOUT_ATTRIBUTE] = lock_timeout
    with _beside_the_callers_alembic():
        step(config, revision)


def _foreign_schema_advice(tables: set[str]) -> str:
    if HOST_VERSION_TABLE in tables:
        return (
            "if agentledger's revisions run in your application's Alembic history, upgrade "
            "with `alembic upgrade heads` there (and set AGENTLEDGER_HOST_ALEMBIC_INI)"
        )
    return (
        "if it is the seed's schema, run `agentledger db adopt`; if metadata.create_all() "
        "made it (a test or a quick start), drop those tables and run `agentledger db upgrade`; "
        "if your application's migrations created it, keep managing it from there"
    )


def latest_of(revisions: set[str]) -> set[str]:
    """Drop the revisions that are ancestors of others in the set (keep our applied heads)."""
    script = ScriptDirectory.from_config(alembic_config())
    ancestors: set[str] = set()
    for name in revisions:
        pending = list(_as_tuple(script.get_revision(name).down_revision))
        while pending:
            parent = pending.pop()
            if parent not in ancestors:
                ancestors.add(parent)
                revision = script.get_revision(parent)
                pending.extend(_as_tuple(revision.down_revision) if revision else ())
    return revisions - ancestors


def host_applied_revisions(heads: Sequence[str], host_alembic_ini: str) -> set[str]:
    """Every revision of the host's history that its version table's ``heads`` imply."""
    if not Path(host_alembic_ini).is_file():
        raise ConfigurationError(
            f"host_alembic_ini {host_alembic_ini!r} is not a file; point "
            "AGENTLEDGER_HOST_ALEMBIC_INI at your application's alembic.ini"
        )
    applied: set[str] = set()
    pending = list(heads)
    try:
        script = ScriptDirectory.from_config(Config(host_alembic_ini))
        while pending:
            for revision in script.get_revisions(pending.pop()):
                if revision is None or revision.revision in applied:
                    continue
                applied.add(revision.revision)
                pending.extend(_as_tuple(revision.down_revision))
                pending.extend(_as_tuple(revision.dependencies))
    except (CommandError, RevisionError) as error:
        raise ConfigurationError(
            f"could not read the Alembic history of {host_alembic_ini!r}: {error}"
        ) from error
    return applied


def _as_tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


@lru_cache(maxsize=1)
def known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(rev.revision for rev in script.walk_revisions())


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic filter for agentledger's own env.py: only agentledger's tables are compared."""
    return _table_name(obj, name, type_) in OWNED_TABLES


def host_include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic filter for a host's env.py: leave agentledger's tables and version table alone.

    ``context.configure(..., include_object=host_include_object)`` stops the host's
    ``alembic revision --autogenerate`` from proposing to drop or alter them.
    """
    table = _table_name(obj, name, type_)
    return table not in OWNED_TABLES and table != VERSION_TABLE


def _table_name(obj: Any, name: str | None, type_: str) -> str | None:
    if type_ == "table":
        return name
    table = getattr(obj, "table", None)
    return getattr(table, "name", None)
