"""Scoped state of framework sessions: an app's, a user's (per app) and a session's own.

A framework such as Google ADK keeps state at three scopes; these rows hold it beside the
sessions (see revision ``agentledger_0008_adk_state``). Changes are merged key by key under a
row lock: the row is made first if missing (so SQLite's writer lock comes before any read),
then locked, read, merged and written, so concurrent sessions of one app never lose each
other's keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, select, update

from agentledger.db.models import (
    app_state_table,
    session_state_table,
    sessions_table,
    user_state_table,
)
from agentledger.db.repositories.base import Repository
from agentledger.domain.records import ScopedSessionRow, ScopedStates

_apps = app_state_table
_users = user_state_table
_own = session_state_table
_sessions = sessions_table


def _object(value: Any) -> dict[str, Any]:
    """A stored state as a dict (a row changed outside agentledger reads as empty)."""
    return dict(value) if isinstance(value, dict) else {}


class ScopedStateRepository(Repository):
    """Rows of ``ledger_app_state``, ``ledger_user_state`` and ``ledger_session_state``."""

    async def read(
        self, framework: str, app_name: str, user_id: str, session_id: uuid.UUID | None
    ) -> ScopedStates:
        """The three scopes' state in one statement (each ``{}`` when missing)."""
        app = select(_apps.c.state).where(
            _apps.c.framework == framework, _apps.c.app_name == app_name
        )
        user = select(_users.c.state).where(
            _users.c.framework == framework,
            _users.c.app_name == app_name,
            _users.c.user_id == user_id,
        )
        columns: list[Any] = [app.scalar_subquery(), user.scalar_subquery()]
        if session_id is not None:
            own = _own.c.session_id == session_id
            columns.append(select(_own.c.state).where(own).scalar_subquery())
            columns.append(select(_own.c.update_time).where(own).scalar_subquery())
        row = (await self._db.execute(select(*columns))).one()
        return ScopedStates(
            app=_object(row[0]),
            user=_object(row[1]),
            session=_object(row[2]) if session_id is not None else {},
            update_time=None if session_id is None or row[3] is None else float(row[3]),
        )

    async def merge_app(
        self, framework: str, app_name: str, changes: Mapping[str, Any], now: datetime
    ) -> None:
        key = {"framework": framework, "app_name": app_name}
        await self._merge(_apps, key, changes, now)

    async def merge_user(
        self,
        framework: str,
        app_name: str,
        user_id: str,
        changes: Mapping[str, Any],
        now: datetime,
    ) -> None:
        key = {"framework": framework, "app_name": app_name, "user_id": user_id}
        await self._merge(_users, key, changes, now)

    async def _merge(
        self, table: Table, key: dict[str, Any], changes: Mapping[str, Any], now: datetime
    ) -> None:
        if not changes:
            return
        await self._db.execute(
            self._dialect.insert(table)
            .values(**key, state={}, updated_at=now)
            .on_conflict_do_nothing()
        )
        where: list[ColumnElement[bool]] = [table.c[name] == value for name, value in key.items()]
        found = await self._db.execute(select(table.c.state).where(*where).with_for_update())
        merged = {**_object(found.scalar_one()), **changes}
        await self._db.execute(update(table).where(*where).values(state=merged, updated_at=now))

    async def put_session(
        self, session_id: uuid.UUID, state: Mapping[str, Any], update_time: float
    ) -> None:
        """Store a new session's state (its row is the caller's, just created)."""
        await self._db.execute(
            self._dialect.insert(_own).values(
                session_id=session_id, state=dict(state), update_time=update_time
            )
        )

    async def session_state(self, session_id: uuid.UUID) -> dict[str, Any] | None:
        """A session's own state as exported: ``{"state": ..., "update_time": ...}``, or
        ``None`` when it has none."""
        found = (
            await self._db.execute(
                select(_own.c.state, _own.c.update_time).where(_own.c.session_id == session_id)
            )
        ).one_or_none()
        if found is None:
            return None
        return {"state": _object(found.state), "update_time": float(found.update_time)}

    async def merge_session(
        self, session_id: uuid.UUID, changes: Mapping[str, Any], update_time: float
    ) -> None:
        """Merge ``changes`` into a session's state and set its update time; the caller holds
        the session's row lock. A session without a row gets one."""
        found = await self._db.execute(select(_own.c.state).where(_own.c.session_id == session_id))
        current = found.scalar_one_or_none()
        if current is None:
            await self.put_session(session_id, changes, update_time)
            return
        values: dict[str, Any] = {"update_time": update_time}
        if changes:
            values["state"] = {**_object(current), **changes}
        await self._db.execute(update(_own).where(_own.c.session_id == session_id).values(**values))

    async def list_sessions(
        self,
        framework: str,
        agent_name: str,
        user_id: str | None,
        *,
        after: uuid.UUID | None,
        limit: int,
    ) -> list[ScopedSessionRow]:
        """A keyset page (by session id) of a framework app's sessions, with their own state."""
        query = (
            select(
                _sessions.c.id,
                _sessions.c.user_id,
                _sessions.c.name,
                _sessions.c.updated_at,
                _own.c.state,
                _own.c.update_time,
            )
            .select_from(_sessions.outerjoin(_own, _own.c.session_id == _sessions.c.id))
            .where(_sessions.c.framework == framework, _sessions.c.agent_name == agent_name)
            .order_by(_sessions.c.id)
            .limit(limit)
        )
        if user_id is not None:
            query = query.where(_sessions.c.user_id == user_id)
        if after is not None:
            query = query.where(_sessions.c.id > after)
        rows = await self._db.execute(query)
        return [
            ScopedSessionRow(
                id=row.id,
                user_id=row.user_id,
                name=row.name,
                state=_object(row.state),
                update_time=(
                    row.updated_at.timestamp() if row.update_time is None else row.update_time
                ),
            )
            for row in rows
        ]

    async def user_states(
        self, framework: str, app_name: str, user_ids: Sequence[str] | None
    ) -> dict[str, dict[str, Any]]:
        """The user state of ``user_ids`` (every user's when ``None``) of one app."""
        query = select(_users.c.user_id, _users.c.state).where(
            _users.c.framework == framework, _users.c.app_name == app_name
        )
        if user_ids is not None:
            query = query.where(_users.c.user_id.in_(list(user_ids)))
        rows = await self._db.execute(query)
        return {row.user_id: _object(row.state) for row in rows}

    async def app_state(self, framework: str, app_name: str) -> dict[str, Any]:
        found = await self._db.execute(
            select(_apps.c.state).where(
                _apps.c.framework == framework, _apps.c.app_name == app_name
            )
        )
        return _object(found.scalar_one_or_none())

    async def erase_user(self, user_id: str) -> int:
        """Delete every user-scoped state row of ``user_id`` (all frameworks and apps)."""
        result = await self._db.execute(
            delete(_users).where(_users.c.user_id == user_id).returning(_users.c.app_name)
        )
        return len(result.all())
