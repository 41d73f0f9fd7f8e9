"""Adopt a database that runs the seed's schema: upgrade it in place, keeping every row.

Teams that started from the naive PostgreSQL session store have ``agent_sessions`` and
``conversation_messages`` in the seed's exact shape, with real conversations in them. Adoption
turns those two tables into agentledger's revision-1 schema *in place* (so foreign keys a host
holds to ``agent_sessions`` survive), rebuilds message order from ``created_at`` then ``id`` —
the best the seed recorded — and stamps the database so normal upgrades follow.

It refuses, changing nothing, when the tables are not the seed's shape, when messages have no
session (the seed allowed a NULL ``session_id``), when a role is outside agentledger's set, or
when a session's metadata is not a JSON object: nothing is ever dropped silently. Everything
runs in the caller's single transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, bindparam, inspect, text

from agentledger.domain.encoding import dump_json, escape_nul, map_strings
from agentledger.domain.projection import ROLES, item_from_chat
from agentledger.errors import LedgerError

#: Columns (name -> PostgreSQL type family) of the seed's two tables.
SEED_SESSION_COLUMNS: dict[str, str] = {
    "id": "UUID",
    "user_id": "VARCHAR",
    "agent_name": "VARCHAR",
    "created_at": "TIMESTAMP",
    "updated_at": "TIMESTAMP",
    "metadata": "JSONB",
}
SEED_MESSAGE_COLUMNS: dict[str, str] = {
    "id": "UUID",
    "session_id": "UUID",
    "role": "VARCHAR",
    "content": "TEXT",
    "tool_calls": "JSONB",
    "tool_call_id": "VARCHAR",
    "created_at": "TIMESTAMP",
}
#: The revision whose schema adoption produces.
ADOPTED_REVISION = "agentledger_0001"


class AdoptionRefusedError(LedgerError):
    """The database is not a seed-schema database that can be adopted as it stands."""


@dataclass(frozen=True, slots=True)
class AdoptionReport:
    sessions: int
    messages: int


def adopt_seed_schema(
    connection: Connection,
    *,
    batch_size: int = 2000,
    on_progress: Callable[[int, int], None] | None = None,
) -> AdoptionReport:
    """Upgrade the seed schema on ``connection`` to revision 1; the caller commits.

    ``on_progress(done, total)`` is called after each batch of messages.
    """
    _check_shape(connection)
    sessions, messages = _check_rows(connection)
    _upgrade_sessions(connection)
    _upgrade_messages(connection, messages, batch_size, on_progress)
    _create_bookkeeping_tables(connection)
    return AdoptionReport(sessions=sessions, messages=messages)


def _check_shape(connection: Connection) -> None:
    if connection.dialect.name != "postgresql":
        raise AdoptionRefusedError(
            "adoption upgrades the seed's PostgreSQL schema; this database is "
            f"{connection.dialect.name}. Start SQLite databases with `agentledger db upgrade`"
        )
    inspector = inspect(connection)
    tables = set(inspector.get_table_names())
    if "agentledger_alembic_version" in tables:
        raise AdoptionRefusedError(
            "this database is already managed by agentledger (agentledger_alembic_version "
            "exists); use `agentledger db upgrade`"
        )
    for table, expected in (
        ("agent_sessions", SEED_SESSION_COLUMNS),
        ("conversation_messages", SEED_MESSAGE_COLUMNS),
    ):
        if table not in tables:
            raise AdoptionRefusedError(
                f"table {table} is missing, so this is not a seed-schema database; for an "
                "empty database run `agentledger db upgrade`"
            )
        found = {
            column["name"]: type(column["type"]).__name__.upper()
            for column in inspector.get_columns(table)
        }
        if found.keys() != expected.keys() or any(
            not found[name].startswith(family) for name, family in expected.items()
        ):
            raise AdoptionRefusedError(
                f"table {table} does not have the seed's shape: expected columns "
                f"{_describe(expected)}, found {_describe(found)}; nothing was changed"
            )


def _describe(columns: dict[str, str]) -> str:
    return ", ".join(f"{name} {kind.lower()}" for name, kind in sorted(columns.items()))


def _check_rows(connection: Connection) -> tuple[int, int]:
    orphans = connection.scalar(
        text("SELECT count(*) FROM conversation_messages WHERE session_id IS NULL")
    )
    if orphans:
        raise AdoptionRefusedError(
            f"{orphans} messages have no session_id and cannot be kept; assign them to a "
            "session or delete them, then adopt again (nothing was changed)"
        )
    unknown = (
        connection.execute(
            text(
                "SELECT DISTINCT role FROM conversation_messages WHERE role NOT IN :roles"
            ).bindparams(bindparam("roles", expanding=True)),
            {"roles": list(ROLES)},
        )
        .scalars()
        .all()
    )
    if unknown:
        raise AdoptionRefusedError(
            f"messages use roles agentledger does not know ({', '.join(map(repr, unknown))}); "
            f"map them to one of {', '.join(ROLES)} first (nothing was changed)"
        )
    not_objects = connection.scalar(
        text(
            "SELECT count(*) FROM agent_sessions WHERE metadata IS NOT NULL "
            "AND jsonb_typeof(CAST(metadata AS jsonb)) <> 'object'"
        )
    )
    if not_objects:
        raise AdoptionRefusedError(
            f"{not_objects} sessions have metadata that is not a JSON object (agentledger's "
            "metadata is one, so it would read as {} and be lost at the next update); wrap "
            "it, e.g. UPDATE agent_sessions SET metadata = jsonb_build_object('value', "
            "metadata) WHERE jsonb_typeof(metadata) <> 'object', then adopt again (nothing "
            "was changed)"
        )
    sessions = int(connection.scalar(text("SELECT count(*) FROM agent_sessions")) or 0)
    messages = int(connection.scalar(text("SELECT count(*) FROM conversation_messages")) or 0)
    return sessions, messages


def _constraint_name(connection: Connection, table: str, kind: str) -> str:
    """The actual name of the table's primary key (``p``) or foreign key (``f``)."""
    name = connection.scalar(
        text(
            "SELECT conname FROM pg_constraint WHERE conrelid = CAST(:table AS regclass) "
            "AND contype::text = :kind"
        ),
        {"table": table, "kind": kind},
    )
    if name is None:
        raise AdoptionRefusedError(f"table {table} lacks the seed's key constraints")
    return str(name)


