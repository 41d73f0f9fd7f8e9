"""Sessions: create, name, read, list, delete, fork, rewind, metadata and titles."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from agentledger.db.uow import UnitOfWork
from agentledger.domain import cursors
from agentledger.domain.naming import resolve_session_uuid
from agentledger.domain.records import SessionPage, SessionRecord, SessionSpec, SessionState
from agentledger.domain.validation import (
    MAX_PAGE_SIZE,
    check_in_history,
    check_limit,
    check_metadata,
    check_metadata_changes,
    check_metadata_filter,
    check_name,
    check_owner,
    check_seq,
    check_title,
    parse_session_id,
    title_pattern,
)
from agentledger.errors import InvalidInputError, SessionNotFoundError, SessionReferencedError
from agentledger.services.base import ServiceBase, SessionId, operation


async def read_record(uow: UnitOfWork, state: SessionState) -> SessionRecord:
    """The session with its history up to the ``last_seq`` read with it: sequences commit in
    order, so without a transaction too the history is always a prefix."""
    messages = await uow.messages.history(
        state.id, after_seq=state.trimmed_seq, upto_seq=state.last_seq
    )
    return SessionRecord(
        id=state.id,
        user_id=state.user_id,
        agent_name=state.agent_name,
        metadata=state.metadata,
        created_at=state.created_at,
        updated_at=state.updated_at,
        messages=tuple(messages),
        title=state.title,
        name=state.name,
    )


class Sessions(ServiceBase):
    """Session use cases."""

    @operation()
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
        meta = check_metadata(metadata)
        new_id = uuid.uuid4() if session_id is None else parse_session_id(session_id)
        now = self._now()
        async with self._uow(autocommit=True) as uow:
            await uow.sessions.create(
                session_id=new_id, user_id=user_id, agent_name=agent_name, metadata=meta, now=now
            )
            await uow.commit()
        return SessionRecord(new_id, user_id, agent_name, meta, now, now, ())

    @operation()
    async def resolve_name(
        self,
        name: str,
        *,
        user_id: str,
        create_as: SessionSpec | None = None,
        new_id: uuid.UUID | None = None,
    ) -> uuid.UUID | None:
        """The id of the session ``user_id`` opened by ``name`` (``None``: there is none).

        A name is its owner's: the session normally lives at the id derived from the user and
        the name (:func:`agentledger.domain.naming.resolve_session_uuid`), but when another
        user took that id first, the owner's session gets a random id and is found by its
        recorded name. With ``create_as`` a missing session is created (its agent from it),
        under ``new_id`` (default: a random id) when the derived id is taken.
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
            found = None
            for candidate in (preferred, new_id or uuid.uuid4()):
                if await uow.sessions.create_missing(candidate, spec, now):
                    found = candidate
                else:
                    found = await uow.sessions.find_named(user, name, preferred)
                if found is not None:
                    break
            await uow.commit()
        if found is None:  # pragma: no cover - a concurrent creator made it, and it is not found
            raise SessionNotFoundError(f"session {name!r} of user {user!r} could not be opened")
        return found

    @operation()
    async def get_session(
        self, session_id: SessionId, user_id: str | None = None
    ) -> SessionRecord | None:
        """The session with its whole history, or ``None`` when missing or not ``user_id``'s."""
        sid = parse_session_id(session_id)
        user_id = check_owner(user_id)
        async with self._read_uow(autocommit=True) as uow:
            state = await uow.sessions.read(sid, user_id)
            return None if state is None else await read_record(uow, state)

    @operation()
    async def describe_session(
        self, session_id: SessionId, *, user_id: str | None = None
    ) -> SessionState | None:
        """The session's row without its history (one indexed read, whatever its size): its
        ``last_seq``, ``trimmed_seq`` and ``message_count`` say where it ends; ``None`` when
        missing or not ``user_id``'s."""
        sid = parse_session_id(session_id)
        user = check_owner(user_id)
        async with self._read_uow(autocommit=True) as uow:
            return await uow.sessions.read(sid, user)

    @operation()
    async def list_user_sessions(
        self,
        user_id: str,
        limit: int = 10,
        *,
        cursor: str | None = None,
        agent_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        include_archived: bool = False,
        title: str | None = None,
    ) -> SessionPage:
        """A page of ``user_id``'s sessions, most recently updated first, in one query.

        ``agent_name`` keeps that agent's sessions; ``metadata`` keeps sessions whose metadata
        has each given top-level key with a value equal to the given string, number or
        boolean; ``title`` keeps sessions whose title contains that text (ignoring case).
        Each summary carries a ``title`` for session pickers. Pass the same filters
        with each page's ``cursor``. Sessions archived by retention are left out unless
        ``include_archived``.
        """
        user_id = check_name(user_id, "user_id")
        checked = check_limit(limit)
        if checked is None or not 1 <= checked <= MAX_PAGE_SIZE:
            raise InvalidInputError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
        after = None if cursor is None else cursors.decode_listing(cursor)
        agent = None if agent_name is None else check_name(agent_name, "agent_name")
        meta_filter = check_metadata_filter(metadata)
        pattern = None if title is None else title_pattern(title)
        async with self._read_uow(autocommit=True) as uow:
            rows = await uow.sessions.list_for_user(
                user_id,
                limit=checked + 1,
                after=after,
                agent_name=agent,
                metadata=meta_filter or None,
                include_archived=bool(include_archived),
                title_pattern=pattern,
            )
        page, more = rows[:checked], len(rows) > checked
        next_cursor = cursors.encode_listing(page[-1].updated_at, page[-1].id) if more else None
        return SessionPage(tuple(page), next_cursor)

    @operation()
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

    @operation()
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
            check_in_history(through, source, "at_seq")
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
            # Checkpoints within the shared history apply to the fork too; later ones do not.
            await uow.checkpoints.copy(sid, new_id, through_seq=through, offset=source.trimmed_seq)
            record = await self._reread(uow, new_id)
            await uow.commit()
        return record

    @operation()
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
            check_in_history(to, session, "to_seq")
            removed = session.last_seq - to
            if removed:
                await uow.messages.rewind(sid, to, now)
                # A checkpoint summarizing any of the dropped messages no longer applies.
                await uow.checkpoints.drop_after(sid, to)
                await uow.commit()
        return removed

    @operation()
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
                await uow.sessions.update(sid, metadata=merged, updated_at=now)
            record = await self._reread(uow, sid)
            await uow.commit()
        return record

    @operation()
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
                await uow.sessions.update(sid, title=new_title, updated_at=now)
            record = await self._reread(uow, sid)
            await uow.commit()
        return record

    @staticmethod
    async def _reread(uow: UnitOfWork, sid: uuid.UUID) -> SessionRecord:
        """The session as :meth:`get_session` shows it, in a unit that holds its lock."""
        state = await uow.sessions.read(sid)
        assert state is not None  # locked or created by this transaction
        return await read_record(uow, state)
