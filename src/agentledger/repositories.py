"""Queries and statements over agentledger's tables. Repositories never commit.

The two hot paths of an agent loop, *append a turn* and *read the tail*, are one round trip each:
on PostgreSQL the append is a single statement that locks the session row, allocates a
contiguous range of sequence numbers and inserts every row from column arrays (``unnest``), so
its cost does not grow with the batch size in bind parameters (asyncpg allows at most 32,767 per
statement). SQLite, which has no arrays and no network round trip, runs the same steps as two
statements inside the unit of work's transaction. A batch larger than PostgreSQL accepts in one
statement is appended in consecutive parts in the caller's transaction (see ``append``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Text,
    TextClause,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .encoding import DamagedJSON, escape_nul, escape_nul_in_json, statement_runs
from .errors import InvalidInputError, referenced_error_from
from .fastpath import DriverStatements
from .models import batches_table, messages_table, sessions_table, usage_table
from .records import MessageRecord, SessionRecord, SessionSummary, Usage
from .types import NulSafeJSON, NulSafeText, UTCDateTime

_sessions = sessions_table
_messages = messages_table
_batches = batches_table
_usage = usage_table

logger = logging.getLogger("agentledger")


def intact_items(session_id: uuid.UUID, rows: Iterable[Any]) -> list[Any]:
    """The items of ``(item, seq)`` rows, leaving out (with a warning) those whose stored JSON
    was damaged outside agentledger: one bad row never makes a session unreadable."""
    items = []
    for item, seq in rows:
        if isinstance(item, DamagedJSON):
            warn_damaged(session_id, seq, item)
        else:
            items.append(item)
    return items


def _damaged(session_id: uuid.UUID, row: Any) -> bool:
    """Whether a history row holds damaged JSON (logged when it does)."""
    for value in (row.item, row.tool_calls):
        if isinstance(value, DamagedJSON):
            warn_damaged(session_id, row.seq, value)
            return True
    return False


def warn_damaged(session_id: uuid.UUID, seq: int | None, damage: DamagedJSON) -> None:
    """Log a damaged message by session and seq (never its content)."""
    logger.warning(
        "agentledger: message seq %s of session %s was left out: its stored JSON is %s; "
        "repair or delete that row",
        seq,
        session_id,
        damage.reason,
    )


@dataclass(frozen=True, slots=True)
class NewRow:
    """A validated message ready to insert; JSON values are already encoded as text."""

    id: uuid.UUID
    role: str
    content: str
    tool_calls_json: str | None
    tool_call_id: str | None
    item_type: str
    item_json: str
    #: Bytes the row takes in an append statement (``encoding.check_message_size``).
    size: int


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """What a session is created with when an append finds it missing (SDK first write);
    ``name``: the name it is opened by (see :mod:`agentledger.naming`)."""

    user_id: str
    agent_name: str
    name: str | None = None


# One statement: lock + allocate (UPDATE ... RETURNING) and insert all rows from arrays.
_PG_APPEND = """
WITH s AS (
    {allocate}
), ins AS (
    INSERT INTO conversation_messages
        (session_id, seq, id, role, content, tool_calls, tool_call_id, item_type, item, created_at)
    SELECT CAST(:sid AS uuid), s.base + r.ord, r.id, r.role, r.content, CAST(r.tool_calls AS jsonb),
           r.tool_call_id, r.item_type, CAST(r.item AS json), CAST(:now AS timestamptz)
    FROM s, unnest(CAST(:ids AS uuid[]), CAST(:roles AS text[]), CAST(:contents AS text[]),
                   CAST(:tool_calls AS text[]), CAST(:tool_call_ids AS text[]),
                   CAST(:item_types AS text[]), CAST(:items AS text[]))
         WITH ORDINALITY AS r(id, role, content, tool_calls, tool_call_id, item_type, item, ord)
)
SELECT s.base FROM s
"""

_PG_ALLOCATE = """
    UPDATE agent_sessions
    SET last_seq = last_seq + CAST(:n AS bigint), updated_at = CAST(:now AS timestamptz)
    WHERE id = CAST(:sid AS uuid) {owner}
    RETURNING last_seq - CAST(:n AS bigint) AS base