def _upgrade_sessions(connection: Connection) -> None:
    pkey = _constraint_name(connection, "agent_sessions", "p")
    for statement in (
        "UPDATE agent_sessions SET created_at = COALESCE(created_at, now()), "
        "updated_at = COALESCE(updated_at, created_at, now()), "
        "metadata = COALESCE(metadata, '{}') "
        "WHERE created_at IS NULL OR updated_at IS NULL OR metadata IS NULL",
        "DROP INDEX IF EXISTS idx_sessions_user_id",
        f'ALTER TABLE agent_sessions RENAME CONSTRAINT "{pkey}" TO pk_agent_sessions',
        "ALTER TABLE agent_sessions ALTER COLUMN id DROP DEFAULT, "
        "ALTER COLUMN created_at SET NOT NULL, ALTER COLUMN updated_at SET NOT NULL, "
        "ALTER COLUMN metadata SET NOT NULL, "
        "ADD COLUMN last_seq BIGINT DEFAULT 0 NOT NULL, "
        "ADD CONSTRAINT ck_agent_sessions_last_seq_non_negative CHECK (last_seq >= 0)",
        "CREATE INDEX ix_agent_sessions_user_id_updated_at "
        "ON agent_sessions (user_id, updated_at, id)",
        "CREATE INDEX ix_agent_sessions_updated_at ON agent_sessions (updated_at)",
    ):
        connection.execute(text(statement))


