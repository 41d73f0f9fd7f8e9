"""Message rows: append, the tail and history reads, pop, clear, rewind, copy, trim.

The two hot paths of an agent loop, *append a turn* and *read the tail*, are one round trip each
(see :mod:`agentledger.db.dialect` for how each backend appends, and
:mod:`agentledger.db.fastpath` for how the statements run). A batch larger than PostgreSQL
accepts in one statement is appended in consecutive parts in the caller's transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agentledger.db.dialect import Dialect
from agentledger.db.fastpath import Statements
from agentledger.db.models import batches_table, messages_table, sessions_table
from agentledger.db.repositories.base import Repository
from agentledger.db.rows import intact
from agentledger.db.statements import history_query, items_query, page_query, window_query
from agentledger.domain.encoding import statement_runs
from agentledger.domain.records import MessageRecord, NewRow, SessionSpec

_sessions = sessions_table
_messages = messages_table
_batches = batches_table


class MessageRepository(Repository):
    """Message rows of the sessions."""

    def __init__(
        self,
        db: Callable[[], AsyncSession],
        dialect: Dialect,
        statements: Statements,
        *,
        atomic: bool,
    ) -> None:
        super().__init__(db, dialect, statements)
        self._atomic = atomic

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
        until the commit. A unit of single statements refuses such a batch before sending.
        """
        runs = statement_runs([row.size for row in rows]) or [range(0)]
        if len(runs) > 1 and not self._atomic:
            raise RuntimeError(
                f"a batch of {len(rows)} messages needs {len(runs)} statements; append it in "
                "a unit of work with a transaction, so that it stays atomic"
            )
        first: int | None = None
        for run in runs:
            base = await self._dialect.append(
                self._statements,
                self._db_source,
                session_id,
                rows[run.start : run.stop],
                user_id=user_id,
                now=now,
                create=create,
            )
            if base is None:  # missing or not owned: only the first run can find that
                return None
            if first is None:
                first = base
            elif base != first + run.start:  # pragma: no cover - the row lock prevents it
                raise RuntimeError("a split batch was interleaved: it must run in a transaction")
        return first

    async def items(
        self, session_id: uuid.UUID, limit: int | None, user_id: str | None
    ) -> list[Any]:
        """The stored items in order; with ``limit``, only the latest ``limit`` of them.

        A damaged row (left out, see :func:`intact`) does not count towards ``limit``: the
        read reaches further back for as many intact items as were asked for."""
        items, _checkpoint = await self._latest_intact(session_id, limit, user_id, False)
        return items

    async def window_items(
        self, session_id: uuid.UUID, *, after_seq: int, upto_seq: int, limit: int | None
    ) -> list[Any]:
        """The items ``after_seq < seq <= upto_seq`` in order (``limit``: only the latest
        ``limit`` of them; damaged rows are left out and not made up for)."""
        params: dict[str, Any] = {
            "session_id": session_id,
            "after_seq": after_seq,
            "upto_seq": upto_seq,
            "limit": limit,
        }
        rows = await self._statements.rows(window_query(latest=limit is not None), params)
        ordered = rows if limit is None else list(reversed(rows))
        return [row.item for row in intact(session_id, ordered)]

    async def context_items(
        self, session_id: uuid.UUID, limit: int | None, user_id: str | None
    ) -> tuple[list[Any], int | None]:
        """The items after the newest checkpoint (the latest ``limit`` of them), and that
        checkpoint's ``upto_seq`` (0: none; ``None``: unknown, as no row was read). One
        statement."""
        return await self._latest_intact(session_id, limit, user_id, True)

    async def _latest_intact(
        self, session_id: uuid.UUID, limit: int | None, user_id: str | None, compacted: bool
    ) -> tuple[list[Any], int | None]:
        query = items_query(
            latest=limit is not None, owned=user_id is not None, compacted=compacted
        )
        params: dict[str, Any] = {"session_id": session_id, "user_id": user_id, "limit": limit}
        while True:
            rows = await self._statements.rows(query, params)
            checkpoint = int(rows[0].checkpoint_seq) if compacted and rows else None
            if limit is None:
                return [row.item for row in intact(session_id, rows)], checkpoint
            kept = [row.item for row in intact(session_id, reversed(rows))]
            if len(kept) >= limit or len(rows) < params["limit"]:
                return (kept[-limit:] if len(kept) > limit else kept), checkpoint
            params["limit"] += limit - len(kept)

    async def history(
        self,
        session_id: uuid.UUID,
        *,
        after_seq: int,
        upto_seq: int,
        damaged: list[int] | None = None,
    ) -> list[MessageRecord]:
        """The messages ``after_seq < seq <= upto_seq``, in order, as records: the one
        history range read (get_session, exports, imports, trimming). Damaged ones are left
        out, their seqs appended to ``damaged``."""
        params = {"session_id": session_id, "after_seq": after_seq, "upto_seq": upto_seq}
        records = await self._statements.rows(history_query(), params, into=MessageRecord)
        return intact(session_id, records, damaged=damaged)

    async def page(
        self,
        session_id: uuid.UUID,
        *,
        after_seq: int,
        before_seq: int | None,
        limit: int,
        backward: bool,
    ) -> tuple[list[MessageRecord], list[int]]:
        """Up to ``limit`` messages ``after_seq < seq < before_seq``, in order: the first ones,
        or (``backward``) the last ones. Also the seqs of the rows read (damaged ones
        included, which the records leave out), so a caller's cursor moves past them."""
        params: dict[str, Any] = {
            "session_id": session_id,
            "after_seq": after_seq,
            "before_seq": before_seq,
            "limit": limit,
        }
        query = page_query(backward=backward, bounded=before_seq is not None)
        rows = list(await self._statements.rows(query, params, into=MessageRecord))
        if backward:
            rows.reverse()
        return intact(session_id, rows), [row.seq for row in rows]

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
        seq = (await self._db.execute(allocate)).scalar_one_or_none()
        if seq is None:
            return None
        result = await self._delete(
            delete(_messages)
            .where(_messages.c.session_id == session_id, _messages.c.seq == seq)
            .returning(_messages.c.item, _messages.c.seq),
            (session_id,),
            messages=True,
        )
        await self._forget_batches_after(session_id, seq - 1)
        kept = intact(session_id, result)  # a damaged newest item is removed, not returned
        return kept[0].item if kept else None

    async def clear(self, session_id: uuid.UUID, now: datetime) -> None:
        """Delete every message and batch record; the next append starts at seq 1 again.
        The caller holds the session row's lock."""
        await self._delete(
            delete(_messages).where(_messages.c.session_id == session_id),
            (session_id,),
            messages=True,
        )
        await self._db.execute(delete(_batches).where(_batches.c.session_id == session_id))
        await self._db.execute(
            update(_sessions)
            .where(_sessions.c.id == session_id)
            .values(last_seq=0, trimmed_seq=0, updated_at=now)
        )

    async def rewind(self, session_id: uuid.UUID, to_seq: int, now: datetime) -> None:
        """Drop every message after ``to_seq``, and the idempotency records of batches that
        reached past it (a retry of such a batch appends it again); ``last_seq := to_seq``.
        The caller holds the session row's lock."""
        await self._delete(
            delete(_messages).where(_messages.c.session_id == session_id, _messages.c.seq > to_seq),
            (session_id,),
            messages=True,
        )
        await self._forget_batches_after(session_id, to_seq)
        await self._db.execute(
            update(_sessions)
            .where(_sessions.c.id == session_id)
            .values(last_seq=to_seq, updated_at=now)
        )

    async def _forget_batches_after(self, session_id: uuid.UUID, last_kept: int) -> None:
        """Forget the idempotency keys of batches that reached past ``last_kept``: their
        messages are (partly) gone, so a retry must append again, never acknowledge seqs that
        now hold, or will hold, other messages."""
        await self._db.execute(
            delete(_batches).where(
                _batches.c.session_id == session_id,
                _batches.c["count"] > 0,
                _batches.c.first_seq + _batches.c["count"] - 1 > last_kept,
            )
        )

    async def trim_front(self, session_id: uuid.UUID, new_trimmed_seq: int) -> None:
        """Delete the messages up to ``new_trimmed_seq`` and record it (row lock held)."""
        await self._delete(
            delete(_messages).where(
                _messages.c.session_id == session_id, _messages.c.seq <= new_trimmed_seq
            ),
            (session_id,),
            messages=True,
        )
        await self._db.execute(
            update(_sessions)
            .where(_sessions.c.id == session_id)
            .values(trimmed_seq=new_trimmed_seq)
        )

    async def copy(
        self, source_id: uuid.UUID, target_id: uuid.UUID, *, after_seq: int, through_seq: int
    ) -> None:
        """Copy the messages ``after_seq + 1 .. through_seq`` of ``source_id`` into
        ``target_id`` as seqs ``1 ..``, with new ids, in one INSERT ... SELECT (no rows travel
        through Python; the stored text, escapes included, is copied as it is)."""
        columns = ("role", "content", "tool_calls", "tool_call_id", "item_type", "item")
        rows = select(
            literal(target_id, _messages.c.session_id.type),
            _messages.c.seq - after_seq,
            self._dialect.new_uuid(),
            *(_messages.c[name] for name in columns),
            _messages.c.created_at,
        ).where(
            _messages.c.session_id == source_id,
            _messages.c.seq > after_seq,
            _messages.c.seq <= through_seq,
        )
        await self._db.execute(
            insert(_messages).from_select(["session_id", "seq", "id", *columns, "created_at"], rows)
        )

    async def set_created_at(
        self, session_id: uuid.UUID, stamps: Sequence[tuple[int, datetime]]
    ) -> None:
        """Give imported messages their original ``created_at`` (informational only)."""
        if not stamps:
            return
        await self._db.execute(
            update(_messages)
            .where(
                _messages.c.session_id == session_id,
                _messages.c.seq == bindparam("stamp_seq"),
            )
            .values(created_at=bindparam("stamp_at")),
            [{"stamp_seq": seq, "stamp_at": when} for seq, when in stamps],
        )