"""

_PG_ALLOCATE_OR_CREATE = """
    INSERT INTO agent_sessions
        (id, user_id, agent_name, name, metadata, created_at, updated_at, last_seq)
    VALUES (CAST(:sid AS uuid), :uid, :agent_name, :name, '{}', CAST(:now AS timestamptz),
            CAST(:now AS timestamptz), CAST(:n AS bigint))
    ON CONFLICT (id) DO UPDATE
        SET last_seq = agent_sessions.last_seq + CAST(:n AS bigint),
            updated_at = CAST(:now AS timestamptz)
        WHERE agent_sessions.user_id = :uid
    RETURNING last_seq - CAST(:n AS bigint) AS base
"""

_PG_OWNER = "AND user_id = :uid"


# Hot-path statements are built once and reused: building a Core statement and computing its
# cache key on every call cost more than the round trip itself (see docs/performance.md).


@cache
def pg_append_statement(*, create: bool, owned: bool) -> TextClause:
    """The single-statement append: ``create`` makes a missing session (owned by ``:uid``),
    ``owned`` only appends to a session of ``:uid``."""
    if create:
        allocate = _PG_ALLOCATE_OR_CREATE
    else:
        allocate = _PG_ALLOCATE.format(owner=_PG_OWNER if owned else "")
    return text(_PG_APPEND.format(allocate=allocate))


@cache
def items_query(*, latest: bool, owned: bool) -> Select[tuple[Any, int]]:
    """``(item, seq)`` of ``:session_id`` in order (``latest``: the newest ``:limit``, newest
    first); ``owned``: only while the session belongs to ``:user_id``."""
    query = select(_messages.c.item, _messages.c.seq).where(
        _messages.c.session_id == bindparam("session_id")
    )
    if owned:
        query = query.where(
            select(_sessions.c.id)
            .where(
                _sessions.c.id == bindparam("session_id"),
                _sessions.c.user_id == bindparam("user_id"),
            )
            .exists()
        )
    if latest:
        return query.order_by(_messages.c.seq.desc()).limit(bindparam("limit"))
    return query.order_by(_messages.c.seq)


@cache
def _session_query(*, owned: bool) -> Select[Any]:
    query = select(_sessions).where(_sessions.c.id == bindparam("session_id"))
    if owned:
        query = query.where(_sessions.c.user_id == bindparam("user_id"))
    return query


_HISTORY_QUERY = (
    # Every column but the search vector (a tsvector as large as the text, never read here).
    select(*(column for column in _messages.c if column.key != "search_vector"))
    .where(
        _messages.c.session_id == bindparam("session_id"), _messages.c.seq <= bindparam("last_seq")
    )
    .order_by(_messages.c.seq)
)

_OWNER_QUERY = select(_sessions.c.user_id).where(_sessions.c.id == bindparam("session_id"))


#: How many characters of the first user message a listing shows for an untitled session.
TITLE_PREVIEW_CHARS = 80

# The start of a session's first user message, read in the listing's own statement through the
# (session_id, seq) primary key. Twice the preview plus one: on PostgreSQL U+0000 is stored as two
# characters, so this prefix always holds more than TITLE_PREVIEW_CHARS real characters when
# the message is longer than the preview.
_FIRST_USER_TEXT = type_coerce(
    select(func.substr(_messages.c.content, 1, 2 * TITLE_PREVIEW_CHARS + 1))
    .where(_messages.c.session_id == _sessions.c.id, _messages.c.role == "user")
    .order_by(_messages.c.seq)
    .limit(1)
    .scalar_subquery(),
    NulSafeText(),
).label("first_user_text")


def _sqlite_metadata_match(index: int) -> ColumnElement[bool]:
    """SQLite: the metadata object has key ``:meta_key_<index>`` with a JSON value of kind
    ``:meta_kind_<index>`` equal to ``:meta_value_<index>``; every part is a bound parameter.

    ``json_each`` rather than ``json_extract``: a JSON path cannot address every key (a key
    holding a double quote has no path), while ``json_each`` compares the key as a value.
    """
    entries = func.json_each(_sessions.c["metadata"]).table_valued("key", "type", "atom")
    kind = case((entries.c.type.in_(("integer", "real")), "number"), else_=entries.c.type)
    return (
        select(entries.c.key)
        .where(
            entries.c.key == bindparam(f"meta_key_{index}", type_=Text),
            kind == bindparam(f"meta_kind_{index}", type_=Text),
            entries.c.atom.is_(bindparam(f"meta_value_{index}")),
        )
        .exists()
    )


def _sqlite_json_scalar(value: Any) -> tuple[str, Any]:
    """The ``json_each`` kind and atom a JSON scalar has on SQLite."""
    if isinstance(value, bool):
        return ("true" if value else "false"), int(value)
    if isinstance(value, (int, float)):
        return "number", value
    return "text", value


_CONTROL_TO_SPACE = dict.fromkeys((*range(0x20), 0x7F), " ")


def _title_of(explicit: str | None, first_user_text: str | None) -> str | None:
    """A session picker's label: the explicit title, else the first user message's start."""
    if explicit is not None:
        return explicit
    if first_user_text is None:
        return None
    # One line for a picker: whitespace runs and control characters (U+0000 included) become
    # one space. (SQLite's string functions stop at U+0000, so there the preview ends at it.)
    preview = " ".join(first_user_text.translate(_CONTROL_TO_SPACE).split())
    if len(preview) > TITLE_PREVIEW_CHARS:
        preview = preview[: TITLE_PREVIEW_CHARS - 1].rstrip() + "…"
    return preview or None


# A random version-4 UUID in the format SQLAlchemy stores ``Uuid`` in on SQLite (32 lowercase hex
# digits), for rows copied inside the database: SQLite has no uuid function.
_SQLITE_NEW_UUID: ColumnElement[str] = literal_column(
    "lower(hex(randomblob(4)) || hex(randomblob(2)) || '4' || substr(hex(randomblob(2)), 2) "
    "|| substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) "
    "|| hex(randomblob(6)))"
)


@dataclass(frozen=True, slots=True)
class LockedSession:
    """A session row as read under its lock (:meth:`SessionRepository.lock_state`)."""

    user_id: str
    agent_name: str
    metadata: dict[str, Any]
    title: str | None
    trimmed_seq: int
    last_seq: int


@cache
def _list_query(
    *,
    after: bool,
    agent: bool = False,
    meta_keys: int = 0,
    postgres: bool = False,
    with_archived: bool = False,
) -> Select[Any]:
    """A page of ``:user_id``'s sessions with their picker titles, in one statement.

    ``agent``: only ``:agent_name``'s; ``meta_keys``: only sessions whose metadata has those
    top-level values (PostgreSQL: ``metadata @> :meta_filter``, a jsonb containment a GIN index
    can serve; SQLite: one ``json_each`` test per key). Keys and values are always bound.
    """
    query = (
        select(_sessions, _FIRST_USER_TEXT)
        .where(_sessions.c.user_id == bindparam("user_id"))
        .order_by(_sessions.c.updated_at.desc(), _sessions.c.id.desc())
        .limit(bindparam("limit"))
    )
    if agent:
        query = query.where(_sessions.c.agent_name == bindparam("agent_name"))
    if not with_archived:
        query = query.where(_sessions.c.archived_at.is_(None))
    if meta_keys and postgres:
        query = query.where(
            _sessions.c["metadata"].bool_op("@>")(bindparam("meta_filter", type_=NulSafeJSON()))
        )
    elif meta_keys:
        query = query.where(*(_sqlite_metadata_match(index) for index in range(meta_keys)))
    if after:
        query = query.where(
            tuple_(_sessions.c.updated_at, _sessions.c.id)
            < tuple_(
                bindparam("after_updated_at", type_=UTCDateTime),
                bindparam("after_id", type_=_sessions.c.id.type),
            )
        )
    return query


SessionSource = AsyncSession | Callable[[], AsyncSession]


class _Repository:
    """Holds the unit of work's session, or a callable that makes it on first use."""

    def __init__(self, session: SessionSource) -> None:
        self._session_source = session

    @property
    def _session(self) -> AsyncSession:
        source = self._session_source
        return source if isinstance(source, AsyncSession) else source()


