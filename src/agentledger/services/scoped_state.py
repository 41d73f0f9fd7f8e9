"""Framework sessions with scoped state: create, read a window, append with state, list.

Google ADK (and frameworks like it) keep state at three scopes beside a session's events: the
app's, the user's (per app) and the session's own. These use cases keep the events in the
ledger's history and the state in its tables (see
:mod:`agentledger.db.repositories.scoped_state`), changing both in one transaction: an event
is never stored without its state change, nor a state change without its event. A framework
session is found by its user's ``name`` for it, and must belong to the given agent (app) and
framework; otherwise it reads as missing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from agentledger.domain.naming import resolve_session_uuid
from agentledger.domain.records import (
    AppendResult,
    ScopedSession,
    ScopedSessionPage,
    ScopedStates,
    SessionRecord,
)
from agentledger.domain.validation import (
    MAX_PAGE_SIZE,
    check_count,
    check_framework,
    check_name,
    check_owner,
    check_state,
    parse_session_id,
    prepare_item,
)
from agentledger.errors import AlreadyExistsError
from agentledger.services.base import SessionId, operation
from agentledger.services.history import History, _expected


class ScopedState(History):
    """Use cases of framework sessions with app, user and session state."""

    @operation()
    async def create_scoped_session(
        self,
        user_id: str,
        agent_name: str,
        name: str,
        *,
        framework: str,
        states: ScopedStates,
        update_time: float,
    ) -> ScopedSession:
        """Create the session ``user_id`` calls ``name`` (for ``agent_name`` of ``framework``)
        with its own state, and merge ``states.app`` and ``states.user`` into the app's and
        the user's, in one transaction. :class:`AlreadyExistsError` when the user has a session
        of that name. Returns it with the state of all three scopes after the change."""
        user = check_name(user_id, "user_id")
        agent = check_name(agent_name, "agent_name")
        label = check_name(name, "session name")
        kind = check_framework(framework)
        app, mine, own = _checked(states, "state")
        now = self._now()
        preferred = resolve_session_uuid(label, user)
        async with self._uow() as uow:
            sid = preferred
            values: dict[str, Any] = {
                "user_id": user,
                "agent_name": agent,
                "metadata": {},
                "now": now,
                "name": label,
                "framework": kind,
            }
            if not await uow.sessions.create(session_id=sid, if_missing=True, **values):
                if await uow.sessions.find_named(user, label, preferred) is not None:
                    raise AlreadyExistsError(
                        f"user {user!r} has a session named {label!r} already; open it, or "
                        "create the session under another id"
                    )
                sid = uuid.uuid4()  # another user's session holds the derived id
                await uow.sessions.create(session_id=sid, **values)
            await uow.scoped_state.merge_app(kind, agent, app, now)
            await uow.scoped_state.merge_user(kind, agent, user, mine, now)
            await uow.scoped_state.put_session(sid, own, update_time)
            merged = await uow.scoped_state.read(kind, agent, user, sid)
            await uow.commit()
        record = SessionRecord(sid, user, agent, {}, now, now, (), name=label, framework=kind)
        return ScopedSession(record, merged, 0, ())

    @operation()
    async def get_scoped_session(
        self,
        name: str,
        *,
        user_id: str,
        agent_name: str,
        framework: str,
        recent: int | None = None,
    ) -> ScopedSession | None:
        """The session ``user_id`` calls ``name`` with its scoped state and the items of its
        whole history, or (``recent``) of its last ``recent`` messages; ``None`` when there is
        none of ``agent_name`` and ``framework``. Single statements: the session's id by name,
        its row, the items up to the ``last_seq`` read with it (a prefix of the final history)
        and the state."""
        user = check_name(user_id, "user_id")
        agent = check_name(agent_name, "agent_name")
        label = check_name(name, "session name")
        kind = check_framework(framework)
        window = None if recent is None else check_count(recent, "recent", minimum=0)
        async with self._read_uow(autocommit=True) as uow:
            sid = await uow.sessions.find_named(user, label, resolve_session_uuid(label, user))
            state = None if sid is None else await uow.sessions.read(sid, user)
            if state is None or state.agent_name != agent or state.framework != kind:
                return None
            items: list[Any] = []
            if window != 0 and state.last_seq > state.trimmed_seq:
                items = await uow.messages.window_items(
                    state.id, after_seq=state.trimmed_seq, upto_seq=state.last_seq, limit=window
                )
            states = await uow.scoped_state.read(kind, agent, user, state.id)
        record = SessionRecord(
            state.id,
            state.user_id,
            state.agent_name,
            state.metadata,
            state.created_at,
            state.updated_at,
            (),
            title=state.title,
            name=state.name,
            framework=state.framework,
        )
        return ScopedSession(record, states, state.last_seq, tuple(items))

    @operation()
    async def append_scoped(
        self,
        session_id: SessionId,
        items: Sequence[Any],
        *,
        user_id: str,
        expected_last_seq: int,
        changes: ScopedStates,
        update_time: float,
    ) -> AppendResult:
        """Append ``items`` onto ``expected_last_seq`` (else :class:`StaleSessionError`,
        nothing written) and merge ``changes`` into the session's app, user and own state,
        with ``update_time`` as the session's new framework time, in one transaction."""
        sid = parse_session_id(session_id)
        user = check_owner(user_id)
        rows = [prepare_item(item, index) for index, item in enumerate(items)]
        expected = _expected(expected_last_seq)
        app, mine, own = _checked(changes, "state change")
        now = self._now()
        async with self._uow() as uow:
            result, _last = await self._append_chunk(
                uow, sid, rows, user, None, now, expected_last_seq=expected
            )
            if app or mine:
                session = await uow.sessions.read(sid)
                assert session is not None  # locked by this transaction
                await uow.scoped_state.merge_app(session.framework, session.agent_name, app, now)
                await uow.scoped_state.merge_user(
                    session.framework, session.agent_name, session.user_id, mine, now
                )
            await uow.scoped_state.merge_session(sid, own, update_time)
            await uow.commit()
        return result

    @operation()
    async def get_scoped_state(
        self, *, user_id: str, agent_name: str, framework: str
    ) -> ScopedStates:
        """The app's and the user's state of ``agent_name`` of ``framework`` (no session)."""
        user = check_name(user_id, "user_id")
        agent = check_name(agent_name, "agent_name")
        kind = check_framework(framework)
        async with self._read_uow() as uow:
            return await uow.scoped_state.read(kind, agent, user, None)

    @operation()
    async def list_scoped_sessions(
        self,
        *,
        agent_name: str,
        framework: str,
        user_id: str | None = None,
        limit: int = MAX_PAGE_SIZE,
        after: uuid.UUID | None = None,
    ) -> ScopedSessionPage:
        """A page of ``agent_name``'s sessions of ``framework`` (of ``user_id``, or of every
        user), with their own state, the app's state and the listed users' state; in session
        id order, ``after`` the given id."""
        agent = check_name(agent_name, "agent_name")
        kind = check_framework(framework)
        user = check_owner(user_id)
        count = check_count(limit, "limit", maximum=MAX_PAGE_SIZE)
        async with self._read_uow() as uow:
            rows = await uow.scoped_state.list_sessions(
                kind, agent, user, after=after, limit=count + 1
            )
            page = rows[:count]
            app = await uow.scoped_state.app_state(kind, agent)
            users = sorted({row.user_id for row in page})
            user_states = await uow.scoped_state.user_states(kind, agent, users) if users else {}
        next_after = page[-1].id if len(rows) > count else None
        return ScopedSessionPage(tuple(page), app, user_states, next_after)


def _checked(
    states: ScopedStates, what: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The app, user and session scopes of ``states``, each checked (``what``: "state" or
    "state change", for the error that names the scope)."""
    return (
        check_state(states.app, f"app {what}"),
        check_state(states.user, f"user {what}"),
        check_state(states.session, f"session {what}"),
    )
