"""Deleting and archiving sessions in bulk: cleanup, retention and user erasure.

One way to choose idle sessions (keyset pages by ``(updated_at, id)`` with a message budget)
and one way to delete sessions, for ``cleanup_sessions``, ``apply_retention`` and
``erase_user`` alike. A delete that another table's foreign key blocks raises
:class:`~agentledger.errors.SessionReferencedError`, so the service can skip that session
and go on with the rest. Like every repository it never commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Uuid,
    bindparam,
    column,
    delete,
    exists,
    func,
    inspect,
    select,
    table,
    text,
    true,
    tuple_,
    update,
)

from agentledger.db.models import sessions_table, usage_table
from agentledger.db.repositories.base import Repository
from agentledger.domain.records import BlockedSession
from agentledger.translation import OWN_TABLE_NAMES

_sessions = sessions_table
_usage = usage_table


@dataclass(frozen=True, slots=True)
class AgentScope:
    """The sessions a retention policy governs: one agent, every agent not named, or (the
    default) every session."""

    agent_name: str | None = None
    exclude: frozenset[str] = frozenset()

    def condition(self) -> ColumnElement[bool]:
        if self.agent_name is not None:
            return _sessions.c.agent_name == self.agent_name
        if self.exclude:
            return _sessions.c.agent_name.not_in(sorted(self.exclude))
        return true()


@dataclass(frozen=True, slots=True)
class Candidate:
    """A session chosen for deletion or archiving, with its place in the keyset order."""

    id: uuid.UUID
    updated_at: datetime
    messages: int

    @property
    def key(self) -> tuple[datetime, uuid.UUID]:
        return (self.updated_at, self.id)


@dataclass(frozen=True, slots=True)
class BlockingForeignKey:
    """A foreign key of another table that refers to agentledger's rows without ``ON DELETE``;
    ``session_column``: its column that holds the session id."""

    table: str
    constraint: str | None
    session_column: str | None = None
    #: The key refers to messages (``conversation_messages``), not to sessions.
    on_messages: bool = False


class MaintenanceRepository(Repository):
    """Bulk deletes and archiving over agentledger's tables."""

    # -- choosing ----------------------------------------------------------------------------

    async def idle(
        self,
        scope: AgentScope,
        cutoff: datetime,
        *,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
        max_messages: int | None = None,
        unarchived_only: bool = False,
    ) -> list[Candidate]:
        """The next sessions of ``scope`` not updated since ``cutoff``, oldest first, after
        ``after``: at most ``limit`` of them holding at most ``max_messages`` messages
        together (always at least one)."""
        statement = (
            select(_sessions.c.id)
            .where(scope.condition(), _sessions.c.updated_at < cutoff)
            .order_by(_sessions.c.updated_at, _sessions.c.id)
            .limit(limit)
        )
        if unarchived_only:
            statement = statement.where(_sessions.c.archived_at.is_(None))
        if after is not None:
            statement = statement.where(
                tuple_(_sessions.c.updated_at, _sessions.c.id) > tuple_(*after)
            )
        chosen: list[Candidate] = []
        total = 0
        for candidate in await self._rows(statement, lock=False):
            total += candidate.messages
            if chosen and max_messages is not None and total > max_messages:
                break
            chosen.append(candidate)
        return chosen

    async def count_idle(
        self,
        scope: AgentScope,
        cutoff: datetime,
        *,
        unarchived_only: bool = False,
        excluding: Sequence[uuid.UUID] = (),
    ) -> tuple[int, int]:
        """``(sessions, messages)`` of the scope idle since before ``cutoff``, leaving out
        the sessions ``excluding`` names (those another table keeps)."""
        statement = select(func.count(), func.coalesce(func.sum(_message_count()), 0)).where(
            scope.condition(), _sessions.c.updated_at < cutoff
        )
        if unarchived_only:
            statement = statement.where(_sessions.c.archived_at.is_(None))
        if excluding:
            statement = statement.where(_sessions.c.id.not_in(excluding))
        sessions, messages = (await self._db.execute(statement)).one()
        return int(sessions), int(messages)

    async def kept_idle(self, scope: AgentScope, cutoff: datetime) -> list[BlockedSession]:
        """The scope's sessions idle since before ``cutoff`` that a delete would skip."""
        return await self._kept(scope.condition(), _sessions.c.updated_at < cutoff)

    async def kept_of_user(self, user_id: str) -> list[BlockedSession]:
        """The sessions of ``user_id`` that an erasure would skip."""
        return await self._kept(_sessions.c.user_id == user_id)

    async def _kept(self, *conditions: ColumnElement[bool]) -> list[BlockedSession]:
        """The sessions matching ``conditions`` that a row of another table refers to (through
        a foreign key without ``ON DELETE``): what a delete would skip, for dry runs to count
        exactly. Each is named with the first such key found."""
        found: dict[uuid.UUID, BlockedSession] = {}
        for key in await self.blocking_foreign_keys():
            if key.session_column is None:
                continue
            referring = table(key.table, column(key.session_column))
            statement = select(_sessions.c.id).where(
                *conditions,
                exists().where(referring.c[key.session_column] == _sessions.c.id),
            )
            for session_id in (await self._db.execute(statement)).scalars():
                found.setdefault(session_id, BlockedSession(session_id, key.table, key.constraint))
        return sorted(found.values(), key=lambda blocked: blocked.session_id)

    async def user_sessions(
        self, user_id: str, *, after: uuid.UUID | None, limit: int
    ) -> list[Candidate]:
        """The next ``limit`` sessions of ``user_id`` by id, after ``after``, locked for this
        transaction on PostgreSQL (``FOR UPDATE``, which also holds off the foreign-key check
        of a concurrent message or usage insert into them, so counts are exact)."""
        statement = (
            select(_sessions.c.id)
            .where(_sessions.c.user_id == user_id)
            .order_by(_sessions.c.id)
            .limit(limit)
        )
        if after is not None:
            statement = statement.where(_sessions.c.id > after)
        return sorted(await self._rows(statement, lock=True), key=lambda row: row.id)

    async def _rows(self, chosen: Select[Any], *, lock: bool) -> list[Candidate]:
        """The sessions ``chosen`` selects, with what a batch needs, oldest first. ``lock``:
        locked for this transaction (the dialect's row lock); SQLite always takes its write
        lock here, as a transaction that reads before it writes fails at once when another
        writer commits in between."""
        columns = (_sessions.c.id, _sessions.c.updated_at, _message_count())
        if lock or not self._dialect.autocommit_statements:
            rows = await self._dialect.lock_rows(self._db, chosen, columns)
        else:
            rows = list(
                await self._db.execute(
                    select(*columns).where(_sessions.c.id.in_(chosen.scalar_subquery()))
                )
            )
        ordered = sorted(rows, key=lambda row: (row[1], row[0]))
        return [Candidate(row[0], row[1], int(row[2])) for row in ordered]

    async def count_for_user(
        self, user_id: str, *, excluding: Sequence[uuid.UUID] = ()
    ) -> tuple[int, int, int]:
        """``(sessions, messages, usage records)`` of ``user_id``, leaving out the sessions
        ``excluding`` names."""
        owned = _sessions.alias("owned")
        usage_records = (
            select(func.count())
            .select_from(_usage.join(owned, owned.c.id == _usage.c.session_id))
            .where(owned.c.user_id == user_id)
        )
        chosen = select(func.count(), func.coalesce(func.sum(_message_count()), 0)).where(
            _sessions.c.user_id == user_id
        )
        if excluding:
            usage_records = usage_records.where(owned.c.id.not_in(excluding))
            chosen = chosen.where(_sessions.c.id.not_in(excluding))
        result = await self._db.execute(chosen.add_columns(usage_records.scalar_subquery()))
        sessions, messages, usage = result.one()
        return int(sessions), int(messages), int(usage)

    # -- changing ----------------------------------------------------------------------------

    async def delete(
        self, session_ids: Sequence[uuid.UUID], *, idle_before: datetime | None = None
    ) -> list[tuple[uuid.UUID, int, int]]:
        """Delete these sessions (messages, batches and usage go by cascade); ``(id, messages,
        usage records)`` of each deleted one. ``idle_before``: only those still not updated
        since then (a session that received a message meanwhile survives).

        Raises :class:`SessionReferencedError` when another table's foreign key blocks it
        (the caller runs it in a SAVEPOINT to go on)."""
        if not session_ids:
            return []
        usage = select(func.count()).where(_usage.c.session_id == _sessions.c.id).scalar_subquery()
        counted = await self._db.execute(
            select(_sessions.c.id, usage).where(_sessions.c.id.in_(session_ids))
        )
        usage_records = {session_id: int(count) for session_id, count in counted}
        statement = delete(_sessions).where(_sessions.c.id.in_(session_ids))
        if idle_before is not None:
            statement = statement.where(_sessions.c.updated_at < idle_before)
        result = await self._delete(
            statement.returning(_sessions.c.id, _message_count()), session_ids
        )
        rows: list[Any] = list(result)
        return [(row[0], int(row[1]), usage_records.get(row[0], 0)) for row in rows]

    async def archive(
        self, session_ids: Sequence[uuid.UUID], *, idle_before: datetime, now: datetime
    ) -> int:
        """Mark these sessions archived (those still idle and not archived); how many."""
        if not session_ids:
            return 0
        result = await self._db.execute(
            update(_sessions)
            .where(
                _sessions.c.id.in_(session_ids),
                _sessions.c.updated_at < idle_before,
                _sessions.c.archived_at.is_(None),
            )
            .values(archived_at=now)
            .returning(_sessions.c.id)
        )
        return len(result.all())

    async def trim_candidates(
        self,
        scope: AgentScope,
        max_messages: int,
        *,
        after: uuid.UUID | None,
        limit: int,
        active_since: datetime | None = None,
    ) -> list[uuid.UUID]:
        """Ids of the scope's sessions holding more than ``max_messages``, in id order
        (``active_since``: only those updated since then; the others are being deleted)."""
        statement = (
            select(_sessions.c.id)
            .where(scope.condition(), _message_count() > max_messages)
            .order_by(_sessions.c.id)
            .limit(limit)
        )
        if after is not None:
            statement = statement.where(_sessions.c.id > after)
        if active_since is not None:
            statement = statement.where(_sessions.c.updated_at >= active_since)
        return list((await self._db.execute(statement)).scalars())

    async def referring_key(self, session_id: uuid.UUID) -> BlockingForeignKey | None:
        """The foreign key whose rows keep ``session_id`` (or its messages) from being deleted:
        each candidate's table is asked for a row of that session. What a refusal on SQLite,
        which does not name the key, is explained with."""
        for key in await self.blocking_foreign_keys():
            if key.session_column is None:
                continue
            table, column = _quoted(key.table), _quoted(key.session_column)
            probe = text(f"SELECT 1 FROM {table} WHERE {column} = :sid LIMIT 1").bindparams(
                bindparam("sid", type_=Uuid())
            )
            if (await self._db.execute(probe, {"sid": session_id})).first() is not None:
                return key
        return None

    async def foreign_key(self, table: str, constraint: str | None) -> BlockingForeignKey | None:
        """The blocking foreign key the database named (``None``: not one of them)."""
        for key in await self.blocking_foreign_keys():
            if key.table == table and (constraint is None or key.constraint == constraint):
                return key
        return None

    async def blocking_foreign_keys(self) -> list[BlockingForeignKey]:
        """Foreign keys of other tables that refer to agentledger's tables and would block a
        delete (no ``ON DELETE CASCADE``/``SET NULL``/``SET DEFAULT``): what a delete refused
        on SQLite, which does not name the constraint, is explained with."""
        connection = await self._db.connection()
        return await connection.run_sync(_blocking_foreign_keys)