class SessionRepository(_Repository):
    """Session rows: create, read with history, list, delete, find expired."""

    async def create(
        self,
        *,
        session_id: uuid.UUID,
        user_id: str,
        agent_name: str,
        metadata: dict[str, Any],
        now: datetime,
        title: str | None = None,
        created_at: datetime | None = None,
        archived_at: datetime | None = None,
        start_seq: int = 0,
        if_missing: bool = False,
        name: str | None = None,
    ) -> bool:
        """Insert a session row. An imported session keeps its ``created_at``/``archived_at``
        and starts after ``start_seq`` (its first messages were trimmed at the source).
        ``if_missing``: do nothing when the id (or the user's ``name``) is taken (by a
        concurrent creator, or by a row that row-level security hides), rather than fail; the
        caller looks again. Whether a row was inserted."""
        values = {
            "id": session_id,
            "user_id": user_id,
            "agent_name": agent_name,
            "metadata": metadata,
            "title": title,
            "created_at": now if created_at is None else created_at,
            "updated_at": now,
            "archived_at": archived_at,
            "last_seq": start_seq,
            "trimmed_seq": start_seq,
            "name": name,
        }
        if not if_missing:
            await self._session.execute(insert(_sessions).values(values))
            return True
        postgres = self._session.get_bind().dialect.name == "postgresql"
        upsert = (pg_insert if postgres else sqlite_insert)(_sessions).values(values)
        result = await self._session.execute(
            upsert.on_conflict_do_nothing().returning(_sessions.c.id)
        )
        return result.first() is not None

    async def create_missing(self, session_id: uuid.UUID, spec: SessionSpec, now: datetime) -> bool:
        """Create the empty session ``spec`` describes unless the id (or the user's name) is
        taken already; whether it was created."""
        return await self.create(
            session_id=session_id,
            user_id=spec.user_id,
            agent_name=spec.agent_name,
            metadata={},
            now=now,
            if_missing=True,
            name=spec.name,
        )

    async def find_named(
        self, user_id: str, name: str, preferred_id: uuid.UUID
    ) -> uuid.UUID | None:
        """The session of ``user_id`` opened by ``name``: the one recorded with that name, else
        one of the user's at ``preferred_id`` (named before names were recorded)."""
        result = await self._session.execute(
            select(_sessions.c.id)
            .where(
                _sessions.c.user_id == user_id,
                (_sessions.c.name == name) | (_sessions.c.id == preferred_id),
            )
            .order_by(case((_sessions.c.name == name, 0), else_=1))
            .limit(1)
        )
        found: uuid.UUID | None = result.scalar_one_or_none()
        return found

    async def confined(self) -> bool:
        """Whether row-level security hides other tenants' sessions from this role now
        (PostgreSQL, policies switched on, a role they bind); always False on SQLite."""
        if not self._postgres:
            return False
        result = await self._session.execute(
            text("SELECT row_security_active('agent_sessions'::regclass)")
        )
        return bool(result.scalar_one())

    async def owner_of(self, session_id: uuid.UUID) -> str | None:
        """The ``user_id`` owning the session, or ``None`` when it does not exist."""
        result = await self._session.execute(_OWNER_QUERY, {"session_id": session_id})
        return result.scalar_one_or_none()

    async def lock(self, session_id: uuid.UUID, user_id: str | None) -> int | None:
        """Lock the session row for this transaction; return its ``last_seq`` (None: missing)."""
        statement = (
            update(_sessions)
            .where(_sessions.c.id == session_id)
            .values(last_seq=_sessions.c.last_seq)
            .returning(_sessions.c.last_seq)
        )
        if user_id is not None:
            statement = statement.where(_sessions.c.user_id == user_id)
        last_seq: int | None = (await self._session.execute(statement)).scalar_one_or_none()
        return last_seq

    async def get(self, session_id: uuid.UUID, user_id: str | None) -> SessionRecord | None:
        """The session and the prefix of its history up to the ``last_seq`` read with it."""
        query = _session_query(owned=user_id is not None)
        params: dict[str, Any] = {"session_id": session_id, "user_id": user_id}
        row = (await self._session.execute(query, params)).one_or_none()
        if row is None:
            return None
        message_rows = await self._session.execute(
            _HISTORY_QUERY, {"session_id": session_id, "last_seq": row.last_seq}
        )
        messages = tuple(
            MessageRecord(
                seq=m.seq,
                role=m.role,
                content=m.content,
                tool_calls=m.tool_calls,
                tool_call_id=m.tool_call_id,
                created_at=m.created_at,
                id=m.id,
                item_type=m.item_type,
                item=m.item,
            )
            for m in message_rows
            if not _damaged(session_id, m)
        )
        return SessionRecord(
            id=row.id,
            user_id=row.user_id,
            agent_name=row.agent_name,
            metadata=row.metadata,
            created_at=row.created_at,
            updated_at=row.updated_at,
            messages=messages,
            title=row.title,
            name=row.name,
        )

    async def list_for_user(
        self,
        user_id: str,
        *,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
        agent_name: str | None = None,
        metadata: dict[str, Any] | None = None,
        include_archived: bool = False,
    ) -> list[SessionSummary]:
        """One keyset-paginated query, most recently updated first (ties broken by id),
        optionally only ``agent_name``'s sessions and those whose metadata has the top-level
        values of ``metadata`` (JSON scalars, compared for equality)."""
        params: dict[str, Any] = {"user_id": user_id, "limit": limit}
        if after is not None:
            params["after_updated_at"], params["after_id"] = after
        if agent_name is not None:
            params["agent_name"] = agent_name
        postgres = self._postgres
        if metadata and postgres:
            params["meta_filter"] = metadata
        elif metadata:
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
        query = _list_query(
            after=after is not None,
            agent=agent_name is not None,
            meta_keys=len(metadata or ()),
            postgres=postgres,
            with_archived=include_archived,
        )
        rows = await self._session.execute(query, params)
        return [
            SessionSummary(
                id=row.id,
                user_id=row.user_id,
                agent_name=row.agent_name,
                metadata=row.metadata,
                created_at=row.created_at,
                updated_at=row.updated_at,
                # Sequences are gap-free from trimmed_seq + 1 to last_seq.
                message_count=row.last_seq - row.trimmed_seq,
                title=_title_of(row.title, row.first_user_text),
                archived_at=row.archived_at,
                name=row.name,
            )
            for row in rows
        ]

    async def delete(self, session_id: uuid.UUID, user_id: str | None) -> bool:
        """Delete the session (its history goes by cascade); ``SessionReferencedError`` when
        another table's foreign key keeps it."""
        statement = delete(_sessions).where(_sessions.c.id == session_id)
        if user_id is not None:
            statement = statement.where(_sessions.c.user_id == user_id)
        try:
            result = await self._session.execute(statement.returning(_sessions.c.id))
        except IntegrityError as error:
            referenced = referenced_error_from(error, (session_id,))
            if referenced is None:
                raise
            raise referenced from error
        return result.first() is not None

    # -- lifecycle: fork, metadata, title, erasure -------------------------------------------

    @property
    def _postgres(self) -> bool:
        return self._session.get_bind().dialect.name == "postgresql"

    async def lock_state(self, session_id: uuid.UUID, user_id: str | None) -> LockedSession | None:
        """Lock the session row for this transaction, as :meth:`lock` does, and return it
        (``None``: missing or not ``user_id``'s)."""
        statement = (
            update(_sessions)
            .where(_sessions.c.id == session_id)
            .values(last_seq=_sessions.c.last_seq)
            .returning(
                _sessions.c.user_id,
                _sessions.c.agent_name,
                _sessions.c["metadata"],
                _sessions.c.title,
                _sessions.c.trimmed_seq,
                _sessions.c.last_seq,
            )
        )
        if user_id is not None:
            statement = statement.where(_sessions.c.user_id == user_id)
        row = (await self._session.execute(statement)).one_or_none()
        if row is None:
            return None
        user, agent_name, metadata, title, trimmed_seq, last_seq = row
        return LockedSession(user, agent_name, metadata, title, int(trimmed_seq), int(last_seq))

    async def create_copy(
        self,
        source: LockedSession,
        *,
        session_id: uuid.UUID,
        title: str | None,
        last_seq: int,
        now: datetime,
    ) -> None:
        """A new session like ``source`` (owner, agent, metadata) whose history ends at
        ``last_seq``; the caller copies the messages (:meth:`MessageRepository.copy`)."""
        await self._session.execute(
            insert(_sessions).values(
                id=session_id,
                user_id=source.user_id,
                agent_name=source.agent_name,
                metadata=source.metadata,
                title=title,
                created_at=now,
                updated_at=now,
                last_seq=last_seq,
                trimmed_seq=0,
            )
        )

    async def set_metadata(
        self, session_id: uuid.UUID, metadata: dict[str, Any], now: datetime
    ) -> None:
        """Replace the metadata; the caller holds the row's lock (:meth:`lock_state`)."""
        await self._session.execute(
            update(_sessions)
            .where(_sessions.c.id == session_id)
            .values(metadata=metadata, updated_at=now)
        )

    async def set_title(self, session_id: uuid.UUID, title: str | None, now: datetime) -> None:
        await self._session.execute(
            update(_sessions)
            .where(_sessions.c.id == session_id)
            .values(title=title, updated_at=now)
        )


