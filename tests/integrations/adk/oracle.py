"""Both services side by side: ADK's InMemorySessionService (the oracle) and
LedgerSessionService, each operation applied to both and the normalized results compared."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig
from google.adk.sessions.in_memory_session_service import InMemorySessionService
from google.adk.sessions.session import Session
from google.genai import types

Key = tuple[str, str, str]


def event(
    author: str,
    text: str | None,
    *,
    timestamp: float,
    delta: dict[str, Any] | None = None,
    call: str | None = None,
    response: str | None = None,
    partial: bool | None = None,
) -> Event:
    """An event as a runner makes them: text, a function call or a function response."""
    parts = []
    if text is not None:
        parts.append(types.Part(text=text))
    if call is not None:
        parts.append(
            types.Part(function_call=types.FunctionCall(id=call, name="lookup", args={"q": text}))
        )
    if response is not None:
        parts.append(
            types.Part(
                function_response=types.FunctionResponse(
                    id=response, name="lookup", response={"ok": 1}
                )
            )
        )
    role = "user" if author == "user" else "model"
    return Event(
        author=author,
        invocation_id="inv-1",
        content=types.Content(role=role, parts=parts),
        actions=EventActions(state_delta=dict(delta or {})),
        timestamp=timestamp,
        partial=partial,
    )


def normalized(session: Session | None, appended: set[Key]) -> dict[str, Any] | None:
    """What must agree: ids, state, events (as JSON), and the update time once an event set
    it (a new session's time is each service's own clock)."""
    if session is None:
        return None
    key = (session.app_name, session.user_id, session.id)
    return {
        "id": session.id,
        "app_name": session.app_name,
        "user_id": session.user_id,
        "state": session.state,
        "events": [e.model_dump(mode="json") for e in session.events],
        "last_update_time": session.last_update_time if key in appended else None,
    }


@dataclass
class Pair:
    """The oracle and the service under test, with what the test has seen of both."""

    ledger: BaseSessionService
    oracle: InMemorySessionService = field(default_factory=InMemorySessionService)
    appended: set[Key] = field(default_factory=set)
    log: list[str] = field(default_factory=list)

    async def create(
        self, app: str, user: str, sid: str | None, state: dict[str, Any] | None
    ) -> None:
        self.log.append(f"create {app} {user} {sid} {state}")
        if (
            sid is not None
            and (await self.oracle.get_session(app_name=app, user_id=user, session_id=sid.strip()))
            is None
        ):
            self.appended.discard((app, user, sid.strip()))  # a new session: no event yet
        results: list[dict[str, Any] | str | None] = []
        for service in (self.oracle, self.ledger):
            try:
                made = await service.create_session(
                    app_name=app, user_id=user, session_id=sid, state=dict(state or {})
                )
                results.append(normalized(made, self.appended))
            except AlreadyExistsError:
                results.append("exists")
        assert results[0] == results[1], self.log

    async def get(self, app: str, user: str, sid: str, config: GetSessionConfig | None) -> None:
        self.log.append(f"get {app} {user} {sid} {config}")
        got = [
            normalized(
                await service.get_session(
                    app_name=app, user_id=user, session_id=sid, config=config
                ),
                self.appended,
            )
            for service in (self.oracle, self.ledger)
        ]
        assert got[0] == got[1], self.log

    async def append(self, app: str, user: str, sid: str, made: Event) -> None:
        """Read the session fresh from each service, append a copy of the event to each, and
        compare the returned events and the session objects afterwards."""
        self.log.append(f"append {app} {user} {sid} {made.actions.state_delta} {made.partial}")
        results: list[tuple[dict[str, Any], dict[str, Any] | None] | None] = []
        for service in (self.oracle, self.ledger):
            session = await service.get_session(app_name=app, user_id=user, session_id=sid)
            if session is None:
                results.append(None)
                continue
            returned = await service.append_event(session, made.model_copy(deep=True))
            results.append((returned.model_dump(mode="json"), normalized(session, set())))
        if results[0] is not None and not made.partial:
            self.appended.add((app, user, sid))
        assert results[0] == results[1], self.log

    async def list(self, app: str, user: str | None) -> None:
        self.log.append(f"list {app} {user}")
        listed = []
        for service in (self.oracle, self.ledger):
            response = await service.list_sessions(app_name=app, user_id=user)
            listed.append([normalized(s, self.appended) for s in response.sessions])
        # Sessions never appended to carry each service's own creation time, so only their
        # membership is compared; the order of the others is.
        assert _by_key(listed[0]) == _by_key(listed[1]), self.log
        assert _timed(listed[0]) == _timed(listed[1]), self.log

    async def delete(self, app: str, user: str, sid: str) -> None:
        self.log.append(f"delete {app} {user} {sid}")
        for service in (self.oracle, self.ledger):
            await service.delete_session(app_name=app, user_id=user, session_id=sid)

    async def user_state(self, app: str, user: str) -> None:
        self.log.append(f"user_state {app} {user}")
        states = [
            await service.get_user_state(app_name=app, user_id=user)
            for service in (self.oracle, self.ledger)
        ]
        assert states[0] == states[1], self.log


def _by_key(sessions: list[dict[str, Any] | None]) -> list[dict[str, Any] | None]:
    return sorted(
        sessions, key=lambda s: (s or {}).get("user_id", "") + "\x00" + (s or {}).get("id", "")
    )


def _timed(sessions: list[dict[str, Any] | None]) -> list[dict[str, Any] | None]:
    return [s for s in sessions if s is not None and s["last_update_time"] is not None]
