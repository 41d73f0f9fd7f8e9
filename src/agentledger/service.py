"""SessionService: agentledger's use cases. Every rule about sessions and messages lives here.

The service validates input completely before it opens a unit of work, so bad input writes
nothing; it runs each use case in one unit of work and hands out immutable records. It depends
only on a unit-of-work factory, so the same service runs on the Ledger's engine, inside a host's
transaction (:meth:`SessionService.using`) or on a fake for tests. The CLI and the Agents SDK
adapter are thin layers over it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from .encoding import check_text, dump_json, escape_nul, load_json
from .errors import InvalidInputError, LedgerError, SessionNotFoundError, translate_db_error
from .projection import ChatView, chat_view, check_role, item_from_chat
from .records import AppendResult, MessageRecord, SessionPage, SessionRecord, Usage
from .repositories import NewRow, SessionSpec
from .types import utcnow
from .uow import UnitOfWork, UnitOfWorkFactory

P = ParamSpec("P")
T = TypeVar("T")

SessionId = uuid.UUID | str

#: Longest ``user_id`` / ``agent_name`` / idempotency key (the columns are varchar(255)).
MAX_NAME_LENGTH = 255
#: Upper bound for one page of :meth:`SessionService.list_user_sessions`.
MAX_PAGE_SIZE = 1000
_MESSAGE_KEYS = frozenset({"role", "content", "tool_calls", "tool_call_id"})


def _translating(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Let LedgerErrors through and turn database/driver errors into typed LedgerErrors."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except LedgerError:
            raise
        except (SQLAlchemyError, OSError) as error:
            raise translate_db_error(error) from error

    return wrapper


def parse_session_id(value: object) -> uuid.UUID:
    """A session id as ``uuid.UUID``; strings must be UUIDs (any standard spelling)."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value.strip())
        except ValueError:
            pass
        raise InvalidInputError(
            f"malformed session id {value[:80]!r}: expected a UUID such as "
            "'0b0e7c9e-9d1f-4c43-9b2e-8f7d6a5c4b3a'"
        )
    raise TypeError(f"session id must be a uuid.UUID or a UUID string, not {type(value).__name__}")


def _check_name(value: object, what: str) -> str:
    text = check_text(value, what)
    if not text or len(text) > MAX_NAME_LENGTH or "\x00" in text:
        raise InvalidInputError(
            f"{what} must be 1 to {MAX_NAME_LENGTH} characters without NUL, got {len(text)}"
        )
    return text


def _check_tool_call_id(value: object, what: str) -> str:
    """A tool call id: any text (U+0000 included, tool ids come from outside) that fits the
    varchar(255) column, where PostgreSQL stores U+0000 and U+E000 escaped as two characters."""
    text = check_text(value, what)
    if not text or len(escape_nul(text)) > MAX_NAME_LENGTH:
        raise InvalidInputError(
            f"{what} must be 1 to {MAX_NAME_LENGTH} characters (U+0000 and U+E000 count "
            f"twice), got {len(text)}"
        )
    return text


def _check_limit(limit: int | None, what: str = "limit") -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"{what} must be an int or None, not {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"{what} must be zero or positive, got {limit}")
    return limit


def _new_row(view: ChatView, item_json: str) -> NewRow:
    tool_calls_json = None if view.tool_calls is None else dump_json(view.tool_calls, "tool_calls")
    return NewRow(
        id=uuid.uuid4(),
        role=view.role,
        content=view.content,
        tool_calls_json=tool_calls_json,
        tool_call_id=view.tool_call_id,
        item_type=view.item_type,
        item_json=item_json,
    )


