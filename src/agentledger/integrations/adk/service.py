"""``LedgerSessionService``: Google ADK's ``BaseSessionService`` on agentledger.

ADK's own ``DatabaseSessionService`` orders events by timestamp, lists every session in one
unpaged query and detects concurrent writers by comparing update times. This service keeps
ADK sessions in the ledger instead (see :mod:`.mapping`): events in the session's history,
ordered by its sequence; state in the ledger's scoped-state tables, changed in the same
transaction as the event; and a session object read from the ledger remembers the ``last_seq``
it saw, so appending through a stale object is a compare-and-append that fails with
:class:`StaleSessionError` instead of silently interleaving histories.
"""

from __future__ import annotations

import uuid
from typing import Any

from google.adk.errors import StaleSessionError as AdkStaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError as AdkAlreadyExistsError
from google.adk.errors.session_not_found_error import (
    SessionNotFoundError as AdkSessionNotFoundError,
)
from google.adk.events.event import Event
from google.adk.platform import time as platform_time
from google.adk.platform import uuid as platform_uuid
from google.adk.sessions.base_session_service import (
    BaseSessionService,
    GetSessionConfig,
    ListSessionsResponse,
)
from google.adk.sessions.session import Session
from typing_extensions import override

from agentledger.domain.records import ScopedSession
from agentledger.errors import AlreadyExistsError, SessionNotFoundError
from agentledger.errors import StaleSessionError as LedgerStaleSessionError
from agentledger.integrations.adk.mapping import (
    FRAMEWORK,
    event_item,
    item_event,
    merged_state,
    session_id_of,
    session_name,
    split_state,
)
from agentledger.integrations.store import ScopedSessionStore, ScopedStoreProvider

#: Sessions per listing query when ``list_sessions`` pages through an app's sessions.
LIST_PAGE_SIZE = 1000


class StaleSessionError(AdkStaleSessionError, LedgerStaleSessionError):
    """``append_event`` on a session object older than the stored session (another writer
    appended since it was read): nothing was written. Read the session again with
    ``get_session`` and append to that. Both ADK's ``StaleSessionError`` and agentledger's
    (``expected_last_seq`` is -1 for a session object this service did not hand out)."""

    def __init__(self, message: str, *, last_seq: int, expected_last_seq: int) -> None:
        LedgerStaleSessionError.__init__(
            self, message, last_seq=last_seq, expected_last_seq=expected_last_seq
        )


