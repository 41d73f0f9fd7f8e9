"""History: append messages and SDK items (once, under idempotency keys), read, pop, clear."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from agentledger.db.uow import UnitOfWork
from agentledger.domain.encoding import load_json
from agentledger.domain.records import (
    AppendResult,
    MessagePage,
    MessageRecord,
    NewRow,
    SessionSpec,
)
from agentledger.domain.validation import (
    batch_fingerprint,
    check_count,
    check_limit,
    check_name,
    check_owner,
    check_seq,
    check_spec,
    fits_one_statement,
    parse_session_id,
    prepare_chat_message,
    prepare_item,
)
from agentledger.errors import InvalidInputError, SessionNotFoundError, StaleSessionError
from agentledger.services.base import ServiceBase, SessionId, operation

#: Most messages one page of get_messages holds.
MAX_PAGE = 10_000


class History(ServiceBase):
    """Message and item use cases (the agent loop's hot paths)."""

    @operation()
    async def add_message(
        self,
        session_id: SessionId,
        role: str,
        content: str,
        tool_calls: list[dict[str, Any]] | None = None,
        tool_call_id: str | None = None,
        *,
        user_id: str | None = None,
        expected_last_seq: int | None = None,
    ) -> MessageRecord:
        """Append one chat message; returns it with its sequence number.
        ``expected_last_seq``: as for :meth:`add_messages`."""
        row = prepare_chat_message(
            {
                "role": role,
                "content": content,
                "tool_calls": tool_calls,
                "tool_call_id": tool_call_id,
            }
        )
        expected = _expected(expected_last_seq)
        sid = parse_session_id(session_id)
        result = await self._append(sid, [row], user_id=user_id, expected=expected)
        return MessageRecord(
            seq=result.first_seq,
            role=row.role,
            content=row.content,
            tool_calls=load_json(row.tool_calls_json),
            tool_call_id=row.tool_call_id,
            created_at=result.created_at,
            id=row.id,
            item_type=row.item_type,
            item=json.loads(row.item_json),
        )

    @operation()
    async def add_messages(
        self,
        session_id: SessionId,
        messages: Iterable[Mapping[str, Any]],
        idempotency_key: str | None = None,
        *,
        user_id: str | None = None,
        expected_last_seq: int | None = None,
    ) -> AppendResult:
        """Append a batch atomically: all messages, contiguous and in order, or none.

        With ``idempotency_key`` a retried batch (even one whose commit the client never saw
        acknowledged) is stored once; the retry returns the first attempt's result.

        ``expected_last_seq=N`` makes it a compare-and-append: the batch is stored only if the
        session still ends at seq ``N`` (0: empty), checked under the session's row lock;
        otherwise :class:`~agentledger.StaleSessionError` (carrying ``last_seq``) is raised
        and nothing is written.
        """
        rows = [prepare_chat_message(message, index) for index, message in enumerate(messages)]
        key = None if idempotency_key is None else check_name(idempotency_key, "idempotency_key")
        expected = _expected(expected_last_seq)
        sid = parse_session_id(session_id)
        return await self._append(sid, rows, user_id=user_id, key=key, expected=expected)

    @operation()
    async def add_items(
        self,
        session_id: SessionId,
        items: Sequence[Any],
        *,
        user_id: str | None = None,
        create_as: SessionSpec | None = None,
        idempotency_key: str | None = None,
        expected_last_seq: int | None = None,
    ) -> AppendResult:
        """Append Agents SDK items verbatim (with their chat view), atomically and in order.

        ``create_as`` creates the session on this first write when it does not exist yet;
        ``idempotency_key`` stores the batch once however often it is retried;
        ``expected_last_seq`` appends only onto that last seq (see :meth:`add_messages`).
        """
        if isinstance(items, (str, bytes, Mapping)):
            raise TypeError("items must be a list of items, not a single item")
        if create_as is not None:
            create_as = check_spec(create_as)
        if create_as is not None and user_id is not None and create_as.user_id != user_id:
            raise InvalidInputError(
                f"create_as.user_id {create_as.user_id!r} differs from user_id {user_id!r}: a "
                "call acts for one user, who owns what it creates"
            )
        rows = [prepare_item(item, index) for index, item in enumerate(items)]
        key = None if idempotency_key is None else check_name(idempotency_key, "idempotency_key")
        expected = _expected(expected_last_seq)
        sid = parse_session_id(session_id)
        return await self._append(
            sid, rows, user_id=user_id, create=create_as, key=key, expected=expected
        )

    @operation()
    async def batch_keys(
        self, session_id: SessionId, *, prefix: str = "", user_id: str | None = None
    ) -> list[str]:
        """Idempotency keys of the batches stored in the session that start with ``prefix``.

        Lets a resumable job (such as ``agentledger import``) find where it stopped. A
        missing session has no keys, and so, with ``user_id``, has another user's session:
        reads never tell whether someone else's session exists.
        """
        sid = parse_session_id(session_id)
        user = check_owner(user_id)
        if not isinstance(prefix, str) or "\x00" in prefix or len(prefix) > 255:
            raise InvalidInputError("prefix must be a string of at most 255 characters, no NUL")
        async with self._uow(autocommit=True) as uow:
            if user is not None and not await self._readable(uow, sid, user):
                return []
            return await uow.batches.keys(sid, prefix)

    @operation()
    async def can_write(self, session_id: SessionId, *, user_id: str) -> bool:
        """Whether ``user_id`` may write to the session: it is theirs, or does not exist yet
        (a first write creates it). What any write, or create with a chosen id, would tell."""
        sid = parse_session_id(session_id)
        user = check_name(user_id, "user_id")
        async with self._uow(autocommit=True) as uow:
            return (await uow.sessions.owner_of(sid)) in (None, user)

    @operation()
    async def get_items(
        self, session_id: SessionId, limit: int | None = None, *, user_id: str | None = None
    ) -> list[Any]:
        """Stored items in order; with ``limit`` the latest ``limit`` of them (one query)."""
        sid = parse_session_id(session_id)
        user_id = check_owner(user_id)
        checked = check_limit(limit)
        if checked == 0:
            return []
        async with self._read_uow(autocommit=True) as uow:
            return await uow.messages.items(sid, checked, user_id)  # the owner's rows only

    @operation()
    async def get_messages(
        self,
        session_id: SessionId,
        *,
        after_seq: int | None = None,
        before_seq: int | None = None,
        limit: int = 100,
        user_id: str | None = None,
    ) -> MessagePage:
        """A page of the session's messages, in order: one indexed query whatever the
        session's size.

        Forward (the default): the first ``limit`` messages after ``after_seq`` (from the
        start without it); ``page.next_after_seq`` continues. Backward (``before_seq`` without
        ``after_seq``): the last ``limit`` messages before ``before_seq``, e.g. the newest
        ones with ``before_seq=session_last_seq + 1``; ``page.next_before_seq`` continues
        towards the start. Both bounds: the first ``limit`` messages between them. A missing
        or another user's session gives an empty page.
        """
        sid = parse_session_id(session_id)
        user = check_owner(user_id)
        after = None if after_seq is None else check_seq(after_seq, "after_seq")
        before = None if before_seq is None else check_seq(before_seq, "before_seq")
        size = check_count(limit, "limit", maximum=MAX_PAGE)
        backward = before is not None and after is None
        async with self._read_uow(autocommit=True) as uow:
            if not await self._readable(uow, sid, user):
                return MessagePage(())
            records, seqs = await uow.messages.page(
                sid, after_seq=after or 0, before_seq=before, limit=size + 1, backward=backward
            )
        more = len(seqs) > size
        if not more:
            return MessagePage(tuple(records))
        if backward:
            shown = [record for record in records if record.seq > seqs[0]]
            return MessagePage(tuple(shown), next_before_seq=seqs[1])
        shown = [record for record in records if record.seq < seqs[-1]]
        return MessagePage(tuple(shown), next_after_seq=seqs[-2])

    @operation()
    async def pop_item(self, session_id: SessionId, *, user_id: str | None = None) -> Any:
        """Remove and return the newest item (``None`` when empty, missing or another user's);
        exactly once per item."""
        sid = parse_session_id(session_id)
        user_id = check_owner(user_id)
        async with self._uow() as uow:  # two statements: see MessageRepository.pop
            item = await uow.messages.pop(sid, user_id, self._now())  # the owner's only
            # A checkpoint summarizing the popped message (even a damaged one, popped as
            # None) no longer applies.
            await uow.checkpoints.drop_beyond_history(sid)
            await uow.commit()
        return item

    @operation()
    async def clear_session(self, session_id: SessionId, *, user_id: str | None = None) -> None:
        """Delete every message of the session (the session itself stays); a missing or
        another user's session is left alone."""
        sid = parse_session_id(session_id)
        user_id = check_owner(user_id)
        async with self._uow() as uow:
            if await uow.sessions.lock(sid, user_id) is None:
                return  # missing, or another user's: nothing to clear, as for a missing one
            await uow.messages.clear(sid, self._now())
            await uow.checkpoints.drop_after(sid, 0)
            await uow.commit()

    # -- appending ------------------------------------------------------------------------------

    async def _append(
        self,
        sid: uuid.UUID,
        rows: list[NewRow],
        *,
        user_id: str | None,
        key: str | None = None,
        create: SessionSpec | None = None,
        expected: int | None = None,
    ) -> AppendResult:
        user_id = check_owner(user_id)
        if create is not None:
            user_id = create.user_id
        now = self._now()
        if key is not None or expected is not None:
            return await self._append_locked(sid, rows, user_id, key, now, create, expected)
        if not rows:
            async with self._uow(autocommit=True) as uow:
                await self._check_owner(uow, sid, user_id, missing_ok=create is not None)
            return AppendResult(sid, 0, 0, now)
        # One statement commits by itself; a batch split over several needs a transaction.
        async with self._uow(autocommit=fits_one_statement(rows)) as uow:
            if create is not None and self._tenant is not None:
                # Row-level security checks a message against its session, and a statement
                # never sees the rows it inserts itself: create the session beforehand.
                await uow.sessions.create_missing(sid, create, now)
                create = None
            base = await uow.messages.append(sid, rows, user_id=user_id, now=now, create=create)
            if base is None:
                await self._check_owner(uow, sid, user_id, missing_ok=False)
                raise SessionNotFoundError(f"session {sid} does not exist")  # pragma: no cover
            await uow.commit()
        return AppendResult(sid, base + 1, len(rows), now)

    async def _append_locked(
        self,
        sid: uuid.UUID,
        rows: list[NewRow],
        user_id: str | None,
        key: str | None,
        now: datetime,
        create: SessionSpec | None,
        expected: int | None,
    ) -> AppendResult:
        """An append that first locks the session row: under an idempotency key, or onto an
        expected last seq."""
        async with self._uow() as uow:
            result, _last_seq = await self._append_chunk(
                uow, sid, rows, user_id, key, now, create, expected_last_seq=expected
            )
            await uow.commit()
        return result

    async def _append_chunk(
        self,
        uow: UnitOfWork,
        sid: uuid.UUID,
        rows: list[NewRow],
        user_id: str | None,
        key: str | None,
        now: datetime,
        create: SessionSpec | None = None,
        *,
        expected_last_seq: int | None = None,
    ) -> tuple[AppendResult, int]:
        """Store ``rows`` once under ``key`` in ``uow`` (the caller commits): the one engine of
        idempotent, resumable and compare-and-append writes (batches with a key or an expected
        last seq, transcript imports, SDK-store imports). A key already used returns the first
        attempt's result (``created=False``), or refuses a different batch under it.
        ``expected_last_seq``: the session must end there (raises StaleSessionError); the
        session's ``last_seq`` before the rows is returned too."""
        last_seq = await self._lock_or_create(uow, sid, user_id, create, now)
        fingerprint = batch_fingerprint(rows)
        earlier = None if key is None else await uow.batches.find(sid, key)
        if earlier is not None:
            first_seq, count, created_at, stored = earlier
            if stored != fingerprint:
                raise InvalidInputError(
                    f"idempotency key {key!r} was already used for a different batch in this "
                    "session; use a new key for new messages (an import: import under a new "
                    "id with session_id=)"
                )
            return AppendResult(sid, first_seq, count, created_at, created=False), last_seq
        if expected_last_seq is not None and last_seq != expected_last_seq:
            raise StaleSessionError(
                f"session {sid} ends at seq {last_seq}, not at the expected "
                f"{expected_last_seq}: it was appended to or cut since it was read; nothing was "
                f"written. Read it again and append with expected_last_seq={last_seq}",
                last_seq=last_seq,
                expected_last_seq=expected_last_seq,
            )
        first_seq = 0  # an empty batch has no position, as without a key
        if rows:
            appended = await uow.messages.append(sid, rows, user_id=user_id, now=now)
            assert appended is not None  # the row is locked by this transaction
            first_seq = appended + 1
        if key is not None:
            await uow.batches.remember(sid, key, first_seq, len(rows), fingerprint, now)
        return AppendResult(sid, first_seq, len(rows), now), last_seq

    async def _lock_or_create(
        self,
        uow: UnitOfWork,
        sid: uuid.UUID,
        user_id: str | None,
        create: SessionSpec | None,
        now: datetime,
    ) -> int:
        """Lock the session for this unit of work, creating it first when ``create`` allows;
        its ``last_seq``."""
        session = await uow.sessions.lock(sid, user_id)
        if session is not None:
            return session.last_seq
        await self._check_owner(uow, sid, user_id, missing_ok=create is not None)
        assert create is not None  # _check_owner raised otherwise
        # A concurrent first write may create it meanwhile, and row-level security may hide
        # another tenant's row: create only if missing, then look again.
        await uow.sessions.create_missing(sid, create, now)
        session = await uow.sessions.lock(sid, user_id)
        if session is None:
            await self._check_owner(uow, sid, user_id, missing_ok=False)
            raise SessionNotFoundError(f"session {sid} is hidden")  # pragma: no cover
        return session.last_seq


def _expected(value: int | None) -> int | None:
    """A compare-and-append's expected last seq (0: an empty session), checked up front."""
    return None if value is None else check_count(value, "expected_last_seq", minimum=0)
