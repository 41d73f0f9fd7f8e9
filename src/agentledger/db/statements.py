"""Statements built once and reused.

Building a Core statement and computing its cache key on every call cost more than the round
trip itself (see docs/performance.md), so the statements the agent loop and listings run are
built here, once per shape, and the repositories pass them parameters.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    TextClause,
    bindparam,
    func,
    select,
    text,
    tuple_,
    type_coerce,
)

from agentledger.db.models import checkpoints_table, messages_table, sessions_table
from agentledger.db.types import NulSafeText, UTCDateTime
from agentledger.domain.display import TITLE_PREVIEW_CHARS

_sessions = sessions_table
_messages = messages_table
_checkpoints = checkpoints_table

# -- the append (PostgreSQL: one statement) ------------------------------------------------------

# Lock + allocate (UPDATE ... RETURNING) and insert all rows from arrays, in one statement.
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
        (id, user_id, agent_name, name, framework, metadata, created_at, updated_at, last_seq)
    VALUES (CAST(:sid AS uuid), :uid, :agent_name, :name, :framework, '{}',
            CAST(:now AS timestamptz), CAST(:now AS timestamptz), CAST(:n AS bigint))
    ON CONFLICT (id) DO UPDATE
        SET last_seq = agent_sessions.last_seq + CAST(:n AS bigint),
            updated_at = CAST(:now AS timestamptz)
        WHERE agent_sessions.user_id = :uid
    RETURNING last_seq - CAST(:n AS bigint) AS base
"""

_PG_OWNER = "AND user_id = :uid"


@cache
def pg_append_statement(*, create: bool, owned: bool) -> TextClause:
    """The single-statement append: ``create`` makes a missing session (owned by ``:uid``),
    ``owned`` only appends to a session of ``:uid``."""
    if create:
        allocate = _PG_ALLOCATE_OR_CREATE
    else:
        allocate = _PG_ALLOCATE.format(owner=_PG_OWNER if owned else "")
    return text(_PG_APPEND.format(allocate=allocate))


# -- history -------------------------------------------------------------------------------------

#: Every message column but the search vector (a tsvector as large as the text, never read).
#: The columns of a history row, in the order of :class:`MessageRecord`'s fields, so a row
#: becomes a record positionally (no per-field lookups; the session id is known already).
HISTORY_COLUMNS = tuple(
    _messages.c[name]
    for name in (
        "seq",
        "role",
        "content",
        "tool_calls",
        "tool_call_id",
        "created_at",
        "id",
        "item_type",
        "item",
    )
)


@cache
def items_query(*, latest: bool, owned: bool, compacted: bool = False) -> Select[Any]:
    """``(item, seq)`` of ``:session_id`` in order (``latest``: the newest ``:limit``, newest
    first); ``owned``: only while the session belongs to ``:user_id``; ``compacted``: only
    the messages after the newest checkpoint, whose ``upto_seq`` each row carries as a third
    column ``checkpoint_seq`` (0: none), so a session without checkpoints is one statement."""
    columns: list[Any] = [_messages.c.item, _messages.c.seq]
    query_filter = [_messages.c.session_id == bindparam("session_id")]
    if compacted:
        newest = (
            select(func.coalesce(func.max(_checkpoints.c.upto_seq), 0))
            .where(_checkpoints.c.session_id == bindparam("session_id"))
            .scalar_subquery()
        )
        columns.append(newest.label("checkpoint_seq"))
        query_filter.append(_messages.c.seq > newest)
    query = select(*columns).where(*query_filter)
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
def history_query() -> Select[Any]:
    """The messages ``:after_seq < seq <= :upto_seq`` of ``:session_id``, in order: the one
    history range read."""
    return (
        select(*HISTORY_COLUMNS)
        .where(
            _messages.c.session_id == bindparam("session_id"),
            _messages.c.seq > bindparam("after_seq"),
            _messages.c.seq <= bindparam("upto_seq"),
        )
        .order_by(_messages.c.seq)
    )