def prepare_chat_message(message: Mapping[str, Any], index: int | None = None) -> NewRow:
    """Validate one chat-API message and build the row to insert."""
    where = "message" if index is None else f"message {index}"
    if not isinstance(message, Mapping):
        raise TypeError(f"{where} must be a mapping with role and content")
    unknown = set(message) - _MESSAGE_KEYS
    if unknown:
        raise InvalidInputError(
            f"{where} has unknown keys {sorted(map(str, unknown))}; allowed: "
            f"{sorted(_MESSAGE_KEYS)}"
        )
    if "role" not in message or "content" not in message:
        raise InvalidInputError(f"{where} needs both 'role' and 'content'")
    try:
        role = check_role(message["role"])
    except InvalidInputError as error:
        raise InvalidInputError(f"{where}: {error}") from None
    content = check_text(message["content"], f"{where} content")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and (
        not isinstance(tool_calls, list) or not all(isinstance(c, dict) for c in tool_calls)
    ):
        raise InvalidInputError(f"{where} tool_calls must be a list of dicts or None")
    tool_call_id = message.get("tool_call_id")
    if tool_call_id is not None:
        tool_call_id = _check_tool_call_id(tool_call_id, f"{where} tool_call_id")
    item = item_from_chat(role, content, tool_calls, tool_call_id)
    view = ChatView(role, content, tool_calls, tool_call_id, item.get("type", "message"))
    return _new_row(view, dump_json(item, where))


def prepare_item(item: Any, index: int | None = None) -> NewRow:
    """Validate one Agents SDK item and build the row to insert (item kept verbatim)."""
    where = "item" if index is None else f"item {index}"
    item_json = dump_json(item, where)
    view = chat_view(item)
    if view.tool_call_id is not None:
        _check_tool_call_id(view.tool_call_id, f"{where} call_id")
    return _new_row(view, item_json)