class LedgerSessionService(BaseSessionService):
    """Google ADK sessions, events and state in agentledger (``framework="adk"``).

    ``ledger``: a :class:`~agentledger.Ledger` (or anything with its ``service_for``). With
    ``row_level_security`` set, every call acts as the session's user.
    """

    def __init__(self, ledger: ScopedStoreProvider) -> None:
        self._ledger = ledger

    def _store(self, user_id: str | None) -> ScopedSessionStore:
        return self._ledger.service_for(user_id)

    @override
    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        session_id = session_id.strip() if session_id else None
        sid = session_id or platform_uuid.new_uuid()
        now = platform_time.get_time()
        try:
            created = await self._store(user_id).create_scoped_session(
                user_id,
                app_name,
                session_name(app_name, sid),
                framework=FRAMEWORK,
                states=split_state(state),
                update_time=now,
            )
        except AlreadyExistsError as error:
            raise AdkAlreadyExistsError(f"Session with id {sid} already exists.") from error
        return _session(app_name, user_id, sid, created, [])

    @override
    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        session_id = session_id.strip() if session_id else session_id
        found = await self._store(user_id).get_scoped_session(
            session_name(app_name, session_id),
            user_id=user_id,
            agent_name=app_name,
            framework=FRAMEWORK,
            recent=None if config is None else config.num_recent_events,
        )
        if found is None:
            return None
        events = [item_event(item) for item in found.items]
        if config is not None and config.after_timestamp is not None:
            events = _since(events, config.after_timestamp)
        return _session(app_name, user_id, session_id, found, events)

    @override
    async def list_sessions(
        self, *, app_name: str, user_id: str | None = None
    ) -> ListSessionsResponse:
        """Every session of ``app_name`` (of ``user_id``, or of every user), without events,
        oldest update first; read in keyset pages of :data:`LIST_PAGE_SIZE`."""
        store = self._store(user_id)
        sessions: list[Session] = []
        after: uuid.UUID | None = None
        while True:
            page = await store.list_scoped_sessions(
                agent_name=app_name,
                framework=FRAMEWORK,
                user_id=user_id,
                limit=LIST_PAGE_SIZE,
                after=after,
            )
            for row in page.sessions:
                sid = session_id_of(app_name, row.name)
                if sid is None:
                    continue
                user_state = page.user_states.get(row.user_id, {})
                sessions.append(
                    Session(
                        id=sid,
                        app_name=app_name,
                        user_id=row.user_id,
                        state=merged_state(page.app_state, user_state, row.state),
                        last_update_time=row.update_time,
                    )
                )
            if page.next_after is None:
                break
            after = page.next_after
        sessions.sort(key=lambda s: (s.last_update_time, s.user_id, s.id))
        return ListSessionsResponse(sessions=sessions)

    @override
    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        session_id = session_id.strip() if session_id else session_id
        store = self._store(user_id)
        found = await store.get_scoped_session(
            session_name(app_name, session_id),
            user_id=user_id,
            agent_name=app_name,
            framework=FRAMEWORK,
            recent=0,
        )
        if found is not None:
            await store.delete_session(found.record.id, user_id=user_id)

    @override
    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        states = await self._store(user_id).get_scoped_state(
            user_id=user_id, agent_name=app_name, framework=FRAMEWORK
        )
        return states.user

    @override
    async def append_event(self, session: Session, event: Event) -> Event:
        """Store ``event`` and its state change onto the history ``session`` was read with.

        Partial (streaming) events are returned unstored, as ADK's services do; ``temp:``
        state is applied to the in-memory session only. Raises :class:`StaleSessionError`
        when the session was appended to since ``session`` was read (nothing is written) and
        ADK's ``SessionNotFoundError`` when it no longer exists."""
        if event.partial:
            return event
        self._apply_temp_state(session, event)
        event = self._trim_temp_delta_state(event)
        ledger_id, last_seq = await self._revision_of(session)
        try:
            result = await self._store(session.user_id).append_scoped(
                ledger_id,
                [event_item(event)],
                user_id=session.user_id,
                expected_last_seq=last_seq,
                changes=split_state(event.actions.state_delta if event.actions else None),
                update_time=event.timestamp,
            )
        except LedgerStaleSessionError as error:
            raise StaleSessionError(
                f"session {session.id!r} of app {session.app_name!r} was appended to since "
                "this Session object was read (another runner or request wrote to it: it holds "
                f"{error.last_seq} events, this object saw {error.expected_last_seq}); nothing "
                "was written. Read it again with get_session and append to that",
                last_seq=error.last_seq,
                expected_last_seq=error.expected_last_seq,
            ) from error
        except SessionNotFoundError as error:
            raise AdkSessionNotFoundError(f"Session {session.id} not found.") from error
        _remember(session, ledger_id, result.first_seq + result.count - 1)
        session.last_update_time = event.timestamp
        return self._commit_event_to_session(session, event)

    async def _revision_of(self, session: Session) -> tuple[uuid.UUID, int]:
        """The ledger session and ``last_seq`` this session object was read at. An object
        this service did not hand out (built by hand) is checked against the stored history:
        it is current when its last event is the stored last event."""
        marker = session._storage_update_marker
        if marker is not None and marker.startswith("agentledger:"):
            _prefix, ledger_id, last_seq = marker.split(":")
            return uuid.UUID(ledger_id), int(last_seq)
        found = await self._store(session.user_id).get_scoped_session(
            session_name(session.app_name, session.id),
            user_id=session.user_id,
            agent_name=session.app_name,
            framework=FRAMEWORK,
            recent=1,
        )
        if found is None:
            raise AdkSessionNotFoundError(f"Session {session.id} not found.")
        stored = [item_event(item).id for item in found.items]
        mine = [event.id for event in session.events[-1:]]
        if stored != mine:
            raise StaleSessionError(
                f"session {session.id!r} of app {session.app_name!r} holds events this "
                "Session object does not have; read it again with get_session and append to "
                "that",
                last_seq=found.last_seq,
                expected_last_seq=-1,
            )
        return found.record.id, found.last_seq


def _since(events: list[Event], after_timestamp: float) -> list[Event]:
    """The events after the last one older than ``after_timestamp`` (ADK's own rule, which
    scans back from the newest)."""
    index = len(events) - 1
    while index >= 0 and events[index].timestamp >= after_timestamp:
        index -= 1
    return events[index + 1 :]


def _remember(session: Session, ledger_id: uuid.UUID, last_seq: int) -> None:
    session._storage_update_marker = f"agentledger:{ledger_id}:{last_seq}"


def _session(
    app_name: str, user_id: str, session_id: str, found: ScopedSession, events: list[Event]
) -> Session:
    states = found.states
    session = Session(
        id=session_id,
        app_name=app_name,
        user_id=user_id,
        state=merged_state(states.app, states.user, states.session),
        events=events,
        last_update_time=states.update_time or found.record.updated_at.timestamp(),
    )
    _remember(session, found.record.id, found.last_seq)
    return session
