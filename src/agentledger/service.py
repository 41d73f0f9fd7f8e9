"""SessionService: agentledger's use cases. Every rule about sessions and messages lives here.

The service validates input completely before it opens a unit of work, so bad input writes
nothing; it runs each use case in one unit of work and hands out immutable records. It depends
only on a unit-of-work factory, so the same service runs on the Ledger's engine, inside a host's
transaction (:meth:`SessionService.using`) or on a fake for tests. The CLI and the Agents SDK
adapter are thin layers over it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from .encoding import dump_json, load_json
from .errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidInputError,
    LedgerError,
    PermissionDeniedError,
    SessionNotFoundError,
    SessionReferencedError,
    referenced_error,
    translate_db_error,
)
from .lifecycle_repository import LifecycleRepository, SessionState
from .maintenance_repository import AgentScope
from .naming import resolve_session_uuid
from .records import (
    AppendResult,
    BlockedSession,
    ErasureReport,
    MessageRecord,
    SearchHit,
    SearchPage,
    SessionPage,
    SessionRecord,
    TranscriptImport,
    Usage,
)
from .repositories import LockedSession, NewRow, SessionSpec
from .retention import (
    DEFAULT_POLICY_KEY,
    RetentionCounts,
    RetentionPolicy,
    RetentionReport,
    parse_policies,
    trim_cut,
)
from .search import decode_cursor as decode_search_cursor
from .search import encode_cursor as encode_search_cursor
from .search import parse_query, query_fingerprint
from .search import snippet as make_snippet
from .transcripts import SessionTranscript, TranscriptMessage, check_transcript, not_after
from .types import cutoff_before, utcnow
from .uow import UnitOfWork, UnitOfWorkFactory
from .validation import (
    MAX_INT64,
    MAX_PAGE_SIZE,
    batch_fingerprint,
    check_count,
    check_in_history,
    check_limit,
    check_metadata_changes,
    check_metadata_filter,
    check_name,
    check_owner,
    check_seq,
    check_title,
    decode_listing_cursor,
    encode_listing_cursor,
    fits_one_statement,
    parse_session_id,
    prepare_chat_message,
    prepare_item,
)

P = ParamSpec("P")
T = TypeVar("T")

SessionId = uuid.UUID | str

logger = logging.getLogger("agentledger")

_UNSCOPED_UNDER_RLS = (
    "row-level security confines this database role, and this service names no tenant, so "
    "every session is hidden from it; run tenant work through ledger.service.for_user(user_id) "
    "(or set AGENTLEDGER_ROW_LEVEL_SECURITY=true for SDK sessions and SessionAgent)"
)

#: Messages one delete batch may hold together (cleanup, retention): a batch of big sessions
#: is as short a transaction as a batch of small ones; a single bigger session goes alone.
MAX_BATCH_MESSAGES = 20_000

#: Upper bound for ``batch_size`` of :meth:`SessionService.erase_user` (ids of one batch are
#: bound parameters; asyncpg allows 32,767 per statement).
MAX_ERASE_BATCH = 10_000


#: How many times an operation runs at most when the database aborts it to resolve a
#: conflict (serialization failure or deadlock, SQLSTATE 40001 / 40P01).
MAX_CONFLICT_ATTEMPTS = 3
#: Base of the jittered backoff between attempts, in seconds (doubled after each attempt).
CONFLICT_BACKOFF = 0.02


def _translating(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Let LedgerErrors through and turn database/driver errors into typed LedgerErrors.

    A :class:`ConflictError` is retried as a whole operation, up to
    :data:`MAX_CONFLICT_ATTEMPTS` runs with a short jittered backoff, when the service owns its
    units of work: a failed attempt was rolled back entirely, so running it again is safe.
    Inside :meth:`SessionService.using` the host's transaction is at stake, so the
    ConflictError surfaces at once and the host decides.
    """

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        service = args[0] if args else None
        retry = isinstance(service, SessionService) and service._retry_conflicts
        attempt = 1
        while True:
            try:
                try:
                    return await method(*args, **kwargs)
                except LedgerError:
                    raise
                except (SQLAlchemyError, OSError) as error:
                    raise translate_db_error(error) from error
            except ConflictError:
                if not retry or attempt >= MAX_CONFLICT_ATTEMPTS:
                    raise
                delay = CONFLICT_BACKOFF * 2 ** (attempt - 1) * (0.5 + random.random())
                logger.info(
                    "agentledger: %s hit a database conflict; retrying (attempt %d of %d)",
                    method.__name__,
                    attempt + 1,
                    MAX_CONFLICT_ATTEMPTS,
                )
                attempt += 1
                await asyncio.sleep(delay)

    return wrapper


