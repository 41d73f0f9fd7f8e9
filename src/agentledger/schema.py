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

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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
from sqlalchemy import Connection, inspect

from .errors import ConfigurationError, SchemaNotReadyError
from .models import OWNED_TABLES

#: agentledger's own Alembic version table.
VERSION_TABLE = "agentledger_alembic_version"
#: Branch label of agentledger's history inside a host's Alembic history.
BRANCH_LABEL = "agentledger"
#: The table a host's Alembic uses when agentledger's versions are in its version_locations.
HOST_VERSION_TABLE = "alembic_version"


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


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Run ``alembic upgrade`` on ``connection`` (the caller owns the transaction).

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
    _run(command.upgrade, connection, revision)


def downgrade(connection: Connection, revision: str) -> None:
    """Run ``alembic downgrade`` on ``connection`` (the caller owns the transaction)."""
    _run(command.downgrade, connection, revision)


def stamp(connection: Connection, revision: str) -> None:
    """Record ``revision`` as applied without running it (the caller owns the transaction)."""
    _run(command.stamp, connection, revision)


def _run(step: Any, connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    with _beside_the_callers_alembic():
        step(config, revision)


#: Where :class:`SchemaState` learned the applied revisions.
OWN_VERSION_TABLE = "own version table"
HOST_HISTORY = "host history"
HOST_VERSION_TABLE_LISTED = "host version table"
TABLES = "tables"
NOTHING = "nothing"

_UPGRADE = "run `agentledger db upgrade` (or `await ledger.upgrade()`)"


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Which of agentledger's revisions a database is at, where that was learned, and what
    to run to reach head.

    ``source``: :data:`OWN_VERSION_TABLE` (``agentledger_alembic_version``, which
    ``agentledger db upgrade`` keeps), :data:`HOST_HISTORY` (the host's ``alembic_version``,
    walked through its ``alembic.ini``), :data:`HOST_VERSION_TABLE_LISTED` (our revisions
    listed in the host's ``alembic_version``), :data:`TABLES` (no version record names our
    revisions, as when a host revision that depends on ours took its place in
    ``alembic_version`` without ``AGENTLEDGER_HOST_ALEMBIC_INI``: inferred from the tables and
    columns that exist) or :data:`NOTHING` (no agentledger tables at all).
    """

    current: tuple[str, ...]
    head: str
    source: str
    #: The host's ``alembic_version`` exists and agentledger's own version table does not:
    #: agentledger's revisions run in the host's history.
    in_host_history: bool = False
    host_alembic_ini: str | None = None

    @property
    def at_head(self) -> bool:
        return self.head in self.current

    def advice(self) -> str | None:
        """What to run to reach head (``None`` at head)."""
        if self.at_head:
            return None
        if self.in_host_history:
            advice = (
                "agentledger's revisions run in your application's Alembic history: run "
                "`alembic upgrade heads` there (not `agentledger db upgrade`)"
            )
            if self.host_alembic_ini is None:
                advice += (
                    "; set AGENTLEDGER_HOST_ALEMBIC_INI to your alembic.ini so that agentledger "
                    "reads the applied revisions from your history"
                )
            return advice
        if self.source == TABLES:
            return (
                "agentledger's tables exist but no Alembic version table records them; if your "
                "application's Alembic history created them, run `alembic upgrade heads` there; "
                "if it is the seed's schema, run `agentledger db adopt`"
            )
        return f"{_UPGRADE}, or set AGENTLEDGER_MIGRATE_ON_START=true"

    def describe(self) -> str:
        """``agentledger_0004 (head)``, or the state and the advice."""
        found = ", ".join(self.current) or "base"
        if self.source == TABLES and self.current:
            found += " (inferred from the tables: no version table records it)"
        if self.at_head:
            return f"{found} (head)"
        return f"{found} (head is {self.head}; {self.advice()})"


def schema_state(connection: Connection, host_alembic_ini: str | None = None) -> SchemaState:
    """agentledger's revisions applied to this database, from either version table or, when
    none records them, from the tables that exist (see :class:`SchemaState`).

    ``host_alembic_ini`` names the ``alembic.ini`` of a host whose ``version_locations`` hold
    agentledger's revisions. Alembic lists only the heads of that history in ``alembic_version``,
    and a host revision that ``depends_on`` one of agentledger's replaces it there; the host's
    history is then walked from its heads (down revisions and dependencies) to find ours.
    """
    head = head_revision()
    tables = set(inspect(connection).get_table_names())
    if VERSION_TABLE in tables:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        current = tuple(sorted(context.get_current_heads()))
        return SchemaState(current, head, OWN_VERSION_TABLE, host_alembic_ini=host_alembic_ini)
    inferred = _inferred_revision(connection, tables)
    if HOST_VERSION_TABLE in tables or host_alembic_ini:
        heads = (
            MigrationContext.configure(connection).get_current_heads()
            if HOST_VERSION_TABLE in tables
            else ()
        )
        if host_alembic_ini:
            applied = _latest(_host_applied(heads, host_alembic_ini) & _known_revisions())
            source = HOST_HISTORY
        else:
            applied = _latest(set(heads) & _known_revisions())
            source = HOST_VERSION_TABLE_LISTED
            if inferred is not None and (not applied or _is_later(inferred, applied)):
                applied, source = {inferred}, TABLES
        if applied or "agent_sessions" in tables or host_alembic_ini:
            return SchemaState(
                tuple(sorted(applied)),
                head,
                source,
                in_host_history=True,
                host_alembic_ini=host_alembic_ini,
            )
    if inferred is not None:
        return SchemaState((inferred,), head, TABLES, host_alembic_ini=host_alembic_ini)
    return SchemaState((), head, NOTHING, host_alembic_ini=host_alembic_ini)


def current_revisions(
    connection: Connection, host_alembic_ini: str | None = None
) -> tuple[str, ...]:
    """agentledger revisions applied to this database (see :func:`schema_state`)."""
    return schema_state(connection, host_alembic_ini).current


# -- inferring the revision from the schema that exists ------------------------------------------


def _has_column(connection: Connection, table: str, column: str) -> bool:
    return any(found["name"] == column for found in inspect(connection).get_columns(table))


def _has_tenant_policy(connection: Connection) -> bool | None:
    if connection.dialect.name != "postgresql":
        return None  # the revision changes nothing on SQLite
    return bool(
        connection.exec_driver_sql(
            "SELECT 1 FROM pg_policies WHERE tablename = 'agent_sessions' "
            "AND policyname = 'agentledger_tenant'"
        ).first()
    )


#: What each revision leaves behind, checked in order. ``None``: the revision changes nothing
#: on this backend, so its predecessor's mark stands for it.
_MARKS: tuple[tuple[str, Callable[[Connection], bool | None]], ...] = (
    ("agentledger_0001", lambda c: _has_column(c, "conversation_messages", "seq")),
    ("agentledger_0002", lambda c: _has_column(c, "agent_sessions", "trimmed_seq")),
    ("agentledger_0003", _has_tenant_policy),
    ("agentledger_0004", lambda c: _has_column(c, "agent_sessions", "name")),
)


def _inferred_revision(connection: Connection, tables: set[str]) -> str | None:
    """The latest revision whose schema the tables show, or ``None`` without our tables."""
    if not {"agent_sessions", "conversation_messages"} <= tables:
        return None
    reached: str | None = None
    for revision, mark in _MARKS:
        present = mark(connection)
        if present is False:
            break
        reached = revision
    return reached


def _is_later(revision: str, than: set[str]) -> bool:
    order = [name for name, _mark in _MARKS]
    return all(order.index(revision) > order.index(other) for other in than if other in order)


def _foreign_schema_advice(tables: set[str]) -> str:
    if HOST_VERSION_TABLE in tables:
        return (
            "if agentledger's revisions run in your application's Alembic history, upgrade "
            "with `alembic upgrade heads` there (and set AGENTLEDGER_HOST_ALEMBIC_INI)"
        )
    return (
        "if it is the seed's schema, run `agentledger db adopt`; if your application created "
        "it, keep managing it from there"
    )


def _latest(revisions: set[str]) -> set[str]:
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


def _host_applied(heads: Sequence[str], host_alembic_ini: str) -> set[str]:
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
def _known_revisions() -> frozenset[str]:
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