def _fingerprint(rows: Sequence[NewRow]) -> str:
    """Identity of a batch's content, to tell a retry from a reused idempotency key."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(row.item_json.encode("utf-8"))
        digest.update(b"\x1e")
    return digest.hexdigest()


def _encode_cursor(updated_at: datetime, session_id: uuid.UUID) -> str:
    raw = json.dumps([updated_at.isoformat(), str(session_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, session_id = json.loads(raw)
        updated_at = datetime.fromisoformat(stamp)
        if updated_at.tzinfo is None:
            raise ValueError("cursor timestamp is not timezone-aware")
        return updated_at, uuid.UUID(session_id)
    except (binascii.Error, ValueError, TypeError) as error:
        raise InvalidInputError(
            "malformed cursor; pass the next_cursor of a previous page unchanged"
        ) from error


class SessionService:
    """Create, append to, read, list, delete and clean up agent sessions."""

    def __init__(
        self, uow_factory: UnitOfWorkFactory, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._uow = uow_factory
        self._clock = clock

    def _now(self) -> datetime:
        """The clock's time in UTC: records hand out UTC whatever zone the clock uses."""
        now = self._clock()
        if not isinstance(now, datetime) or now.tzinfo is None:
            raise TypeError("the clock must return an aware datetime, e.g. datetime.now(UTC)")
        return now.astimezone(UTC)

    def using(self, connection: AsyncSession | AsyncConnection) -> SessionService:
        """The same service inside the caller's transaction; it never commits or closes it.

        Each operation runs in a SAVEPOINT of the caller's transaction: a failed operation
        leaves nothing behind, a successful one becomes durable when the caller commits.
        """
        if not isinstance(connection, (AsyncSession, AsyncConnection)):
            raise TypeError("using() takes an AsyncSession or an AsyncConnection")

        def borrowed(*, autocommit: bool = False) -> UnitOfWork:
            return UnitOfWork(borrow=connection)

        return SessionService(borrowed, clock=self._clock)

    # -- sessions -------------------------------------------------------------------------

    @_translating
    async def create_session(
        self,
        user_id: str,
        agent_name: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        session_id: SessionId | None = None,
    ) -> SessionRecord:
        """Create an empty session owned by ``user_id``."""
        user_id = _check_name(user_id, "user_id")
        agent_name = _check_name(agent_name, "agent_name")
        meta = self._check_metadata(metadata)
        new_id = uuid.uuid4() if session_id is None else parse_session_id(session_id)
        now = self._now()
        async with self._uow(autocommit=True) as uow:
            await uow.sessions.create(
                session_id=new_id, user_id=user_id, agent_name=agent_name, metadata=meta, now=now
            )
            await uow.commit()
        return SessionRecord(new_id, user_id, agent_name, meta, now, now, ())

    @_translating
    async def get_session(
        self, session_id: SessionId, user_id: str | None = None
    ) -> SessionRecord | None:
        """The session with its whole history, or ``None`` when missing or not ``user_id``'s."""
        sid = parse_session_id(session_id)
        # Two statements, no transaction needed: messages are read up to the last_seq seen with
        # the session row, and sequences commit in order, so the result is always a prefix.
        async with self._uow(autocommit=True) as uow:
            return await uow.sessions.get(sid, user_id)

    @_translating
    async def list_user_sessions(
        self, user_id: str, limit: int = 10, *, cursor: str | None = None
    ) -> SessionPage:
        """A page of ``user_id``'s sessions, most recently updated first, in one query."""
        user_id = _check_name(user_id, "user_id")
        checked = _check_limit(limit)
        if checked is None or not 1 <= checked <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
        after = None if cursor is None else _decode_cursor(cursor)
        async with self._uow(autocommit=True) as uow:
            rows = await uow.sessions.list_for_user(user_id, limit=checked + 1, after=after)
        page, more = rows[:checked], len(rows) > checked
        next_cursor = _encode_cursor(page[-1].updated_at, page[-1].id) if more else None
        return SessionPage(tuple(page), next_cursor)

    @_translating
    async def delete_session(self, session_id: SessionId, *, user_id: str | None = None) -> bool:
        """Delete the session and (by cascade) its history; ``False`` when there was none."""
        sid = parse_session_id(session_id)
        async with self._uow(autocommit=True) as uow:
            deleted = await uow.sessions.delete(sid, user_id)
            await uow.commit()
        return deleted

    @_translating
    async def cleanup_sessions(
        self,
        older_than: timedelta,
        *,
        dry_run: bool = False,
        batch_size: int = 500,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete sessions not updated for ``older_than``, in batches; return how many.

        Each batch is its own short transaction, so the cleanup never holds locks on the
        whole table. ``dry_run`` only counts. ``on_progress`` receives the running total.
        """
        if not isinstance(older_than, timedelta) or older_than < timedelta(0):
            raise ValueError("older_than must be a non-negative datetime.timedelta")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        cutoff = self._now() - older_than
        if dry_run:
            async with self._uow(autocommit=True) as uow:
                sessions, _messages = await uow.sessions.count_idle(cutoff)
            return sessions
        total = 0
        while True:
            async with self._uow() as uow:
                deleted = await uow.sessions.delete_idle_batch(cutoff, batch_size)
                await uow.commit()
            total += deleted
            if on_progress is not None and deleted:
                on_progress(total)
            if deleted < batch_size:
                return total

    async def count_idle_sessions(self, older_than: timedelta) -> tuple[int, int]:
        """``(sessions, messages)`` a cleanup with ``older_than`` would delete now."""
        cutoff = self._now() - older_than
        try:
            async with self._uow(autocommit=True) as uow:
                return await uow.sessions.count_idle(cutoff)
        except (SQLAlchemyError, OSError) as error:
            raise translate_db_error(error) from error

    # -- messages (chat API) ----------------------------------------------------------------

    @_translating
    async def add_message(
        self,
        session_id: SessionId,
        role: str,
        content: str,
        tool_calls: list[dict[str, Any]] | None = None,
        tool_call_id: str | None = None,
        *,
        user_id: str | None = None,
    ) -> MessageRecord:
        """Append one chat message; returns it with its sequence number."""
        row = prepare_chat_message(
            {
                "role": role,
                "content": content,
                "tool_calls": tool_calls,
                "tool_call_id": tool_call_id,
            }
        )
        result = await self._append(parse_session_id(session_id), [row], user_id=user_id)
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

    @_translating
    async def add_messages(
        self,
        session_id: SessionId,
        messages: Iterable[Mapping[str, Any]],
        idempotency_key: str | None = None,
        *,
        user_id: str | None = None,
    ) -> AppendResult:
        """Append a batch atomically: all messages, contiguous and in order, or none.

        With ``idempotency_key`` a retried batch (even one whose commit the client never saw
        acknowledged) is stored once; the retry returns the first attempt's result.
        """
        rows = [prepare_chat_message(message, index) for index, message in enumerate(messages)]
        key = None if idempotency_key is None else _check_name(idempotency_key, "idempotency_key")
        return await self._append(parse_session_id(session_id), rows, user_id=user_id, key=key)

    # -- items (Agents SDK) -------------------------------------------------------------------

    @_translating
    async def add_items(
        self,
        session_id: SessionId,
        items: Sequence[Any],
        *,
        user_id: str | None = None,
        create_as: SessionSpec | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Append Agents SDK items verbatim (with their chat view), atomically and in order.

        ``create_as`` creates the session on this first write when it does not exist yet;
        ``idempotency_key`` stores the batch once however often it is retried.
        """
        if isinstance(items, (str, bytes, Mapping)):
            raise TypeError("items must be a list of items, not a single item")
        rows = [prepare_item(item, index) for index, item in enumerate(items)]
        key = None if idempotency_key is None else _check_name(idempotency_key, "idempotency_key")
        return await self._append(
            parse_session_id(session_id), rows, user_id=user_id, create=create_as, key=key
        )

    @_translating
    async def batch_keys(self, session_id: SessionId, *, prefix: str = "") -> list[str]:
        """Idempotency keys of the batches stored in the session that start with ``prefix``.

        Lets a resumable job (such as ``agentledger import``) find where it stopped.
        """
        sid = parse_session_id(session_id)
        async with self._uow(autocommit=True) as uow:
            return await uow.messages.batch_keys(sid, prefix)

    @_translating
    async def get_items(
        self, session_id: SessionId, limit: int | None = None, *, user_id: str | None = None
    ) -> list[Any]:
        """Stored items in order; with ``limit`` the latest ``limit`` of them (one query)."""
        sid = parse_session_id(session_id)
        checked = _check_limit(limit)
        if checked == 0:
            return []
        async with self._uow(autocommit=True) as uow:
            items = await uow.messages.items(sid, checked, user_id)
            if not items and user_id is not None:
                await self._check_owner(uow, sid, user_id, missing_ok=True)
        return items

    @_translating
    async def pop_item(self, session_id: SessionId, *, user_id: str | None = None) -> Any:
        """Remove and return the newest item (``None`` when empty); exactly once per item."""
        sid = parse_session_id(session_id)
        async with self._uow(autocommit=True) as uow:
            item = await uow.messages.pop(sid, user_id, self._now())
            await uow.commit()
            if item is None and user_id is not None:
                await self._check_owner(uow, sid, user_id, missing_ok=True)
        return item

    @_translating
    async def clear_session(self, session_id: SessionId, *, user_id: str | None = None) -> None:
        """Delete every message of the session (the session itself stays)."""
        sid = parse_session_id(session_id)
        async with self._uow() as uow:
            if await uow.sessions.lock(sid, user_id) is None:
                await self._check_owner(uow, sid, user_id, missing_ok=True)
                return
            await uow.messages.clear(sid, self._now())
            await uow.commit()

    # -- usage ----------------------------------------------------------------------------------

    @_translating
    async def record_usage(
        self, session_id: SessionId, usage: Usage, *, user_id: str | None = None
    ) -> None:
        """Record the token usage of one agent run (turn) in the session."""
        sid = parse_session_id(session_id)
        for name in ("requests", "input_tokens", "output_tokens", "total_tokens"):
            value = getattr(usage, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInputError(f"usage.{name} must be a non-negative int, got {value!r}")
        if user_id is not None:
            # A separate read: on SQLite a transaction that reads before it writes may fail
            # at once under concurrent writers instead of waiting for the lock.
            async with self._uow(autocommit=True) as uow:
                await self._check_owner(uow, sid, user_id, missing_ok=False)
        async with self._uow() as uow:
            await uow.usage.add(sid, usage, self._now())
            await uow.commit()

    @_translating
    async def get_usage(self, session_id: SessionId, *, user_id: str | None = None) -> Usage:
        """Token usage totals of the session."""
        sid = parse_session_id(session_id)
        async with self._uow(autocommit=True) as uow:
            if user_id is not None:
                await self._check_owner(uow, sid, user_id, missing_ok=True)
            return await uow.usage.totals(session_id=sid)

    @_translating
    async def get_user_usage(self, user_id: str) -> Usage:
        """Token usage totals over every session of ``user_id``."""
        user_id = _check_name(user_id, "user_id")
        async with self._uow(autocommit=True) as uow:
            return await uow.usage.totals(user_id=user_id)

    # -- internals ------------------------------------------------------------------------------

    async def _append(
        self,
        sid: uuid.UUID,
        rows: list[NewRow],
        *,
        user_id: str | None,
        key: str | None = None,
        create: SessionSpec | None = None,
    ) -> AppendResult:
        if user_id is not None:
            user_id = _check_name(user_id, "user_id")
        if create is not None:
            user_id = create.user_id
        now = self._now()
        if key is not None:
            return await self._append_once(sid, rows, user_id, key, now, create)
        if not rows:
            async with self._uow(autocommit=True) as uow:
                await self._check_owner(uow, sid, user_id, missing_ok=create is not None)
            return AppendResult(sid, 0, 0, now)
        async with self._uow(autocommit=True) as uow:
            base = await uow.messages.append(sid, rows, user_id=user_id, now=now, create=create)
            if base is None:
                await self._check_owner(uow, sid, user_id, missing_ok=False)
                raise SessionNotFoundError(f"session {sid} does not exist")  # pragma: no cover
            await uow.commit()
        return AppendResult(sid, base + 1, len(rows), now)

    async def _append_once(
        self,
        sid: uuid.UUID,
        rows: list[NewRow],
        user_id: str | None,
        key: str,
        now: datetime,
        create: SessionSpec | None,
    ) -> AppendResult:
        async with self._uow() as uow:
            if await uow.sessions.lock(sid, user_id) is None:
                await self._check_owner(uow, sid, user_id, missing_ok=create is not None)
                assert create is not None  # _check_owner raised otherwise
                await uow.sessions.create(
                    session_id=sid,
                    user_id=create.user_id,
                    agent_name=create.agent_name,
                    metadata={},
                    now=now,
                )
            fingerprint = _fingerprint(rows)
            earlier = await uow.messages.find_batch(sid, key)
            if earlier is not None:
                first_seq, count, created_at, stored = earlier
                if stored != fingerprint:
                    raise InvalidInputError(
                        f"idempotency key {key!r} was already used for a different batch in "
                        "this session; use a new key for new messages"
                    )
                return AppendResult(sid, first_seq, count, created_at, created=False)
            first_seq = 0  # an empty batch has no position, as without a key
            if rows:
                appended = await uow.messages.append(sid, rows, user_id=user_id, now=now)
                assert appended is not None  # the row is locked by this transaction
                first_seq = appended + 1
            await uow.messages.remember_batch(sid, key, first_seq, len(rows), fingerprint, now)
            await uow.commit()
        return AppendResult(sid, first_seq, len(rows), now)

    @staticmethod
    async def _check_owner(
        uow: UnitOfWork, sid: uuid.UUID, user_id: str | None, *, missing_ok: bool
    ) -> None:
        """Raise SessionNotFoundError unless the session exists (or may be missing) and
        belongs to ``user_id``. Another user's session reads exactly like a missing one."""
        owner = await uow.sessions.owner_of(sid)
        if owner is None and missing_ok:
            return
        if owner is None or (user_id is not None and owner != user_id):
            suffix = "" if user_id is None else f" for user {user_id!r}"
            raise SessionNotFoundError(
                f"session {sid} does not exist{suffix}; create it with "
                "create_session() or check the id and user_id"
            )

    @staticmethod
    def _check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
        if metadata is None:
            return {}
        if not isinstance(metadata, Mapping):
            raise InvalidInputError(
                f"metadata must be a JSON object (a dict), got {type(metadata).__name__}"
            )
        as_dict = dict(metadata)
        return json.loads(dump_json(as_dict, "metadata"))  # type: ignore[no-any-return]