def _once(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Translate errors like :func:`_translating`, but never rerun: for batched operations
    whose earlier batches stay committed (they report totals; call them again to resume)."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except LedgerError:
            raise
        except (SQLAlchemyError, OSError) as error:
            raise translate_db_error(error) from error

    return wrapper


class SessionService:
    """Create, append to, read, list, delete and clean up agent sessions."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        *,
        clock: Callable[[], datetime] = utcnow,
        read_uow_factory: UnitOfWorkFactory | None = None,
        retry_conflicts: bool = True,
    ) -> None:
        """``read_uow_factory`` serves history reads and listings (``get_items``,
        ``get_session``, ``list_user_sessions``, ``get_usage``, ``get_user_usage``), e.g. on a
        read replica; writes, and the reads a write depends on, always use ``uow_factory``.
        ``retry_conflicts``: rerun an operation the database aborted with a serialization
        failure or deadlock (only sound when ``uow_factory`` opens its own transactions)."""
        self._retry_conflicts = retry_conflicts
        self._tenant: str | None = None
        self._uow = uow_factory
        self._read_uow = read_uow_factory or uow_factory
        #: The unscoped factories, which every for_user() scopes afresh (never a scoped one).
        self._unscoped = (self._uow, self._read_uow)
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

        def borrowed(*, autocommit: bool = False, tenant: str | None = None) -> UnitOfWork:
            return UnitOfWork(borrow=connection, tenant=tenant)

        service = SessionService(borrowed, clock=self._clock, retry_conflicts=False)
        return service if self._tenant is None else service.for_user(self._tenant)

    def for_user(self, user_id: str) -> SessionService:
        """The same service acting for ``user_id``, for PostgreSQL row-level security.

        Every transaction it runs first names ``user_id`` in the transaction-local setting the
        policies read (``agentledger.user_id``), so with row-level security switched on
        (``agentledger db rls enable``) the database itself shows and accepts only that
        user's sessions, whatever the call. It costs the hot paths their single round trip
        (a transaction, plus one statement); without row-level security it changes nothing
        but that, and on SQLite it changes nothing at all. On a scoped service it replaces
        the tenant; it never stacks.
        """
        scope = check_name(user_id, "user_id")
        primary, reads = self._unscoped

        # A scoped service names its own tenant; the factories' argument is the protocol's.
        def scoped(*, autocommit: bool = False, tenant: str | None = None) -> UnitOfWork:
            return primary(autocommit=autocommit, tenant=scope)

        def scoped_reads(*, autocommit: bool = False, tenant: str | None = None) -> UnitOfWork:
            return reads(autocommit=autocommit, tenant=scope)

        service = SessionService(
            scoped,
            clock=self._clock,
            read_uow_factory=scoped_reads,
            retry_conflicts=self._retry_conflicts,
        )
        service._tenant = scope
        service._unscoped = self._unscoped
        return service

    @property
    def tenant(self) -> str | None:
        """The user this service acts for (:meth:`for_user`), or ``None``."""
        return self._tenant

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
        user_id = check_name(user_id, "user_id")
        agent_name = check_name(agent_name, "agent_name")
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
    async def resolve_name(
        self, name: str, *, user_id: str, create_as: SessionSpec | None = None
    ) -> uuid.UUID | None:
        """The id of the session ``user_id`` opened by ``name`` (``None``: there is none).

        A name is its owner's: the session normally lives at the id derived from the user and
        the name (:func:`agentledger.naming.resolve_session_uuid`), but when another user took
        that id first, the owner's session gets a random id and is found by its recorded name.
        With ``create_as`` a missing session is created (owner and agent from it).
        """
        user = check_name(user_id, "user_id")
        name = check_name(name, "session name")
        preferred = resolve_session_uuid(name, user)
        if create_as is None:
            async with self._uow(autocommit=True) as uow:
                return await uow.sessions.find_named(user, name, preferred)
        spec = SessionSpec(user, check_name(create_as.agent_name, "agent_name"), name)
        now = self._now()
        async with self._uow() as uow:
            # Insert first: on SQLite a transaction that reads before it writes may fail at
            # once under concurrent writers. The preferred id may be taken (by this user's
            # session: found below; by someone else's: a random id is the owner's instead).
            created = await uow.sessions.create_missing(preferred, spec, now)
            found = preferred if created else await uow.sessions.find_named(user, name, preferred)
            if found is None:
                fresh = uuid.uuid4()
                created = await uow.sessions.create_missing(fresh, spec, now)
                found = fresh if created else await uow.sessions.find_named(user, name, preferred)
            await uow.commit()
        if found is None:  # pragma: no cover - a concurrent creator made it, and it is not found
            raise SessionNotFoundError(f"session {name!r} of user {user!r} could not be opened")
        return found

    @_translating
    async def get_session(
        self, session_id: SessionId, user_id: str | None = None
    ) -> SessionRecord | None:
        """The session with its whole history, or ``None`` when missing or not ``user_id``'s."""
        sid = parse_session_id(session_id)
        user_id = check_owner(user_id)
        # Two statements, no transaction needed: messages are read up to the last_seq seen with
        # the session row, and sequences commit in order, so the result is always a prefix.
        async with self._read_uow(autocommit=True) as uow:
            return await uow.sessions.get(sid, user_id)

    @_translating
    async def list_user_sessions(
        self,
        user_id: str,
        limit: int = 10,
        *,
        cursor: str | None = None,
        agent_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        include_archived: bool = False,
    ) -> SessionPage:
        """A page of ``user_id``'s sessions, most recently updated first, in one query.

        ``agent_name`` keeps that agent's sessions; ``metadata`` keeps sessions whose metadata
        has each given top-level key with a value equal to the given string, number or
        boolean. Each summary carries a ``title`` for session pickers. Pass the same filters
        with each page's ``cursor``. Sessions archived by retention are left out unless
        ``include_archived``.
        """
        user_id = check_name(user_id, "user_id")
        checked = check_limit(limit)
        if checked is None or not 1 <= checked <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
        after = None if cursor is None else decode_listing_cursor(cursor)
        agent = None if agent_name is None else check_name(agent_name, "agent_name")
        meta_filter = check_metadata_filter(metadata)
        async with self._read_uow(autocommit=True) as uow:
            rows = await uow.sessions.list_for_user(
                user_id,
                limit=checked + 1,
                after=after,
                agent_name=agent,
                metadata=meta_filter or None,
                include_archived=bool(include_archived),
            )
        page, more = rows[:checked], len(rows) > checked
        next_cursor = encode_listing_cursor(page[-1].updated_at, page[-1].id) if more else None
        return SessionPage(tuple(page), next_cursor)

    @_translating
    async def delete_session(self, session_id: SessionId, *, user_id: str | None = None) -> bool:
        """Delete the session and (by cascade) its history; ``False`` when there was none.

        Raises :class:`SessionReferencedError` (naming the table and foreign key) when a row
        of another table refers to the session without ``ON DELETE``."""
        sid = parse_session_id(session_id)
        user_id = check_owner(user_id)
        try:
            async with self._uow(autocommit=True) as uow:
                deleted = await uow.sessions.delete(sid, user_id)
                await uow.commit()
        except SessionReferencedError as error:
            raise await self._explained(error, (sid,)) from error
        return deleted

    @_once
    async def cleanup_sessions(
        self,
        older_than: timedelta,
        *,
        dry_run: bool = False,
        batch_size: int = 500,
        max_batch_messages: int = MAX_BATCH_MESSAGES,
        on_progress: Callable[[int], None] | None = None,
        on_blocked: Callable[[BlockedSession], None] | None = None,
    ) -> int:
        """Delete sessions not updated for ``older_than``, in batches; return how many.

        Each batch is its own short transaction of at most ``batch_size`` sessions holding at
        most ``max_batch_messages`` messages together (a single bigger session goes alone),
        so the cleanup never holds locks for long. ``dry_run`` only counts. ``on_progress``
        receives the running total. A session that a row of another table refers to (a
        foreign key without ``ON DELETE``) is skipped, logged as a warning and passed to
        ``on_blocked``; the rest are deleted.
        """
        if not isinstance(older_than, timedelta) or older_than < timedelta(0):
            raise ValueError("older_than must be a non-negative datetime.timedelta")
        check_count(batch_size, "batch_size", maximum=MAX_ERASE_BATCH)
        check_count(max_batch_messages, "max_batch_messages")
        if dry_run:
            sessions, _messages = await self.count_idle_sessions(older_than)
            return sessions
        await self._require_every_tenant("cleanup")
        total = 0

        def progress(counts: RetentionCounts, blocked: list[BlockedSession]) -> None:
            nonlocal total
            total += counts.deleted_sessions
            if on_progress is not None and counts.deleted_sessions:
                on_progress(total)
            for session in blocked:
                if on_blocked is not None:
                    on_blocked(session)

        cutoff = cutoff_before(self._now(), older_than)
        await self._retire_idle(
            AgentScope(),
            cutoff,
            archive=False,
            batch_size=batch_size,
            now=self._now(),
            progress=progress,
            max_messages=max_batch_messages,
        )
        return total

    @_translating
    async def count_idle_sessions(self, older_than: timedelta) -> tuple[int, int]:
        """``(sessions, messages)`` a cleanup with ``older_than`` would delete now."""
        if not isinstance(older_than, timedelta) or older_than < timedelta(0):
            raise ValueError("older_than must be a non-negative datetime.timedelta")
        cutoff = cutoff_before(self._now(), older_than)
        await self._require_every_tenant("cleanup")
        async with self._uow(autocommit=True) as uow:
            return await uow.maintenance.count_idle(AgentScope(), cutoff)

    # -- lifecycle: fork, rewind, metadata, title, erasure ----------------------------------

    @_translating
    async def fork_session(
        self,
        session_id: SessionId,
        at_seq: int | None = None,
        *,
        user_id: str | None = None,
        title: str | None = None,
    ) -> SessionRecord:
        """A new session (same owner, agent and metadata) whose history is a copy of this
        one's up to and including ``at_seq`` (all of it when ``None``), renumbered from 1.

        The copy is made inside the database in one transaction of a fixed number of
        statements, whatever the history's size; the source is locked meanwhile, so the copy
        is an exact prefix. ``title`` defaults to the source's explicit title. Returns the new
        session with its history, as :meth:`get_session` would.
        """
        sid = parse_session_id(session_id)
        at = None if at_seq is None else check_seq(at_seq, "at_seq")
        user = check_owner(user_id)
        new_title = None if title is None else check_title(title)
        new_id = uuid.uuid4()
        now = self._now()
        async with self._uow() as uow:
            source = await self._lock(uow, sid, user)
            through = source.last_seq if at is None else at
            check_in_history(through, source, "at_seq", sid)
            await uow.sessions.create_copy(
                source,
                session_id=new_id,
                title=source.title if new_title is None else new_title,
                last_seq=through - source.trimmed_seq,
                now=now,
            )
            if through > source.trimmed_seq:
                await uow.messages.copy(
                    sid, new_id, after_seq=source.trimmed_seq, through_seq=through
                )
            record = await uow.sessions.get(new_id, None)
            await uow.commit()
        assert record is not None  # created by this transaction
        return record

    @_translating
    async def rewind_session(
        self, session_id: SessionId, to_seq: int, *, user_id: str | None = None
    ) -> int:
        """Drop every message after ``to_seq``; return how many were removed.

        Atomic under the session row's lock, so a concurrent append lands either before (and
        is dropped) or after (at ``to_seq + 1``): the history never has a gap. Idempotency
        records of batches that reached past ``to_seq`` are dropped too, so retrying such a
        batch appends it again. ``to_seq`` equal to the last seq removes nothing.
        """
        sid = parse_session_id(session_id)
        to = check_seq(to_seq, "to_seq")
        user = check_owner(user_id)
        now = self._now()
        async with self._uow() as uow:
            session = await self._lock(uow, sid, user)
            check_in_history(to, session, "to_seq", sid)
            removed = session.last_seq - to
            if removed:
                await uow.messages.rewind(sid, to, now)
                await uow.commit()
        return removed

    @_translating
    async def update_metadata(
        self, session_id: SessionId, changes: Mapping[str, Any], *, user_id: str | None = None
    ) -> SessionRecord:
        """Merge ``changes`` into the session's metadata (a key set to ``None`` is removed).

        Read, merged and written under the session row's lock, so concurrent updates of
        different keys all survive. Returns the session as :meth:`get_session` would.
        """
        sid = parse_session_id(session_id)
        checked = check_metadata_changes(changes)
        user = check_owner(user_id)
        now = self._now()
        async with self._uow() as uow:
            session = await self._lock(uow, sid, user)
            merged = dict(session.metadata)
            for key, value in checked.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            if json.dumps(merged, sort_keys=True) != json.dumps(session.metadata, sort_keys=True):
                await uow.sessions.set_metadata(sid, merged, now)
            record = await uow.sessions.get(sid, None)
            await uow.commit()
        assert record is not None  # locked by this transaction
        return record

    @_translating
    async def set_title(
        self, session_id: SessionId, title: str | None, *, user_id: str | None = None
    ) -> SessionRecord:
        """Set the session's title for pickers (``None`` removes it: listings then show the
        first user message). Returns the session as :meth:`get_session` would."""
        sid = parse_session_id(session_id)
        new_title = None if title is None else check_title(title)
        user = check_owner(user_id)
        now = self._now()
        async with self._uow() as uow:
            session = await self._lock(uow, sid, user)
            if session.title != new_title:
                await uow.sessions.set_title(sid, new_title, now)
            record = await uow.sessions.get(sid, None)
            await uow.commit()
        assert record is not None  # locked by this transaction
        return record

    @_once
    async def erase_user(
        self,
        user_id: str,
        *,
        batch_size: int = 500,
        dry_run: bool = False,
        on_progress: Callable[[ErasureReport], None] | None = None,
    ) -> ErasureReport:
        """Remove every session, message and usage record of ``user_id``; report the counts.

        Works in batches of up to ``batch_size`` sessions, each its own short transaction, so
        a user with a large history never holds locks for long; an interrupted erasure is
        finished by calling it again. ``dry_run`` only counts. ``on_progress`` receives the
        running totals after each batch. Stop the user's traffic first: a session created
        while the erasure runs may survive it. Its transactions name ``user_id`` to PostgreSQL
        row-level security (as :meth:`for_user` does), so it erases from the application's
        role too, where an unscoped service would find nothing. Sessions that rows of another
        table refer to (foreign keys without ``ON DELETE``) stay, listed in ``blocked``.
        """
        user_id = check_name(user_id, "user_id")
        check_count(batch_size, "batch_size", maximum=MAX_ERASE_BATCH)
        if dry_run:
            async with self._uow(autocommit=True, tenant=user_id) as uow:
                return ErasureReport(*await uow.maintenance.count_for_user(user_id))
        total = ErasureReport()
        after: uuid.UUID | None = None
        while True:
            async with self._uow(tenant=user_id) as uow:
                batch = await uow.maintenance.user_sessions(user_id, after=after, limit=batch_size)
                if not batch:
                    return total
                deleted, blocked = await self._delete_sessions(uow, [c.id for c in batch])
                await uow.commit()
            after = batch[-1].id
            total += ErasureReport(
                len(deleted),
                sum(messages for _sid, messages, _usage in deleted),
                sum(usage for _sid, _messages, usage in deleted),
                tuple(blocked),
            )
            if on_progress is not None:
                on_progress(total)

    async def _delete_sessions(
        self,
        uow: UnitOfWork,
        session_ids: list[uuid.UUID],
        *,
        idle_before: datetime | None = None,
    ) -> tuple[list[tuple[uuid.UUID, int, int]], list[BlockedSession]]:
        """Delete these sessions in ``uow``, skipping those another table's foreign key keeps
        (each tried alone in a SAVEPOINT once the batch was refused): ``(deleted, blocked)``."""
        try:
            async with uow.savepoint():
                return await uow.maintenance.delete(session_ids, idle_before=idle_before), []
        except SessionReferencedError:
            pass
        deleted: list[tuple[uuid.UUID, int, int]] = []
        blocked: list[BlockedSession] = []
        for sid in session_ids:
            try:
                async with uow.savepoint():
                    deleted += await uow.maintenance.delete([sid], idle_before=idle_before)
            except SessionReferencedError as error:
                blocked.append(BlockedSession(sid, error.table, error.constraint))
        if blocked and blocked[0].table is None:  # SQLite does not name the foreign key
            keys = await uow.maintenance.blocking_foreign_keys()
            if len(keys) == 1:
                blocked = [
                    BlockedSession(b.session_id, keys[0].table, keys[0].constraint) for b in blocked
                ]
        for session in blocked:
            logger.warning(
                "agentledger: session %s was not deleted: table %s refers to it (foreign key "
                "%s without ON DELETE)",
                session.session_id,
                session.table or "(unknown)",
                session.constraint or "(unnamed)",
            )
        return deleted, blocked

    async def _explained(
        self, error: SessionReferencedError, session_ids: tuple[uuid.UUID, ...]
    ) -> SessionReferencedError:
        """``error`` naming the foreign key even where the database did not (SQLite)."""
        table, constraint = error.table, error.constraint
        if table is None:
            async with self._uow(autocommit=True) as uow:
                keys = await uow.maintenance.blocking_foreign_keys()
            if len(keys) == 1:
                table, constraint = keys[0].table, keys[0].constraint
        return referenced_error(table, constraint, session_ids, sqlstate=error.sqlstate)

    # -- search, transcripts, retention ---------------------------------------------------------

    def _lifecycle(self, uow: UnitOfWork) -> LifecycleRepository:
        return LifecycleRepository(uow.session, postgres=uow.dialect_name == "postgresql")

    @_translating
    async def search(
        self,
        user_id: str,
        query: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
        agent_name: str | None = None,
        include_archived: bool = False,
    ) -> SearchPage:
        """Full-text search over ``user_id``'s messages, best match first, one query per page.

        ``query`` uses web-search syntax (words, ``"a phrase"``, ``-excluded``, ``or``) and is
        always a bound parameter: PostgreSQL parses it with ``websearch_to_tsquery('simple',
        ...)`` and ranks with ``ts_rank``; SQLite matches case-insensitive substrings and ranks
        by occurrences (see :mod:`agentledger.search`). Archived sessions are left out unless
        ``include_archived``. Pass a page's ``next_cursor`` (with the same query and filters)
        for the next page.
        """
        user_id = check_name(user_id, "user_id")
        terms = parse_query(query)
        checked = check_limit(limit)
        if checked is None or not 1 <= checked <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
        agent = None if agent_name is None else check_name(agent_name, "agent_name")
        fingerprint = query_fingerprint(terms.text, agent, bool(include_archived))
        after = None if cursor is None else decode_search_cursor(cursor, fingerprint)
        async with self._uow(autocommit=True) as uow:
            rows = await self._lifecycle(uow).search(
                user_id,
                terms,
                limit=checked + 1,
                after=after,
                agent_name=agent,
                include_archived=bool(include_archived),
            )
        wanted = terms.wanted
        hits = tuple(
            SearchHit(
                session_id=row.session_id,
                seq=row.seq,
                role=row.role,
                content=row.content,
                snippet=make_snippet(row.content, wanted),
                rank=row.rank,
                created_at=row.created_at,
                agent_name=row.agent_name,
                item_type=row.item_type,
            )
            for row in rows[:checked]
        )
        next_cursor = None
        if len(rows) > checked:
            last = hits[-1]
            next_cursor = encode_search_cursor(last.rank, last.session_id, last.seq, fingerprint)
        return SearchPage(hits, next_cursor)

    @_translating
    async def export_session(
        self, session_id: SessionId, *, user_id: str | None = None
    ) -> SessionTranscript:
        """The session and its whole (untrimmed) history, exactly as stored, for
        :mod:`agentledger.transcripts` (JSONL or Markdown).

        Read in one transaction that holds appends and trims back (PostgreSQL ``FOR SHARE``),
        so the transcript is a consistent snapshot.
        """
        sid = parse_session_id(session_id)
        user = check_owner(user_id)
        async with self._uow() as uow:
            lifecycle = self._lifecycle(uow)
            state = await lifecycle.session_state(sid, user, share_lock=True)
            if state is None:
                suffix = "" if user is None else f" for user {user!r}"
                raise SessionNotFoundError(
                    f"session {sid} does not exist{suffix}; check the id (list them with "
                    "`agentledger sessions list --user USER`)"
                )
            rows, damaged = await lifecycle.history(
                sid, after_seq=state.trimmed_seq, upto_seq=state.last_seq
            )
        messages = tuple(
            TranscriptMessage(seq=seq, item=item, created_at=created_at)
            for seq, item, created_at in rows
        )
        return SessionTranscript(
            id=state.id,
            user_id=state.user_id,
            agent_name=state.agent_name,
            metadata=state.metadata,
            created_at=state.created_at,
            updated_at=state.updated_at,
            messages=messages,
            title=state.title,
            archived_at=state.archived_at,
            trimmed_seq=state.trimmed_seq,
            damaged_seqs=tuple(damaged),
        )

    @_translating
    async def import_session(
        self,
        transcript: SessionTranscript,
        *,
        user_id: str,
        session_id: SessionId | None = None,
        chunk_size: int = 500,
    ) -> TranscriptImport:
        """Store an exported session for ``user_id``, losslessly and idempotently.

        The session keeps its id (or takes ``session_id``), agent, title, metadata, creation
        and archive times, and each message keeps its ``seq``. Importing again adds nothing:
        messages the session already holds are compared, not copied, and the rest is appended
        in chunks stored under idempotency keys (``transcript:FIRST-LAST``), so an interrupted
        import resumes where it stopped. Everything is validated before anything is written,
        and a new session is created in the same transaction as its first chunk, so a failed
        import leaves no empty session behind. Times from the future (beyond this clock) are
        stored as now.
        """
        check_transcript(transcript)
        user = check_name(user_id, "user_id")
        check_count(chunk_size, "chunk_size", maximum=MAX_ERASE_BATCH)
        target = transcript.id if session_id is None else parse_session_id(session_id)
        agent = check_name(transcript.agent_name, "agent_name")
        title = None if transcript.title is None else check_title(transcript.title)
        meta = self._check_metadata(transcript.metadata)
        rows = [prepare_item(m.item, m.seq) for m in transcript.messages]
        now = self._now()
        stamps = {
            m.seq: not_after(m.created_at, now)
            for m in transcript.messages
            if m.created_at is not None
        }
        by_seq = {m.seq: row for m, row in zip(transcript.messages, rows, strict=True)}
        start = transcript.trimmed_seq
        created_at = not_after(transcript.created_at, now)
        archived_at = (
            None if transcript.archived_at is None else not_after(transcript.archived_at, now)
        )
        pending = sorted(by_seq)
        added = 0
        created = False
        async with self._uow() as uow:
            lifecycle = self._lifecycle(uow)
            state = await lifecycle.session_state(target)
            if state is None:
                await uow.sessions.create(
                    session_id=target,
                    user_id=user,
                    agent_name=agent,
                    metadata=meta,
                    now=now,
                    title=title,
                    created_at=created_at,
                    archived_at=archived_at,
                    start_seq=start,
                )
                created = True
                state_last = start
            elif state.user_id != user:
                raise AlreadyExistsError(
                    f"session id {target} is taken by another user; import the transcript "
                    "under a new id with session_id= (CLI: --session-id NEW_UUID)"
                )
            else:
                state_last = await self._check_import_target(
                    lifecycle, target, state, start, by_seq
                )
            pending = [seq for seq in pending if seq > state_last]
            if created and pending:
                # The first chunk in the creating transaction: nothing is left half-imported.
                first = pending[:chunk_size]
                appended = await self._append_chunk(uow, target, user, by_seq, first, stamps, now)
                added += appended or 0
                pending = pending[len(first) :]
            await uow.commit()
        for index in range(0, len(pending), chunk_size):
            seqs = pending[index : index + chunk_size]
            async with self._uow() as uow:
                result = await self._append_chunk(uow, target, user, by_seq, seqs, stamps, now)
                await uow.commit()
            if result is None:  # imported before, then removed (popped or rewound): keep it so
                break
            added += result
        if created or added:
            async with self._uow() as uow:
                # A restored session keeps its place in "most recently updated first".
                await self._lifecycle(uow).set_updated_at(
                    target, not_after(transcript.updated_at, now)
                )
                await uow.commit()
        return TranscriptImport(target, added, created)

    async def _check_import_target(
        self,
        lifecycle: LifecycleRepository,
        target: uuid.UUID,
        state: SessionState,
        start: int,
        by_seq: Mapping[int, NewRow],
    ) -> int:
        """An existing session of the importing user: move an empty one's start to the
        transcript's, check that the messages it holds are the transcript's; its last seq."""
        state_last, state_trimmed = state.last_seq, state.trimmed_seq
        if state_last == state_trimmed and state_last < start:
            await lifecycle.move_empty_start(target, start)
            state_last = state_trimmed = start
        if state_last < start:
            raise InvalidInputError(
                f"session {target} ends at seq {state_last} but the transcript starts at "
                f"seq {start + 1}; import it under a new id with session_id="
            )
        stored, damaged = await lifecycle.history(
            target, after_seq=max(state_trimmed, start), upto_seq=state_last
        )
        different = [seq for seq in damaged if seq in by_seq]
        different += [
            seq
            for seq, item, _created_at in stored
            if seq in by_seq and dump_json(item, "item") != by_seq[seq].item_json
        ]
        if different:
            raise InvalidInputError(
                f"session {target} holds a different message at seq {min(different)} than the "
                "transcript; import it under a new id with session_id="
            )
        return state_last

    async def _append_chunk(
        self,
        uow: UnitOfWork,
        sid: uuid.UUID,
        user_id: str,
        by_seq: Mapping[int, NewRow],
        seqs: list[int],
        stamps: Mapping[int, datetime],
        now: datetime,
    ) -> int | None:
        """Append the messages ``seqs`` (consecutive) so they land at those seqs, in ``uow``;
        how many were added (``None`` when this chunk was imported before and has since been
        removed). The caller commits."""
        rows = [by_seq[seq] for seq in seqs]
        first_seq = seqs[0]
        key = f"transcript:{first_seq}-{first_seq + len(rows) - 1}"
        fingerprint = batch_fingerprint(rows)
        last_seq = await uow.sessions.lock(sid, user_id)
        if last_seq is None:
            await self._check_owner(uow, sid, user_id, missing_ok=False)
            raise SessionNotFoundError(f"session {sid} does not exist")  # pragma: no cover
        earlier = await uow.messages.find_batch(sid, key)
        if earlier is not None:
            if earlier[3] != fingerprint:
                raise InvalidInputError(
                    f"session {sid} already imported a different chunk as {key!r}; import "
                    "the transcript under a new id with session_id="
                )
            return None if last_seq < first_seq + len(rows) - 1 else 0
        if last_seq != first_seq - 1:
            raise ConflictError(
                f"session {sid} changed during the import (it now ends at seq {last_seq}, "
                f"expected {first_seq - 1}); run the import again"
            )
        await uow.messages.append(sid, rows, user_id=user_id, now=now)
        await self._lifecycle(uow).set_created_at(
            sid, [(seq, stamps[seq]) for seq in seqs if seq in stamps]
        )
        await uow.messages.remember_batch(sid, key, first_seq, len(rows), fingerprint, now)
        return len(rows)

    @_once
    async def apply_retention(
        self,
        policies: Mapping[str, RetentionPolicy | Mapping[str, Any]],
        *,
        dry_run: bool = False,
        batch_size: int = 500,
        on_progress: Callable[[RetentionReport], None] | None = None,
    ) -> RetentionReport:
        """Apply per-agent retention policies (see :mod:`agentledger.retention`).

        First idle sessions are deleted (or archived), then long histories are trimmed from
        the front, never splitting a tool call from its output. Every batch is its own short
        transaction: idle sessions ``batch_size`` at a time; trimming one session at a time,
        under its row lock, advancing ``trimmed_seq`` so the history stays gap-free.
        ``dry_run`` computes the same report without writing. ``on_progress`` receives the
        running report after every batch.
        """
        checked = parse_policies(policies)
        check_count(batch_size, "batch_size", maximum=MAX_ERASE_BATCH)
        await self._require_every_tenant("retention")
        now = self._now()
        named = frozenset(name for name in checked if name != DEFAULT_POLICY_KEY)
        counts: dict[str, RetentionCounts] = {name: RetentionCounts() for name in checked}
        blocked: list[BlockedSession] = []

        def report() -> RetentionReport:
            return RetentionReport(dry_run, dict(counts), tuple(blocked))

        def progress(name: str, done: RetentionCounts, kept: list[BlockedSession]) -> None:
            counts[name] = counts[name] + done
            blocked.extend(kept)
            if on_progress is not None:
                on_progress(report())

        scopes = {
            name: AgentScope(None, named) if name == DEFAULT_POLICY_KEY else AgentScope(name)
            for name in checked
        }
        for name, policy in checked.items():
            if policy.days is None:
                continue
            cutoff = cutoff_before(now, policy.days)
            if dry_run:
                async with self._uow(autocommit=True) as uow:
                    sessions, messages = await uow.maintenance.count_idle(
                        scopes[name], cutoff, unarchived_only=policy.archive
                    )
                if policy.archive:
                    progress(name, RetentionCounts(archived_sessions=sessions), [])
                else:
                    idle = RetentionCounts(deleted_sessions=sessions, deleted_messages=messages)
                    progress(name, idle, [])
                continue
            await self._retire_idle(
                scopes[name],
                cutoff,
                archive=policy.archive,
                batch_size=batch_size,
                now=now,
                progress=functools.partial(progress, name),
                max_messages=None if policy.archive else MAX_BATCH_MESSAGES,
            )
        for name, policy in checked.items():
            if policy.max_messages is not None:
                deleting = None
                if policy.days is not None and not policy.archive:
                    deleting = cutoff_before(now, policy.days)
                await self._trim_sessions(
                    scopes[name],
                    policy.max_messages,
                    dry_run,
                    batch_size,
                    functools.partial(progress, name),
                    # Sessions this policy deletes are not trimmed (nor counted in a dry run).
                    active_since=deleting,
                )
        return report()

    async def _retire_idle(
        self,
        scope: AgentScope,
        cutoff: datetime,
        *,
        archive: bool,
        batch_size: int,
        now: datetime,
        progress: Callable[[RetentionCounts, list[BlockedSession]], None],
        max_messages: int | None = None,
    ) -> None:
        """Delete (or archive) the scope's sessions idle since ``cutoff``: batches chosen by
        keyset, so a session that cannot be deleted is passed, never chosen again."""
        after: tuple[datetime, uuid.UUID] | None = None
        while True:
            async with self._uow() as uow:
                batch = await uow.maintenance.idle(
                    scope,
                    cutoff,
                    after=after,
                    limit=batch_size,
                    max_messages=max_messages,
                    unarchived_only=archive,
                )
                if not batch:
                    return
                ids = [candidate.id for candidate in batch]
                blocked: list[BlockedSession] = []
                if archive:
                    done = await uow.maintenance.archive(ids, idle_before=cutoff, now=now)
                    counts = RetentionCounts(archived_sessions=done)
                else:
                    deleted, blocked = await self._delete_sessions(uow, ids, idle_before=cutoff)
                    counts = RetentionCounts(
                        deleted_sessions=len(deleted),
                        deleted_messages=sum(messages for _sid, messages, _usage in deleted),
                        blocked_sessions=len(blocked),
                    )
                await uow.commit()
            after = batch[-1].key
            progress(counts, blocked)

    async def _trim_sessions(
        self,
        scope: AgentScope,
        max_messages: int,
        dry_run: bool,
        batch_size: int,
        progress: Callable[[RetentionCounts, list[BlockedSession]], None],
        *,
        active_since: datetime | None,
    ) -> None:
        after: uuid.UUID | None = None
        while True:
            async with self._uow(autocommit=True) as uow:
                candidates = await self._lifecycle(uow).trim_candidates(
                    scope, max_messages, after=after, limit=batch_size, active_since=active_since
                )
            sessions = trimmed = 0
            blocked: list[BlockedSession] = []
            for sid in candidates:
                try:
                    cut = await self._trim_session(sid, max_messages, dry_run)
                except SessionReferencedError as error:
                    explained = await self._explained(error, (sid,))
                    blocked.append(BlockedSession(sid, explained.table, explained.constraint))
                    continue
                if cut:
                    sessions += 1
                    trimmed += cut
            if sessions or blocked:
                counts = RetentionCounts(
                    trimmed_sessions=sessions,
                    trimmed_messages=trimmed,
                    blocked_sessions=len(blocked),
                )
                progress(counts, blocked)
            if len(candidates) < batch_size:
                return
            after = candidates[-1]

    async def _trim_session(self, sid: uuid.UUID, max_messages: int, dry_run: bool) -> int:
        """Trim one session to at most ``max_messages`` under its row lock; how many were
        trimmed (see :func:`agentledger.retention.trim_cut`)."""
        async with self._uow() as uow:
            lifecycle = self._lifecycle(uow)
            counters = await (
                lifecycle.read_counters(sid) if dry_run else lifecycle.lock_counters(sid)
            )
            if counters is None:
                return 0
            trimmed_seq, last_seq = counters
            if last_seq - trimmed_seq <= max_messages:
                return 0
            items = await lifecycle.items_between(sid, after_seq=trimmed_seq, upto_seq=last_seq)
            cut = trim_cut(items, max_messages)
            if cut and not dry_run:
                await lifecycle.trim_front(sid, trimmed_seq + cut)
                await uow.commit()
        return cut

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
        key = None if idempotency_key is None else check_name(idempotency_key, "idempotency_key")
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
        key = None if idempotency_key is None else check_name(idempotency_key, "idempotency_key")
        return await self._append(
            parse_session_id(session_id), rows, user_id=user_id, create=create_as, key=key
        )

    @_translating
    async def batch_keys(
        self, session_id: SessionId, *, prefix: str = "", user_id: str | None = None
    ) -> list[str]:
        """Idempotency keys of the batches stored in the session that start with ``prefix``.

        Lets a resumable job (such as ``agentledger import``) find where it stopped. With
        ``user_id``, a missing session has no keys and another user's session raises
        :class:`SessionNotFoundError`, as :meth:`get_items` does.
        """
        sid = parse_session_id(session_id)
        user = check_owner(user_id)
        if not isinstance(prefix, str) or "\x00" in prefix or len(prefix) > 255:
            raise InvalidInputError("prefix must be a string of at most 255 characters, no NUL")
        async with self._uow(autocommit=True) as uow:
            if user is not None:
                await self._check_owner(uow, sid, user, missing_ok=True)
            return await uow.messages.batch_keys(sid, prefix)

    @_translating
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
            items = await uow.messages.items(sid, checked, user_id)
            if not items and user_id is not None:
                await self._check_owner(uow, sid, user_id, missing_ok=True)
        return items

    @_translating
    async def pop_item(self, session_id: SessionId, *, user_id: str | None = None) -> Any:
        """Remove and return the newest item (``None`` when empty); exactly once per item."""
        sid = parse_session_id(session_id)
        user_id = check_owner(user_id)
        async with self._uow() as uow:  # two statements: see MessageRepository.pop
            item = await uow.messages.pop(sid, user_id, self._now())
            await uow.commit()
            if item is None and user_id is not None:
                await self._check_owner(uow, sid, user_id, missing_ok=True)
        return item

    @_translating
    async def clear_session(self, session_id: SessionId, *, user_id: str | None = None) -> None:
        """Delete every message of the session (the session itself stays)."""
        sid = parse_session_id(session_id)
        user_id = check_owner(user_id)
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
        user_id = check_owner(user_id)
        if not isinstance(usage, Usage):
            raise TypeError(f"usage must be an agentledger.Usage, not {type(usage).__name__}")
        for name in ("requests", "input_tokens", "output_tokens", "total_tokens"):
            value = getattr(usage, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT64:
                raise InvalidInputError(
                    f"usage.{name} must be an int from 0 to {MAX_INT64}, got {value!r}"
                )
        if user_id is not None or self._tenant is not None:
            # A separate read: on SQLite a transaction that reads before it writes may fail
            # at once under concurrent writers instead of waiting for the lock. Under
            # row-level security it turns another tenant's session into "not found" rather
            # than a policy violation that would confirm the session exists.
            async with self._uow(autocommit=True) as uow:
                await self._check_owner(uow, sid, user_id, missing_ok=False)
        async with self._uow() as uow:
            await uow.usage.add(sid, usage, self._now())
            await uow.commit()

    @_translating
    async def get_usage(self, session_id: SessionId, *, user_id: str | None = None) -> Usage:
        """Token usage totals of the session."""
        sid = parse_session_id(session_id)
        user_id = check_owner(user_id)
        async with self._read_uow(autocommit=True) as uow:
            if user_id is not None:
                await self._check_owner(uow, sid, user_id, missing_ok=True)
            return await uow.usage.totals(session_id=sid)

    @_translating
    async def get_user_usage(self, user_id: str) -> Usage:
        """Token usage totals over every session of ``user_id``."""
        user_id = check_name(user_id, "user_id")
        async with self._read_uow(autocommit=True) as uow:
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
        user_id = check_owner(user_id)
        if create is not None:
            user_id = create.user_id
        now = self._now()
        if key is not None:
            return await self._append_once(sid, rows, user_id, key, now, create)
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
                # A concurrent first write may create it meanwhile, and row-level security
                # may hide another tenant's row: create only if missing, then look again.
                await uow.sessions.create_missing(sid, create, now)
                if await uow.sessions.lock(sid, user_id) is None:
                    await self._check_owner(uow, sid, user_id, missing_ok=False)
                    raise SessionNotFoundError(f"session {sid} is hidden")  # pragma: no cover
            fingerprint = batch_fingerprint(rows)
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

    async def _lock(self, uow: UnitOfWork, sid: uuid.UUID, user_id: str | None) -> LockedSession:
        """Lock the session row for this unit of work, or raise SessionNotFoundError."""
        session = await uow.sessions.lock_state(sid, user_id)
        if session is None:
            await self._check_owner(uow, sid, user_id, missing_ok=False)
            raise SessionNotFoundError(f"session {sid} does not exist")  # pragma: no cover
        return session

    async def _check_owner(
        self, uow: UnitOfWork, sid: uuid.UUID, user_id: str | None, *, missing_ok: bool
    ) -> None:
        """Raise SessionNotFoundError unless the session exists (or may be missing) and
        belongs to ``user_id``. Another user's session reads exactly like a missing one.

        A write that needs the session, from a service that names no tenant while PostgreSQL
        row-level security confines the role, raises PermissionDeniedError instead: every
        session is hidden from it, and "not found" would hide the real mistake."""
        owner = await uow.sessions.owner_of(sid)
        if owner is None and missing_ok:
            return
        if owner is None and self._tenant is None and await uow.sessions.confined():
            raise PermissionDeniedError(_UNSCOPED_UNDER_RLS)
        if owner is None or (user_id is not None and owner != user_id):
            suffix = "" if user_id is None else f" for user {user_id!r}"
            raise SessionNotFoundError(
                f"session {sid} does not exist{suffix}; create it with "
                "create_session() or check the id and user_id"
            )

    async def _require_every_tenant(self, operation: str) -> None:
        """Refuse maintenance across tenants from a role that row-level security confines: it
        would see no session at all and report success while doing nothing."""
        if self._tenant is not None:
            raise PermissionDeniedError(
                f"{operation} acts on every tenant's sessions; run it on the unscoped service "
                "(ledger.service), not one made with for_user()"
            )
        async with self._uow(autocommit=True) as uow:
            confined = await uow.sessions.confined()
        if confined:
            raise PermissionDeniedError(
                f"{operation} acts on every tenant's sessions, but row-level security confines "
                "this database role to one tenant's, so it would find none; run it as the "
                "tables' owner (the role that runs `agentledger db upgrade`) or a role with "
                "BYPASSRLS"
            )

    @staticmethod
    def _check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
        if metadata is None:
            return {}
        if not isinstance(metadata, Mapping):
            raise InvalidInputError(
                f"metadata must be a JSON object (a dict), got {type(metadata).__name__}"
            )
        encoded = dump_json(dict(metadata), "metadata", jsonb=True)
        return json.loads(encoded)  # type: ignore[no-any-return]