def _upgrade_messages(
    connection: Connection,
    total: int,
    batch_size: int,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    pkey = _constraint_name(connection, "conversation_messages", "p")
    fkey = _constraint_name(connection, "conversation_messages", "f")
    for statement in (
        "DROP INDEX IF EXISTS idx_messages_session_id",
        "DROP INDEX IF EXISTS idx_messages_created_at",
        "UPDATE conversation_messages SET created_at = now() WHERE created_at IS NULL",
        "ALTER TABLE conversation_messages ALTER COLUMN id DROP DEFAULT, "
        "ALTER COLUMN session_id SET NOT NULL, ALTER COLUMN created_at SET NOT NULL, "
        "ADD COLUMN seq BIGINT, "
        "ADD COLUMN item_type VARCHAR(64) DEFAULT 'message' NOT NULL, "
        "ADD COLUMN item JSON",
        # Order the seed could record: created_at, ties broken by id.
        "UPDATE conversation_messages m SET seq = o.seq FROM ("
        " SELECT id, row_number() OVER (PARTITION BY session_id ORDER BY created_at, id) AS seq"
        " FROM conversation_messages) o WHERE m.id = o.id",
    ):
        connection.execute(text(statement))
    _fill_items(connection, total, batch_size, on_progress)
    for statement in (
        "ALTER TABLE conversation_messages ALTER COLUMN seq SET NOT NULL, "
        "ALTER COLUMN item SET NOT NULL",
        f'ALTER TABLE conversation_messages DROP CONSTRAINT "{pkey}"',
        "ALTER TABLE conversation_messages "
        "ADD CONSTRAINT pk_conversation_messages PRIMARY KEY (session_id, seq), "
        "ADD CONSTRAINT uq_conversation_messages_session_id_id UNIQUE (session_id, id), "
        "ADD CONSTRAINT ck_conversation_messages_role_known CHECK ("
        + "role IN ("
        + ", ".join(f"'{role}'" for role in ROLES)
        + ")), "
        "ADD CONSTRAINT ck_conversation_messages_seq_positive CHECK (seq > 0)",
        f'ALTER TABLE conversation_messages RENAME CONSTRAINT "{fkey}" '
        "TO fk_conversation_messages_session_id_agent_sessions",
        "UPDATE agent_sessions s SET last_seq = c.n FROM ("
        " SELECT session_id, max(seq) AS n FROM conversation_messages GROUP BY session_id) c"
        " WHERE s.id = c.session_id",
    ):
        connection.execute(text(statement))
    _escape_metadata(connection)


def _fill_items(
    connection: Connection,
    total: int,
    batch_size: int,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    """Build each row's stored item from its chat columns, with the library's own rule.

    Also applies the PostgreSQL text escape to existing content (the seed could not hold
    U+0000, but it may hold the escape character itself, which must now be doubled).
    """
    done = 0
    last: tuple[Any, int] | None = None
    while True:
        where = "" if last is None else "WHERE (session_id, seq) > (:sid, :seq) "
        params: dict[str, Any] = {"limit": batch_size}
        if last is not None:
            params.update(sid=last[0], seq=last[1])
        rows = connection.execute(
            text(
                "SELECT session_id, seq, role, content, tool_calls, tool_call_id "
                f"FROM conversation_messages {where}ORDER BY session_id, seq LIMIT :limit"
            ),
            params,
        ).all()
        if not rows:
            return
        updates = []
        for session_id, seq, role, content, raw_tool_calls, tool_call_id in rows:
            tool_calls = _decoded(raw_tool_calls)
            item = item_from_chat(role, content, tool_calls, tool_call_id)
            updates.append(
                {
                    "sid": session_id,
                    "seq": seq,
                    "content": escape_nul(content),
                    "tool_calls": None
                    if tool_calls is None
                    else json.dumps(map_strings(tool_calls, escape_nul)),
                    "tool_call_id": None if tool_call_id is None else escape_nul(tool_call_id),
                    "item_type": item.get("type", "message"),
                    "item": dump_json(item, f"message {seq} of session {session_id}"),
                }
            )
        connection.execute(
            text(
                "UPDATE conversation_messages SET content = :content, "
                "tool_calls = CAST(:tool_calls AS jsonb), tool_call_id = :tool_call_id, "
                "item_type = :item_type, item = CAST(:item AS json) "
                "WHERE session_id = :sid AND seq = :seq"
            ),
            updates,
        )
        done += len(rows)
        last = (rows[-1][0], rows[-1][1])
        if on_progress is not None:
            on_progress(done, total)


def _escape_metadata(connection: Connection) -> None:
    """Apply the text escape to metadata strings that contain the escape character."""
    rows = connection.execute(
        text("SELECT id, metadata FROM agent_sessions WHERE strpos(metadata::text, :esc) > 0"),
        {"esc": "\ue000"},
    ).all()
    for session_id, metadata in rows:
        connection.execute(
            text("UPDATE agent_sessions SET metadata = CAST(:m AS jsonb) WHERE id = :id"),
            {"m": json.dumps(map_strings(_decoded(metadata), escape_nul)), "id": session_id},
        )


def _decoded(value: Any) -> Any:
    """A jsonb value as Python data, whether the driver decoded it or returned its text."""
    return json.loads(value) if isinstance(value, str) else value


def _create_bookkeeping_tables(connection: Connection) -> None:
    """Create revision 1's other tables with revision 1's own code (one source of truth)."""
    from agentledger.schema.alembic import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    revision = script.get_revision(ADOPTED_REVISION)
    assert revision is not None
    assert revision.module is not None
    with Operations.context(MigrationContext.configure(connection)):
        revision.module.create_bookkeeping_tables()
