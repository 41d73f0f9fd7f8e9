"""Session rows: create, find, lock, read, list, change, delete."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, insert, or_, select, update

from agentledger.db.models import sessions_table
from agentledger.db.repositories.base import Repository
from agentledger.db.rows import intact_metadata
from agentledger.db.statements import OWNER_QUERY, session_query
from agentledger.domain.display import picker_title
from agentledger.domain.records import SessionSpec, SessionState, SessionSummary

_sessions = sessions_table

_STATE_COLUMNS = (
    _sessions.c.id,
    _sessions.c.user_id,
    _sessions.c.agent_name,
    _sessions.c["metadata"],
    _sessions.c.title,
    _sessions.c.created_at,
    _sessions.c.updated_at,
    _sessions.c.archived_at,
    _sessions.c.trimmed_seq,
    _sessions.c.last_seq,
    _sessions.c.name,
)


def state_of(row: Any) -> SessionState:
    """A session row (any row with the session's columns) as a :class:`SessionState`."""
    return SessionState(
        id=row.id,
        user_id=row.user_id,
        agent_name=row.agent_name,
        metadata=intact_metadata(row.id, row.metadata),
        title=row.title,
        created_at=row.created_at,
        updated_at=row.updated_at,
        archived_at=row.archived_at,
        trimmed_seq=int(row.trimmed_seq),
        last_seq=int(row.last_seq),
        name=row.name,
    )


class SessionRepository(Repository):
    """Session rows."""

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
        last_seq: int | None = None,
        if_missing: bool = False,
        name: str | None = None,
    ) -> bool:
        """Insert a session row. An imported session keeps its ``created_at``/``archived_at``
        and starts after ``start_seq`` (its first messages were trimmed at the source); a copy
        holds ``last_seq`` messages already (copied next).
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
            "last_seq": start_seq if last_seq is None else last_seq,
            "trimmed_seq": start_seq,
            "name": name,
        }
        if not if_missing:
            await self._db.execute(insert(_sessions).values(values))
            return True
        statement = self._dialect.insert(_sessions).values(values).on_conflict_do_nothing()
        result = await self._db.execute(statement.returning(_sessions.c.id))
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

    async def create_copy(
        self,
        source: SessionState,
        *,
        session_id: uuid.UUID,
        title: str | None,
        last_seq: int,
        now: datetime,
    ) -> None:
        """A new session like ``source`` (owner, agent, metadata; not its name) whose history
        ends at ``last_seq``; the caller copies the messages (``MessageRepository.copy``)."""
        await self.create(
            session_id=session_id,
            user_id=source.user_id,
            agent_name=source.agent_name,
            metadata=source.metadata,
            now=now,
            title=title,
            last_seq=last_seq,
        )

    async def find_named(
        self, user_id: str, name: str, preferred_id: uuid.UUID
    ) -> uuid.UUID | None:
        """The session of ``user_id`` opened by ``name``: the one recorded with that name, else
        one of the user's at ``preferred_id`` (named before names were recorded)."""
        result = await self._db.execute(
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
        query = self._dialect.confined_query
        if query is None:
            return False
        return bool((await self._db.execute(query)).scalar_one())

    async def owner_of(self, session_id: uuid.UUID) -> str | None:
        """The ``user_id`` owning the session, or ``None`` when it does not exist."""
        result = await self._db.execute(OWNER_QUERY, {"session_id": session_id})
        owner: str | None = result.scalar_one_or_none()
        return owner

    async def read(
        self, session_id: uuid.UUID, user_id: str | None = None, *, share_lock: bool = False
    ) -> SessionState | None:
        """The session row (``None``: missing, or not ``user_id``'s). ``share_lock`` holds
        appends and trims back until the transaction ends (PostgreSQL ``FOR SHARE``; SQLite's
        read transaction is a snapshot anyway), so a history read next matches the row."""
        statement = session_query(owned=user_id is not None)
        if share_lock:
            statement = statement.with_for_update(read=True)
        params = {"session_id": session_id, "user_id": user_id}
        rows = await self._statements.rows(statement, params)
        return state_of(rows[0]) if rows else None

    async def lock(self, session_id: uuid.UUID, user_id: str | None = None) -> SessionState | None:
        """Lock the session row for this transaction and return it (``None``: missing or not
        ``user_id``'s): the one row lock, a no-op UPDATE, which waits for any writer of the
        session and then holds off the others until the transaction ends."""
        statement = (
            update(_sessions)
            .where(_sessions.c.id == session_id)
            .values(last_seq=_sessions.c.last_seq)
            .returning(*_STATE_COLUMNS)
        )
        if user_id is not None:
            statement = statement.where(_sessions.c.user_id == user_id)
        row = (await self._db.execute(statement)).one_or_none()
        return None if row is None else state_of(row)

    async def claim_turn(
        self,
        session_id: uuid.UUID,
        user_id: str | None,
        holder: str,
        now: datetime,
        lease: timedelta,
    ) -> bool:
        """Take the session's turn lease for ``holder`` for ``lease`` (or renew it, when
        ``holder`` has it) unless another holder's lease is still running: one conditional
        UPDATE, timed by the database's clock where there is one (see
        :meth:`Dialect.lease_clock`). Whether ``holder`` holds it now (``False`` too when the
        session is missing or not ``user_id``'s)."""
        clock, until = self._dialect.lease_clock(now, lease)
        statement = (
            update(_sessions)
            .where(_sessions.c.id == session_id)
            .where(
                or_(
                    _sessions.c.turn_holder.is_(None),
                    _sessions.c.turn_holder == holder,
                    _sessions.c.turn_expires_at <= clock,
                )
            )
            .values(turn_holder=holder, turn_expires_at=until)
        )
        if user_id is not None:
            statement = statement.where(_sessions.c.user_id == user_id)
        result = await self._db.execute(statement)
        return bool(getattr(result, "rowcount", 0) == 1)

    async def release_turn(self, session_id: uuid.UUID, user_id: str | None, holder: str) -> None:
        """Give the session's turn lease up, if ``holder`` still has it (and, with
        ``user_id``, the session is that user's)."""
        statement = (
            update(_sessions)
            .where(_sessions.c.id == session_id, _sessions.c.turn_holder == holder)
            .values(turn_holder=None, turn_expires_at=None)
        )
        if user_id is not None:
            statement = statement.where(_sessions.c.user_id == user_id)
        await self._db.execute(statement)

    async def list_for_user(
        self,
        user_id: str,
        *,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
        agent_name: str | None = None,
        metadata: dict[str, Any] | None = None,
        include_archived: bool = False,
        title_pattern: str | None = None,
    ) -> list[SessionSummary]:
        """One keyset-paginated query, most recently updated first (ties broken by id),
        optionally only ``agent_name``'s sessions and those whose metadata has the top-level
        values of ``metadata`` (JSON scalars, compared for equality)."""
        params: dict[str, Any] = {"user_id": user_id, "limit": limit}
        if after is not None:
            params["after_updated_at"], params["after_id"] = after
        if agent_name is not None:
            params["agent_name"] = agent_name
        if metadata:
            params.update(self._dialect.metadata_params(metadata))
        if title_pattern is not None:
            params["title_pattern"] = title_pattern
        query = self._dialect.list_query(
            after=after is not None,
            agent=agent_name is not None,
            meta_keys=len(metadata or ()),
            with_archived=include_archived,
            title=title_pattern is not None,
        )
        return list(await self._statements.rows(query, params, into=_summary))

    async def delete(self, session_id: uuid.UUID, user_id: str | None) -> bool:
        """Delete the session (its history goes by cascade); ``SessionReferencedError`` when
        another table's foreign key keeps it."""
        statement = delete(_sessions).where(_sessions.c.id == session_id)
        if user_id is not None:
            statement = statement.where(_sessions.c.user_id == user_id)
        result = await self._delete(statement.returning(_sessions.c.id), (session_id,))
        return result.first() is not None

    async def update(self, session_id: uuid.UUID, **values: Any) -> None:
        """Change columns of a session the caller holds locked (metadata, title, counters,
        times)."""
        await self._db.execute(
            update(_sessions).where(_sessions.c.id == session_id).values(**values)
        )

    async def move_empty_start(self, session_id: uuid.UUID, start_seq: int) -> bool:
        """Let an empty session's next message get ``start_seq + 1``; False unless empty."""
        result = await self._db.execute(
            update(_sessions)
            .where(
                _sessions.c.id == session_id,
                _sessions.c.last_seq == _sessions.c.trimmed_seq,
                _sessions.c.last_seq <= start_seq,
            )
            .values(last_seq=start_seq, trimmed_seq=start_seq)
            .returning(_sessions.c.id)
        )
        return result.first() is not None


def _summary(
    session_id: uuid.UUID,
    user_id: str,
    agent_name: str,
    metadata: Any,
    created_at: datetime,
    updated_at: datetime,
    message_count: int,
    title: str | None,
    first_user_text: str | None,
    archived_at: datetime | None,
    name: str | None,
) -> SessionSummary:
    """A listing row (``LISTING_COLUMNS``, in order) as a summary."""
    return SessionSummary(
        session_id,
        user_id,
        agent_name,
        intact_metadata(session_id, metadata),
        created_at,
        updated_at,
        message_count,
        picker_title(title, first_user_text),
        archived_at,
        name,
    )
