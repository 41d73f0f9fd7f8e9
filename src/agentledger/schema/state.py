"""Which of agentledger's revisions a database is at, and what to run to reach head.

Read from agentledger's own version table, or from a host's ``alembic_version`` (walked through
its ``alembic.ini`` when given), or, when no version record names agentledger's revisions, from
the tables and columns that exist. Every state comes with its advice, so the fix in an error or
in ``agentledger db current`` names the command that fits how the schema is managed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from agentledger._version import __version__
from agentledger.schema.alembic import (
    HOST_VERSION_TABLE,
    VERSION_TABLE,
    head_revision,
    host_applied_revisions,
    known_revisions,
    latest_of,
)

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

    @property
    def only_head(self) -> bool:
        """At head and nothing else recorded (what a deploy gate wants): a version table that
        holds head beside another revision is damaged."""
        return self.current == (self.head,)

    @property
    def unknown(self) -> tuple[str, ...]:
        """Applied revisions this version of agentledger does not ship (a newer one's)."""
        known = known_revisions()
        return tuple(revision for revision in self.current if revision not in known)

    def advice(self) -> str | None:
        """What to run to reach head (``None`` at head, with nothing else recorded)."""
        if self.only_head:
            return None
        if self.at_head:
            return (
                "the version table records several revisions, head among them; keep only "
                f"the row of {self.head}"
            )
        if self.unknown:
            return (
                f"revision {', '.join(self.unknown)} is not one of agentledger {__version__}'s: "
                "a newer agentledger migrated this database. Install that version (its "
                "revisions ship with it); to go back to this one, first run `agentledger db "
                f"downgrade {self.head}` with the newer version installed"
            )
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
                "if it is the seed's schema, run `agentledger db adopt`; if metadata.create_all() "
                "made them (a test or a quick start), drop them and run `agentledger db upgrade`"
            )
        return f"{_UPGRADE}, or set AGENTLEDGER_MIGRATE_ON_START=true"

    def describe(self) -> str:
        """``agentledger_0004 (head)``, or the state and the advice."""
        found = ", ".join(self.current) or "base"
        if self.source == TABLES and self.current:
            found += " (inferred from the tables: no version table records it)"
        if self.only_head:
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
            applied = latest_of(host_applied_revisions(heads, host_alembic_ini) & known_revisions())
            source = HOST_HISTORY
        else:
            applied = latest_of(set(heads) & known_revisions())
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
    ("agentledger_0005", lambda c: _has_column(c, "agent_sessions", "turn_holder")),
    ("agentledger_0006_frameworks", lambda c: _has_column(c, "agent_sessions", "framework")),
    ("agentledger_0007", lambda c: inspect(c).has_table("agentledger_api_tokens")),
    ("agentledger_0008_adk_state", lambda c: inspect(c).has_table("ledger_app_state")),
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