@cache
def window_query(*, latest: bool) -> Select[Any]:
    """``(item, seq)`` of ``:session_id`` with ``:after_seq < seq <= :upto_seq`` in order, or
    (``latest``) its newest ``:limit`` of them, newest first: a framework session's events as
    read with the session row (only the item, never the chat view)."""
    query = select(_messages.c.item, _messages.c.seq).where(
        _messages.c.session_id == bindparam("session_id"),
        _messages.c.seq > bindparam("after_seq"),
        _messages.c.seq <= bindparam("upto_seq"),
    )
    if latest:
        return query.order_by(_messages.c.seq.desc()).limit(bindparam("limit"))
    return query.order_by(_messages.c.seq)


@cache
def page_query(*, backward: bool, bounded: bool) -> Select[Any]:
    """Up to ``:limit`` messages of ``:session_id`` with ``:after_seq < seq`` (and, ``bounded``,
    ``seq < :before_seq``): the first ones in order, or (``backward``) the last ones, newest
    first. One range scan of the (session_id, seq) primary key."""
    query = select(*HISTORY_COLUMNS).where(
        _messages.c.session_id == bindparam("session_id"),
        _messages.c.seq > bindparam("after_seq"),
    )
    if bounded:
        query = query.where(_messages.c.seq < bindparam("before_seq"))
    order = _messages.c.seq.desc() if backward else _messages.c.seq
    return query.order_by(order).limit(bindparam("limit"))


# -- session rows --------------------------------------------------------------------------------


@cache
def session_query(*, owned: bool) -> Select[Any]:
    query = select(_sessions).where(_sessions.c.id == bindparam("session_id"))
    if owned:
        query = query.where(_sessions.c.user_id == bindparam("user_id"))
    return query


OWNER_QUERY = select(_sessions.c.user_id).where(_sessions.c.id == bindparam("session_id"))

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


#: The columns of a listing row, in the order of :class:`SessionSummary`'s fields with the
#: first user message's start after the explicit title (the picker title is made of both):
#: only what a summary shows, its message count computed by the server.
LISTING_COLUMNS = (
    _sessions.c.id,
    _sessions.c.user_id,
    _sessions.c.agent_name,
    _sessions.c.metadata,
    _sessions.c.created_at,
    _sessions.c.updated_at,
    # Sequences are gap-free from trimmed_seq + 1 to last_seq.
    (_sessions.c.last_seq - _sessions.c.trimmed_seq).label("message_count"),
    _sessions.c.title,
    _FIRST_USER_TEXT,
    _sessions.c.archived_at,
    _sessions.c.name,
    _sessions.c.framework,
)


def list_query(
    *,
    after: bool,
    agent: bool,
    with_archived: bool,
    metadata_conditions: tuple[ColumnElement[bool], ...] = (),
    framework: bool = False,
    title: bool = False,
) -> Select[Any]:
    """A page of ``:user_id``'s sessions with their picker titles, most recently updated first,
    in one statement. ``agent``: only ``:agent_name``'s; ``framework``: only sessions of
    ``:framework``; ``metadata_conditions``: the
    dialect's metadata filter (see :mod:`agentledger.db.dialect`)."""
    query = (
        select(*LISTING_COLUMNS)
        .where(_sessions.c.user_id == bindparam("user_id"))
        .order_by(_sessions.c.updated_at.desc(), _sessions.c.id.desc())
        .limit(bindparam("limit"))
    )
    if agent:
        query = query.where(_sessions.c.agent_name == bindparam("agent_name"))
    if framework:
        query = query.where(_sessions.c.framework == bindparam("framework"))
    if not with_archived:
        query = query.where(_sessions.c.archived_at.is_(None))
    if metadata_conditions:
        query = query.where(*metadata_conditions)
    if title:
        # :title_pattern is a LIKE pattern made by domain.validation.title_pattern.
        query = query.where(
            func.lower(_sessions.c.title).like(bindparam("title_pattern"), escape="\\")
        )
    if after:
        query = query.where(
            tuple_(_sessions.c.updated_at, _sessions.c.id)
            < tuple_(
                bindparam("after_updated_at", type_=UTCDateTime),
                bindparam("after_id", type_=_sessions.c.id.type),
            )
        )
    return query