class MessageRepository(_Repository):
    """Message rows: append, tail reads, pop and clear."""

    def __init__(
        self, session: SessionSource, *, postgres: bool, driver: DriverStatements | None = None
    ) -> None:
        super().__init__(session)
        self._postgres = postgres
        self._driver = driver

    def _direct(self) -> DriverStatements | None:
        """The asyncpg fast path, when this unit of work may use it right now."""
        driver = self._driver
        return driver if driver is not None and driver.active else None

    async def append(
        self,
        session_id: uuid.UUID,
        rows: Sequence[NewRow],
        *,
        user_id: str | None,
        now: datetime,
        create: SessionSpec | None = None,
    ) -> int | None:
        """Append ``rows`` after the session's last message; return the seq before the first.

        Returns ``None`` (and writes nothing) when the session is missing or not owned by
        ``user_id``; with ``create`` a missing session is created first, in the same statement.

        A batch larger than one statement can carry (``encoding.statement_runs``; PostgreSQL
        drops the connection past its message limit) goes as consecutive appends, which only
        a transaction keeps atomic and gap-free: the first one's row lock holds the session
        until the commit. An autocommit unit of work refuses such a batch before sending.
        """
        runs = statement_runs([row.size for row in rows]) or [range(0)]
        if len(runs) > 1 and self._autocommit():
            raise RuntimeError(
                f"a batch of {len(rows)} messages needs {len(runs)} statements; append it in "
                "a unit of work without autocommit, so that it stays atomic"
            )
        append = self._append_postgres if self._postgres else self._append_portable
        first: int | None = None
        for run in runs:
            base = await append(session_id, rows[run.start : run.stop], user_id, now, create)
            if base is None:  # missing or not owned: only the first run can find that
                return None
            if first is None:
                first = base
            elif base != first + run.start:  # pragma: no cover - the row lock prevents it
                raise RuntimeError("a split batch was interleaved: it must run in a transaction")
        return first

    def _autocommit(self) -> bool:
        """Whether each statement commits by itself (the fast path, an AUTOCOMMIT session)."""
        if self._driver is not None:
            return True
        options = self._session.get_bind().get_execution_options()
        return options.get("isolation_level") == "AUTOCOMMIT"

    async def _append_postgres(
        self,
        session_id: uuid.UUID,
        rows: Sequence[NewRow],
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
            params["uid"] = create.user_id
            params["agent_name"] = create.agent_name
            params["name"] = create.name
        elif user_id is not None:
            params["uid"] = user_id
        statement = pg_append_statement(create=create is not None, owned=user_id is not None)
        direct = self._direct()
        if direct is not None:
            value: int | None = await direct.fetchval(statement, params)
            return value
        result = await self._session.execute(statement, params)
        base: int | None = result.scalar_one_or_none()
        return base

    async def _append_portable(
        self,
        session_id: uuid.UUID,
        rows: Sequence[NewRow],
        user_id: str | None,
        now: datetime,
        create: SessionSpec | None,
    ) -> int | None:
        count = len(rows)
        allocate: Any
        if create is not None:
            insert_session = sqlite_insert(_sessions).values(
                id=session_id,
                user_id=create.user_id,
                agent_name=create.agent_name,
                name=create.name,
                metadata={},
                created_at=now,
                updated_at=now,
                last_seq=count,
            )
            allocate = insert_session.on_conflict_do_update(
                index_elements=[_sessions.c.id],
                set_={"last_seq": _sessions.c.last_seq + count, "updated_at": now},
                where=_sessions.c.user_id == create.user_id,
            ).returning(_sessions.c.last_seq - count)
        else:
            allocate = (
                update(_sessions)
                .where(_sessions.c.id == session_id)
                .values(last_seq=_sessions.c.last_seq + count, updated_at=now)
                .returning(_sessions.c.last_seq - count)
            )
            if user_id is not None:
                allocate = allocate.where(_sessions.c.user_id == user_id)
        base: int | None = (await self._session.execute(allocate)).scalar_one_or_none()
        if base is None:
            return None
        statement = insert(_messages).values(
            session_id=bindparam("session_id", type_=_messages.c.session_id.type),
            tool_calls=bindparam("tool_calls", type_=Text),
            item=bindparam("item", type_=Text),
        )
        await self._session.execute(
            statement,
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

    async def items(
        self, session_id: uuid.UUID, limit: int | None, user_id: str | None
    ) -> list[Any]:
        """The stored items in order; with ``limit``, only the latest ``limit`` of them."""
        params: dict[str, Any] = {"session_id": session_id, "user_id": user_id, "limit": limit}
        query = items_query(latest=limit is not None, owned=user_id is not None)
        direct = self._direct()
        rows: Sequence[Any]
        if direct is not None:
            rows = await direct.fetch(query, params)
        else:
            rows = list(await self._session.execute(query, params))
        return intact_items(session_id, rows if limit is None else reversed(rows))

    async def pop(self, session_id: uuid.UUID, user_id: str | None, now: datetime) -> Any:
        """Remove the newest item and return it (``None`` when empty, missing or not owned).

        Two statements in the caller's transaction, on purpose: the UPDATE takes the row lock
        and, after waiting for a concurrent append, sees its ``last_seq``; the DELETE then runs
        with a fresh snapshot that sees the appended row. As one statement (a CTE) the DELETE
        kept the snapshot from before the wait, missed that row and broke the sequence.
        """
        allocate = (
            update(_sessions)
            .where(_sessions.c.id == session_id, _sessions.c.last_seq > _sessions.c.trimmed_seq)
            .values(last_seq=_sessions.c.last_seq - 1, updated_at=now)
            .returning(_sessions.c.last_seq + 1)
        )
        if user_id is not None:
            allocate = allocate.where(_sessions.c.user_id == user_id)
        seq = (await self._session.execute(allocate)).scalar_one_or_none()
        if seq is None:
            return None
        result = await self._session.execute(
            delete(_messages)
            .where(_messages.c.session_id == session_id, _messages.c.seq == seq)
            .returning(_messages.c.item)
        )
        item = result.scalar_one_or_none()
        if isinstance(item, DamagedJSON):
            warn_damaged(session_id, seq, item)
            return None
        return item

    async def clear(self, session_id: uuid.UUID, now: datetime) -> None:
        """Delete every message and batch record; the next append starts at seq 1 again.

        The caller holds the session row's lock (:meth:`SessionRepository.lock`).
        """
        await self._session.execute(delete(_messages).where(_messages.c.session_id == session_id))
        await self._session.execute(delete(_batches).where(_batches.c.session_id == session_id))
        await self._session.execute(
            update(_sessions)
            .where(_sessions.c.id == session_id)
            .values(last_seq=0, trimmed_seq=0, updated_at=now)
        )

    async def rewind(self, session_id: uuid.UUID, to_seq: int, now: datetime) -> None:
        """Drop every message after ``to_seq``, and the idempotency records of batches that
        reached past it (a retry of such a batch appends it again); ``last_seq := to_seq``.

        The caller holds the session row's lock (:meth:`SessionRepository.lock_state`).
        """
        await self._session.execute(
            delete(_messages).where(_messages.c.session_id == session_id, _messages.c.seq > to_seq)
        )
        await self._session.execute(
            delete(_batches).where(
                _batches.c.session_id == session_id,
                _batches.c["count"] > 0,
                _batches.c.first_seq + _batches.c["count"] - 1 > to_seq,
            )
        )
        await self._session.execute(
            update(_sessions)
            .where(_sessions.c.id == session_id)
            .values(last_seq=to_seq, updated_at=now)
        )

    async def copy(
        self, source_id: uuid.UUID, target_id: uuid.UUID, *, after_seq: int, through_seq: int
    ) -> None:
        """Copy the messages ``after_seq + 1 .. through_seq`` of ``source_id`` into
        ``target_id`` as seqs ``1 ..``, with new ids, in one INSERT ... SELECT (no rows travel
        through Python; the stored text, escapes included, is copied as it is)."""
        new_id = func.gen_random_uuid() if self._postgres else _SQLITE_NEW_UUID
        columns = ("role", "content", "tool_calls", "tool_call_id", "item_type", "item")
        rows = select(
            literal(target_id, _messages.c.session_id.type),
            _messages.c.seq - after_seq,
            new_id,
            *(_messages.c[name] for name in columns),
            _messages.c.created_at,
        ).where(
            _messages.c.session_id == source_id,
            _messages.c.seq > after_seq,
            _messages.c.seq <= through_seq,
        )
        await self._session.execute(
            insert(_messages).from_select(["session_id", "seq", "id", *columns, "created_at"], rows)
        )

    async def find_batch(
        self, session_id: uuid.UUID, key: str
    ) -> tuple[int, int, datetime, str] | None:
        """``(first_seq, count, created_at, fingerprint)`` of a batch stored under ``key``."""
        result = await self._session.execute(
            select(
                _batches.c.first_seq,
                _batches.c.count,
                _batches.c.created_at,
                _batches.c.fingerprint,
            ).where(_batches.c.session_id == session_id, _batches.c.idempotency_key == key)
        )
        row = result.one_or_none()
        if row is None:
            return None
        first_seq, count, created_at, fingerprint = row
        return int(first_seq), int(count), created_at, str(fingerprint)

    async def batch_keys(self, session_id: uuid.UUID, prefix: str) -> list[str]:
        """Idempotency keys of the session's batches that start with ``prefix`` (sorted)."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        result = await self._session.execute(
            select(_batches.c.idempotency_key)
            .where(
                _batches.c.session_id == session_id,
                _batches.c.idempotency_key.like(pattern, escape="\\"),
            )
            .order_by(_batches.c.idempotency_key)
        )
        return list(result.scalars())

    async def remember_batch(
        self,
        session_id: uuid.UUID,
        key: str,
        first_seq: int,
        count: int,
        fingerprint: str,
        now: datetime,
    ) -> None:
        await self._session.execute(
            insert(_batches).values(
                session_id=session_id,
                idempotency_key=key,
                first_seq=first_seq,
                count=count,
                fingerprint=fingerprint,
                created_at=now,
            )
        )


class UsageRepository(_Repository):
    """Token usage rows, one per agent run."""

    async def add(self, session_id: uuid.UUID, usage: Usage, now: datetime) -> None:
        await self._session.execute(
            insert(_usage).values(
                session_id=session_id,
                id=uuid.uuid4(),
                requests=usage.requests,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens,
                created_at=now,
            )
        )

    async def totals(
        self, *, session_id: uuid.UUID | None = None, user_id: str | None = None
    ) -> Usage:
        """Sum usage of one session, or of every session of a user."""
        query = select(
            func.coalesce(func.sum(_usage.c.requests), 0),
            func.coalesce(func.sum(_usage.c.input_tokens), 0),
            func.coalesce(func.sum(_usage.c.output_tokens), 0),
            func.coalesce(func.sum(_usage.c.total_tokens), 0),
        )
        if session_id is not None:
            query = query.where(_usage.c.session_id == session_id)
        if user_id is not None:
            query = query.join_from(_usage, _sessions, _sessions.c.id == _usage.c.session_id).where(
                _sessions.c.user_id == user_id
            )
        requests, input_tokens, output_tokens, total_tokens = (
            await self._session.execute(query)
        ).one()
        return Usage(int(requests), int(input_tokens), int(output_tokens), int(total_tokens))
