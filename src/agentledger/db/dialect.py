"""The one place agentledger's SQL differs between PostgreSQL and SQLite.

A :class:`Dialect` is chosen once per engine (:func:`dialect_for`) and handed to every
repository by the unit of work; repositories ask it, and never branch on the backend themselves.
What differs:

* appending a batch: PostgreSQL locks, allocates and inserts in one statement from arrays;
  SQLite, with no arrays and no network round trip, runs two statements in the transaction;
* inserting if missing (``ON CONFLICT DO NOTHING``), new ids made inside the database;
* locking a batch of sessions before deleting them (``FOR UPDATE``; SQLite: a no-op
  ``UPDATE``, which takes the database's write lock first thing: a SQLite transaction that
  reads before it writes fails at once when another writer commits in between);
* the metadata filter of listings (``jsonb @>``; SQLite: ``json_each``) and full-text search
  (``tsvector``; SQLite: ``LIKE``);
* row-level security: the tenant setting and the "is this role confined" check (PostgreSQL).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    REAL,
    ColumnElement,
    Insert,
    Interval,
    Select,
    Table,
    Text,
    TextClause,
    and_,
    bindparam,
    case,
    false,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from agentledger.db.fastpath import Statements
from agentledger.db.models import messages_table, sessions_table
from agentledger.db.statements import list_query, pg_append_statement
from agentledger.db.types import SEARCH_CONFIG, NulSafeJSON, UTCDateTime
from agentledger.domain.encoding import escape_nul, escape_nul_in_json
from agentledger.domain.records import NewRow, SessionSpec
from agentledger.domain.search import SearchTerms, ascii_lower, like_pattern
from agentledger.errors import InvalidInputError

_sessions = sessions_table
_messages = messages_table

#: The transaction-local setting PostgreSQL's row-level security policies compare
#: ``agent_sessions.user_id`` with (``set_config(..., true)``: it ends with the transaction).
TENANT_SETTING = "agentledger.user_id"


class Dialect:
    """What agentledger's statements need that differs by backend (see the module docstring)."""

    name: str
    #: One statement is atomic by itself and a BEGIN/COMMIT pair costs network round trips.
    autocommit_statements: bool
    #: The first statement of a tenant-scoped transaction (``None``: no row-level security).
    tenant_scope: TextClause | None
    #: Makes deferrable constraints of the transaction checked per statement (``None``: they
    #: are already), so a delete another table's foreign key refuses fails where it is made.
    immediate_constraints: TextClause | None = None
    #: The messages table can be partitioned by time and a partition retired by dropping it.
    time_partitions: bool = False

    def with_deferred_constraints_kept(self) -> Dialect:
        """This strategy without ``immediate_constraints``, for a transaction that is not
        agentledger's (a refused delete then fails at the caller's commit instead)."""
        if self.immediate_constraints is None:
            return self
        kept = copy.copy(self)
        kept.immediate_constraints = None
        return kept

    def insert(self, table: Table) -> Any:
        """An INSERT that supports ``on_conflict_do_nothing``."""
        raise NotImplementedError

    def lease_clock(
        self, now: datetime, lease: timedelta
    ) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
        """``(now, now + lease)`` for a turn lease, on one clock for every client. SQLite's
        clients share a machine, and so its clock: the caller's ``now``."""
        return literal(now, UTCDateTime()), literal(now + lease, UTCDateTime())

    def new_uuid(self) -> ColumnElement[Any]:
        """A fresh version-4 UUID made by the database, for rows copied inside it."""
        raise NotImplementedError

    def utc_day(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """The UTC calendar day of a timestamp column, for grouping (a ``date`` on
        PostgreSQL, ``'YYYY-MM-DD'`` text on SQLite; :func:`agentledger.domain.time.as_day`
        reads both)."""
        raise NotImplementedError

    async def append(
        self,
        statements: Statements,
        db: Callable[[], AsyncSession],
        session_id: uuid.UUID,
        rows: Sequence[NewRow],
        *,
        user_id: str | None,
        now: datetime,
        create: SessionSpec | None,
    ) -> int | None:
        """Append ``rows`` after the session's last message; the seq before the first, or
        ``None`` (nothing written) when the session is missing or not ``user_id``'s. ``db``
        makes the unit of work's ``AsyncSession`` on first use: a strategy that sends its
        statement through ``statements`` (the fast path) never builds one."""
        raise NotImplementedError

    async def lock_rows(
        self, db: AsyncSession, chosen: Select[Any], columns: Sequence[ColumnElement[Any]]
    ) -> Sequence[Any]:
        """``columns`` of the sessions ``chosen`` selects, locked for this transaction."""
        raise NotImplementedError

    def metadata_filter(self, count: int) -> tuple[ColumnElement[bool], ...]:
        """Conditions for a listing filtered on ``count`` top-level metadata values."""
        raise NotImplementedError

    def metadata_params(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def search(self, terms: SearchTerms) -> tuple[ColumnElement[bool], ColumnElement[float]]:
        """``(matches, rank)`` of a message for the query ``terms``."""
        raise NotImplementedError

    @property
    def confined_query(self) -> TextClause | None:
        """Whether row-level security hides other tenants' rows from this role now."""
        return None

    @cache  # noqa: B019 - one strategy object per dialect, kept for the process
    def list_query(
        self,
        *,
        after: bool,
        agent: bool,
        meta_keys: int,
        with_archived: bool,
        framework: bool = False,
        title: bool = False,
    ) -> Select[Any]:
        """The listing statement of this shape (built once)."""
        return list_query(
            after=after,
            agent=agent,
            framework=framework,
            with_archived=with_archived,
            metadata_conditions=self.metadata_filter(meta_keys) if meta_keys else (),
            title=title,
        )


class PostgreSQL(Dialect):
    name = "postgresql"
    autocommit_statements = True
    tenant_scope = text(f"SELECT set_config('{TENANT_SETTING}', :tenant, true)")
    immediate_constraints = text("SET CONSTRAINTS ALL IMMEDIATE")
    time_partitions = True

    def lease_clock(
        self, now: datetime, lease: timedelta
    ) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
        """The server's clock: application hosts' clocks may disagree by more than a lease,
        which would let one host take a turn another still holds."""
        server = func.clock_timestamp()
        return server, server + literal(lease, Interval())

    def insert(self, table: Table) -> Any:
        return pg_insert(table)

    def utc_day(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.date(func.timezone("UTC", column))

    def new_uuid(self) -> ColumnElement[Any]:
        return func.gen_random_uuid()

    async def append(
        self,
        statements: Statements,
        db: Callable[[], AsyncSession],
        session_id: uuid.UUID,
        rows: Sequence[NewRow],
        *,
        user_id: str | None,
        now: datetime,
        create: SessionSpec | None,
    ) -> int | None:
        params: dict[str, Any] = {
            "sid": session_id,
            "n": len(rows),
            "now": now,
            "ids": [row.id for row in rows],
            "roles": [row.role for row in rows],
            "contents": [escape_nul(row.content) for row in rows],
            "tool_calls": [
                None if row.tool_calls_json is None else escape_nul_in_json(row.tool_calls_json)
                for row in rows
            ],
            "tool_call_ids": [
                None if row.tool_call_id is None else escape_nul(row.tool_call_id) for row in rows
            ],
            "item_types": [row.item_type for row in rows],
            "items": [row.item_json for row in rows],
        }
        if create is not None:
            params.update(
                uid=create.user_id,
                agent_name=create.agent_name,
                name=create.name,
                framework=create.framework,
            )
        elif user_id is not None:
            params["uid"] = user_id
        statement = pg_append_statement(create=create is not None, owned=user_id is not None)
        base: int | None = await statements.scalar(statement, params)
        return base

    async def lock_rows(
        self, db: AsyncSession, chosen: Select[Any], columns: Sequence[ColumnElement[Any]]
    ) -> Sequence[Any]:
        statement = select(*columns).where(_sessions.c.id.in_(chosen.scalar_subquery()))
        return list(await db.execute(statement.with_for_update()))

    def metadata_filter(self, count: int) -> tuple[ColumnElement[bool], ...]:
        # One jsonb containment, which a GIN index can serve; the filter is a bound parameter.
        contains = _sessions.c["metadata"].bool_op("@>")(
            bindparam("meta_filter", type_=NulSafeJSON())
        )
        return (contains,)

    def metadata_params(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        return {"meta_filter": dict(metadata)}

    def search(self, terms: SearchTerms) -> tuple[ColumnElement[bool], ColumnElement[float]]:
        query = func.websearch_to_tsquery(
            literal_column(f"'{SEARCH_CONFIG}'::regconfig"), bindparam("query", terms.text)
        )
        matches = _messages.c.search_vector.op("@@")(query)
        return matches, func.ts_rank(_messages.c.search_vector, query, type_=REAL)

    @property
    def confined_query(self) -> TextClause | None:
        return _CONFINED


_CONFINED = text("SELECT row_security_active('agent_sessions'::regclass)")


class SQLite(Dialect):
    name = "sqlite"
    autocommit_statements = False
    tenant_scope = None

    def insert(self, table: Table) -> Any:
        return sqlite_insert(table)

    def utc_day(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        # Stored as naive UTC text ("YYYY-MM-DD HH:MM:SS..."): its date is UTC's.
        return func.date(column)

    def new_uuid(self) -> ColumnElement[Any]:
        return _SQLITE_NEW_UUID

    async def append(
        self,
        statements: Statements,
        db: Callable[[], AsyncSession],
        session_id: uuid.UUID,
        rows: Sequence[NewRow],
        *,
        user_id: str | None,
        now: datetime,
        create: SessionSpec | None,
    ) -> int | None:
        count = len(rows)
        allocate: Any
        if create is not None:
            allocate = (
                sqlite_insert(_sessions)
                .values(
                    id=session_id,
                    user_id=create.user_id,
                    agent_name=create.agent_name,
                    name=create.name,
                    framework=create.framework,
                    metadata={},
                    created_at=now,
                    updated_at=now,
                    last_seq=count,
                )
                .on_conflict_do_update(
                    index_elements=[_sessions.c.id],
                    set_={"last_seq": _sessions.c.last_seq + count, "updated_at": now},
                    where=_sessions.c.user_id == create.user_id,
                )
                .returning(_sessions.c.last_seq - count)
            )
        else:
            allocate = (
                update(_sessions)
                .where(_sessions.c.id == session_id)
                .values(last_seq=_sessions.c.last_seq + count, updated_at=now)
                .returning(_sessions.c.last_seq - count)
            )
            if user_id is not None:
                allocate = allocate.where(_sessions.c.user_id == user_id)
        session = db()
        base: int | None = (await session.execute(allocate)).scalar_one_or_none()
        if base is None:
            return None
        await session.execute(
            _SQLITE_INSERT_MESSAGE,
            [
                {
                    "session_id": session_id,
                    "seq": base + offset,
                    "id": row.id,
                    "role": row.role,
                    "content": row.content,
                    "tool_calls": row.tool_calls_json,
                    "tool_call_id": row.tool_call_id,
                    "item_type": row.item_type,
                    "item": row.item_json,
                    "created_at": now,
                }
                for offset, row in enumerate(rows, start=1)
            ],
        )
        return base

    async def lock_rows(
        self, db: AsyncSession, chosen: Select[Any], columns: Sequence[ColumnElement[Any]]
    ) -> Sequence[Any]:
        result = await db.execute(
            update(_sessions)
            .where(_sessions.c.id.in_(chosen.scalar_subquery()))
            .values(last_seq=_sessions.c.last_seq)
            .returning(*columns)
        )
        return list(result)

    def metadata_filter(self, count: int) -> tuple[ColumnElement[bool], ...]:
        return tuple(_sqlite_metadata_match(index) for index in range(count))

    def metadata_params(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for index, (key, value) in enumerate(metadata.items()):
            if "\x00" in key or (isinstance(value, str) and "\x00" in value):
                raise InvalidInputError(
                    "SQLite's JSON functions end text at U+0000, so a metadata filter key "
                    "or value holding it cannot match there; filter on another key "
                    "(PostgreSQL compares it exactly)"
                )
            kind, atom = _sqlite_json_scalar(value)
            params[f"meta_key_{index}"] = key
            params[f"meta_kind_{index}"] = kind
            params[f"meta_value_{index}"] = atom
        return params

    def search(self, terms: SearchTerms) -> tuple[ColumnElement[bool], ColumnElement[float]]:
        return _like_match(terms), _like_rank(terms)


# -- SQLite's pieces ------------------------------------------------------------------------------

_SQLITE_INSERT_MESSAGE: Insert = insert(_messages).values(
    session_id=bindparam("session_id", type_=_messages.c.session_id.type),
    tool_calls=bindparam("tool_calls", type_=Text),
    item=bindparam("item", type_=Text),
)

# A random version-4 UUID in the format SQLAlchemy stores ``Uuid`` in on SQLite (32 lowercase hex
# digits), for rows copied inside the database: SQLite has no uuid function.
_SQLITE_NEW_UUID: ColumnElement[str] = literal_column(
    "lower(hex(randomblob(4)) || hex(randomblob(2)) || '4' || substr(hex(randomblob(2)), 2) "
    "|| substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) "
    "|| hex(randomblob(6)))"
)


def _sqlite_metadata_match(index: int) -> ColumnElement[bool]:
    """The metadata object has key ``:meta_key_<index>`` with a JSON value of kind
    ``:meta_kind_<index>`` equal to ``:meta_value_<index>``; every part is a bound parameter.

    ``json_each`` rather than ``json_extract``: a JSON path cannot address every key (a key
    holding a double quote has no path), while ``json_each`` compares the key as a value.
    """
    # Metadata damaged outside agentledger (not JSON) matches nothing instead of failing the
    # whole listing: json_each would raise on it.
    valid = case(
        (func.json_valid(_sessions.c["metadata"]), _sessions.c["metadata"]),
        else_=literal_column("'{}'"),
    )
    entries = func.json_each(valid).table_valued("key", "type", "atom", "fullkey")
    kind = case((entries.c.type.in_(("integer", "real")), "number"), else_=entries.c.type)
    # SQLite's JSON functions end text at U+0000, so "pro\u0000-trial" would read as "pro" (and
    # a key "plan\u0000x" as "plan"). A filter never holds U+0000 (metadata_params refuses it),
    # so an entry whose key or value does is no match: found in the JSON text of the path and of
    # the value (json_extract of two paths returns JSON, escapes intact).
    raw_value = func.json_extract(valid, entries.c.fullkey, entries.c.fullkey)
    return (
        select(entries.c.key)
        .where(
            entries.c.key == bindparam(f"meta_key_{index}", type_=Text),
            kind == bindparam(f"meta_kind_{index}", type_=Text),
            entries.c.atom.is_(bindparam(f"meta_value_{index}")),
            ~_holds_escaped_nul(entries.c.fullkey),
            ~_holds_escaped_nul(raw_value),
        )
        .exists()
    )


_BACKSLASH_PAIR = literal("\\\\", Text)  # an escaped backslash in JSON text: \\
_ESCAPED_NUL = literal("\\u0000", Text)  # U+0000 in JSON text: \u0000


def _holds_escaped_nul(json_text: ColumnElement[Any]) -> ColumnElement[bool]:
    """JSON text holds U+0000 (``\\u0000`` once escaped backslashes are set aside, so that a
    literal backslash followed by ``u0000`` does not count)."""
    return func.instr(func.replace(json_text, _BACKSLASH_PAIR, ""), _ESCAPED_NUL) > 0


def _sqlite_json_scalar(value: Any) -> tuple[str, Any]:
    """The ``json_each`` kind and atom a JSON scalar has on SQLite."""
    if isinstance(value, bool):
        return ("true" if value else "false"), int(value)
    if isinstance(value, (int, float)):
        return "number", value
    return "text", value


def _contains(term: str) -> ColumnElement[bool]:
    return _messages.c.content.like(like_pattern(term), escape="\\")


def _like_match(terms: SearchTerms) -> ColumnElement[bool]:
    alternatives = []
    for group in terms.groups:
        conditions = [_contains(term) for term in group.include]
        conditions.extend(~_contains(term) for term in group.exclude)
        alternatives.append(and_(*conditions) if conditions else false())
    return or_(*alternatives)


def _like_rank(terms: SearchTerms) -> ColumnElement[float]:
    """Occurrences of the wanted terms (ASCII case-insensitive, as LIKE), as a float."""
    lowered = func.lower(_messages.c.content)
    counts: list[ColumnElement[Any]] = [
        (func.length(lowered) - func.length(func.replace(lowered, ascii_lower(term), "")))
        / len(term)
        for term in terms.wanted
    ]
    total: ColumnElement[Any] = counts[0] if counts else literal_column("0")
    for count in counts[1:]:
        total = total + count
    return sql_cast(total, REAL)


_DIALECTS: dict[str, Dialect] = {"postgresql": PostgreSQL(), "sqlite": SQLite()}


def dialect_for(name: str) -> Dialect:
    """The strategy of the SQLAlchemy dialect ``name`` (``postgresql`` or ``sqlite``)."""
    return _DIALECTS[name]
