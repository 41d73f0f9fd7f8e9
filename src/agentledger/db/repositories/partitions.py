"""Time partitions of ``conversation_messages`` (PostgreSQL): what one holds, and dropping it.

A deployment that partitions the messages by ``created_at`` (docs/scaling.md) retires old
history by dropping a partition instead of deleting its rows one by one. The statements here
read the partition to plan the cut of each history it touches, and then, in one short
transaction that holds the messages table exclusively, drop it and move every touched
history's start (``trimmed_seq``) past what went, removing the few rows elsewhere that the cut
takes too. Like every repository it never commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import JSON, BigInteger, Text, Uuid, column, func, select, table, text

from agentledger.db.repositories.base import Repository
from agentledger.domain.windows import LINK_FIELDS
from agentledger.errors import InvalidInputError, UnsupportedBackendError

_PARTITIONS = text(
    """
    SELECT child.relname, space.nspname, pg_get_expr(child.relpartbound, child.oid),
           child.relkind::text
    FROM pg_inherits AS link
    JOIN pg_class AS child ON child.oid = link.inhrelid
    JOIN pg_namespace AS space ON space.oid = child.relnamespace
    WHERE link.inhparent = to_regclass('conversation_messages')
    ORDER BY child.relname
    """
)

_PARTITIONED = text(
    "SELECT relkind::text = 'p' FROM pg_class WHERE oid = to_regclass('conversation_messages')"
)

# The stretch of each history from its newest dropped row on (``lo .. hi``), for the cut:
# each item cut down to the fields the pairing rules read (never the content). LATERAL with a
# LIMIT keeps it to index lookups per history (a plain join, or a LATERAL the planner may
# flatten into one, lets it hash the whole table).
_WINDOWS = text(
    """
    SELECT w.session_id, m.seq,
           (SELECT json_object_agg(field.key, field.value)
            FROM json_each(CASE WHEN json_typeof(m.item) = 'object' THEN m.item END) AS field
            WHERE field.key = ANY(CAST(:fields AS text[]))) AS item
    FROM unnest(CAST(:ids AS uuid[]), CAST(:los AS bigint[]), CAST(:his AS bigint[]))
         AS w(session_id, lo, hi)
    CROSS JOIN LATERAL (
        SELECT seq, item FROM conversation_messages
        WHERE session_id = w.session_id AND seq BETWEEN w.lo AND w.hi
        ORDER BY seq LIMIT w.hi - w.lo + 1
    ) AS m
    ORDER BY w.session_id, m.seq
    """
).columns(column("session_id", Uuid()), column("seq", BigInteger()), column("item", JSON()))

# One array parameter, however many histories (a list of bound ids would outgrow the driver's
# 32,767 parameters).
_GUARDS = text(
    """
    SELECT id, trimmed_seq, last_seq, xmin::text FROM agent_sessions
    WHERE id = ANY(CAST(:ids AS uuid[]))
    """
).columns(
    column("id", Uuid()),
    column("trimmed_seq", BigInteger()),
    column("last_seq", BigInteger()),
    column("xmin", Text()),
)

_MOVE_STARTS = text(
    """
    UPDATE agent_sessions AS s
    SET trimmed_seq = GREATEST(s.trimmed_seq, LEAST(c.cut, s.last_seq))
    FROM unnest(CAST(:ids AS uuid[]), CAST(:cuts AS bigint[])) AS c(id, cut)
    WHERE s.id = c.id
    """
)

# Run once per history that has rows outside the partition up to its cut (a few: outputs whose
# calls went, rows dated out of order), so each is an index lookup.
_DELETE_CUT = text("DELETE FROM conversation_messages WHERE session_id = :id AND seq <= :cut")


@dataclass(frozen=True, slots=True)
class Touched:
    """A history the partition holds rows of: the newest of them (``through``) and how many."""

    session_id: uuid.UUID
    through: int
    rows: int


@dataclass(frozen=True, slots=True)
class Guard:
    """What a history looked like when its cut was planned; a cut is applied only to a
    history that still looks so (else it is planned again under the lock). ``version`` is
    the session row's ``xmin``: every write to a history updates its session's row, so a
    rewind and a refill to the same length change it too."""

    trimmed_seq: int
    last_seq: int
    version: str


@dataclass(frozen=True, slots=True)
class Partition:
    """A month partition of ``conversation_messages`` and the schema it lives in."""

    name: str
    schema: str


class PartitionRepository(Repository):
    """Reads and drops time partitions of the messages table."""

    def _require_postgresql(self) -> None:
        if not self._dialect.time_partitions:
            raise UnsupportedBackendError(
                "time partitions are a PostgreSQL feature; on SQLite retire history with "
                "retention policies (apply_retention, `agentledger cleanup`)"
            )

    async def check(self, name: str) -> Partition:
        """The month partition of ``conversation_messages`` named ``name`` (in whichever
        schema it lives); refused, with the partitions there are, unless it is one."""
        self._require_postgresql()
        partitioned = (await self._db.execute(_PARTITIONED)).scalar_one_or_none()
        if not partitioned:
            raise InvalidInputError(
                "conversation_messages is not partitioned here; partition it by created_at "
                "first (docs/scaling.md, time partitions)"
            )
        rows = (await self._db.execute(_PARTITIONS)).all()
        found = [row for row in rows if row[0] == name]
        if not found:
            listed = ", ".join(f"{relname} ({bound})" for relname, _, bound, _ in rows[:20])
            raise InvalidInputError(
                f"{name!r} is not a partition of conversation_messages; its partitions are: "
                f"{listed or 'none'}"
            )
        if len(found) > 1:
            raise InvalidInputError(
                f"partitions named {name!r} live in several schemas; rename all but one"
            )
        _, schema, bound, kind = found[0]
        if bound == "DEFAULT":
            raise InvalidInputError(
                f"{name!r} is the default partition: it holds rows dated outside every month "
                "and takes every such row written later, so it is not retired like a month; "
                "move its rows into months (create them) or delete them"
            )
        if kind != "r":
            raise InvalidInputError(
                f"{name!r} is itself partitioned; retiring a month with sub-partitions is not "
                "supported (partition by month only)"
            )
        return Partition(name, schema)

    async def touched(self, partition: Partition) -> list[Touched]:
        """Every history with rows in the partition, the newest of them and how many."""
        part = table(
            partition.name,
            column("session_id", Uuid()),
            column("seq", BigInteger()),
            schema=partition.schema,
        )
        result = await self._db.execute(
            select(part.c.session_id, func.max(part.c.seq), func.count())
            .group_by(part.c.session_id)
            .order_by(part.c.session_id)
        )
        return [Touched(sid, through, rows) for sid, through, rows in result]

    async def guards(self, session_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Guard]:
        """Where each history starts and ends now, and when it last changed."""
        result = await self._db.execute(_GUARDS, {"ids": list(session_ids)})
        return {sid: Guard(trimmed, last, version) for sid, trimmed, last, version in result}

    async def windows(
        self, spans: Sequence[tuple[uuid.UUID, int, int]]
    ) -> dict[uuid.UUID, list[Any]]:
        """The items ``lo .. hi`` of each ``(session_id, lo, hi)``, in order, cut down to
        :data:`~agentledger.domain.windows.LINK_FIELDS` (``{}`` or ``None`` for an item with
        none of them)."""
        found: dict[uuid.UUID, list[Any]] = {sid: [] for sid, _lo, _hi in spans}
        result = await self._db.execute(
            _WINDOWS,
            {
                "ids": [sid for sid, _lo, _hi in spans],
                "los": [lo for _sid, lo, _hi in spans],
                "his": [hi for _sid, _lo, hi in spans],
                "fields": list(LINK_FIELDS),
            },
        )
        for sid, _seq, item in result:
            found[sid].append(item)
        return found

    async def lock_tables(self, wait: timedelta) -> None:
        """Hold the sessions and their messages exclusively until the commit, waiting at most
        ``wait`` (a long transaction elsewhere makes this fail rather than stall every
        reader queued behind the lock)."""
        milliseconds = max(1, int(wait.total_seconds() * 1000))
        await self._db.execute(
            text("SELECT set_config('lock_timeout', :value, true)"), {"value": f"{milliseconds}ms"}
        )
        # The sessions first, as the library's own transactions take them (a session's row,
        # then its messages): the other order deadlocks with pop and rewind.
        await self._db.execute(
            text("LOCK TABLE agent_sessions, conversation_messages IN ACCESS EXCLUSIVE MODE")
        )

    async def drop(self, partition: Partition) -> None:
        """Drop the partition (checked by :meth:`check` in this transaction)."""
        quote = (await self._db.connection()).dialect.identifier_preparer.quote_identifier
        await self._db.execute(
            text(f"DROP TABLE {quote(partition.schema)}.{quote(partition.name)}")
        )

    async def cut(
        self, cuts: Sequence[tuple[uuid.UUID, int]], strays: Sequence[tuple[uuid.UUID, int]]
    ) -> None:
        """Start each history of ``cuts`` after its cut, and delete the rows up to the cut of
        the histories of ``strays`` (those with rows outside the partition up to it)."""
        await self._db.execute(
            _MOVE_STARTS, {"ids": [sid for sid, _ in cuts], "cuts": [cut for _, cut in cuts]}
        )
        if strays:
            await self._db.execute(_DELETE_CUT, [{"id": sid, "cut": cut} for sid, cut in strays])