def _message_count() -> ColumnElement[Any]:
    return _sessions.c.last_seq - _sessions.c.trimmed_seq


def _blocking_foreign_keys(connection: Connection) -> list[BlockingForeignKey]:
    inspector = inspect(connection)
    found = []
    for name in inspector.get_table_names():
        if name in OWN_TABLE_NAMES:
            continue
        for key in inspector.get_foreign_keys(name):
            action = str((key.get("options") or {}).get("ondelete") or "").upper()
            if key.get("referred_table") in OWN_TABLE_NAMES and action not in (
                "CASCADE",
                "SET NULL",
                "SET DEFAULT",
            ):
                found.append(
                    BlockingForeignKey(
                        name,
                        key.get("name"),
                        _session_column(key),
                        on_messages=key.get("referred_table") == "conversation_messages",
                    )
                )
    return found


def _session_column(key: Any) -> str | None:
    """The referring column that holds the session id (``agent_sessions.id``, or the
    ``session_id`` of a per-session table)."""
    wanted = "id" if key.get("referred_table") == "agent_sessions" else "session_id"
    for constrained, referred in zip(
        key.get("constrained_columns") or (), key.get("referred_columns") or (), strict=False
    ):
        if referred == wanted:
            return str(constrained)
    return None


def _quoted(identifier: str) -> str:
    """An identifier read from the catalog, quoted for SQL."""
    return '"' + identifier.replace('"', '""') + '"'
