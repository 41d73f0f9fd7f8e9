"""How Google ADK's values map onto the ledger's, in both directions.

* An ADK session is a ledger session of ``framework="adk"``: its ``app_name`` is the ledger
  session's ``agent_name``, its ``user_id`` the owner, and its id (unique per app and user)
  the user's ``name`` for the session, prefixed with the app (``app:id``, the app's ``%`` and
  ``:`` percent-escaped) because a ledger name is unique per user across agents.
* An event is one message whose item is ``{"type": "adk_event", "event": <the event as JSON>}``
  (``Event.model_dump(mode="json")``, read back with ``Event.model_validate``: lossless, its
  float timestamp included). The ledger's chat view of it (role, text, tool calls) comes from
  the event's parts, for search, transcripts and the CLI.
* State keys split by prefix as ADK splits them: ``app:`` keys go to the app's state,
  ``user:`` keys to the user's (both stored without the prefix), ``temp:`` keys are never
  stored, the rest is the session's own state.
"""

from __future__ import annotations

from typing import Any

from google.adk.events.event import Event
from google.adk.sessions.state import State
from pydantic_core import to_jsonable_python

from agentledger.domain.projection import ADK_EVENT_TYPE
from agentledger.domain.records import ScopedStates
from agentledger.errors import LedgerError

#: The framework name ADK sessions carry in the ledger.
FRAMEWORK = "adk"


def _escaped_app(app_name: str) -> str:
    return app_name.replace("%", "%25").replace(":", "%3A")


def session_name(app_name: str, session_id: str) -> str:
    """The ledger name of ADK session ``session_id`` of ``app_name``."""
    return f"{_escaped_app(app_name)}:{session_id}"


def session_id_of(app_name: str, name: str | None) -> str | None:
    """The ADK session id a ledger name stands for (``None``: not one of ``app_name``'s)."""
    prefix = f"{_escaped_app(app_name)}:"
    if name is None or not name.startswith(prefix):
        return None
    return name[len(prefix) :]


def event_item(event: Event) -> dict[str, Any]:
    """The stored item of an event."""
    return {"type": ADK_EVENT_TYPE, "event": event.model_dump(mode="json")}


def item_event(item: Any) -> Event:
    """The event a stored item holds; a message another writer added to an ADK session (the
    service's ``add_message``, an Agents SDK session opened on it) is no event, and reading
    the session says so rather than guessing one."""
    if not (isinstance(item, dict) and item.get("type") == ADK_EVENT_TYPE and "event" in item):
        kind = item.get("type", item.get("role")) if isinstance(item, dict) else type(item).__name__
        raise LedgerError(
            f"this ADK session holds a message that is not an ADK event (a {kind!r} item, "
            "written through another API: service.add_message/add_items or an Agents SDK "
            "session); ADK sessions take only events appended through LedgerSessionService. "
            "Remove it with service.rewind_session(session id, seq before it), or delete the "
            "session"
        )
    return Event.model_validate(item["event"])


def split_state(state: dict[str, Any] | None) -> ScopedStates:
    """A state (or state delta) split into its stored scopes, prefixes removed, ``temp:``
    keys dropped, values made JSON as ADK's own database service makes them."""
    app: dict[str, Any] = {}
    user: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for key, value in (state or {}).items():
        if key.startswith(State.APP_PREFIX):
            app[key.removeprefix(State.APP_PREFIX)] = value
        elif key.startswith(State.USER_PREFIX):
            user[key.removeprefix(State.USER_PREFIX)] = value
        elif not key.startswith(State.TEMP_PREFIX):
            own[key] = value
    return ScopedStates(_jsonable(app), _jsonable(user), _jsonable(own))


def _jsonable(state: dict[str, Any]) -> dict[str, Any]:
    converted: dict[str, Any] = to_jsonable_python(state)
    return converted


def merged_state(app: dict[str, Any], user: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """The state an ADK session shows: its own keys, then the app's and the user's with their
    prefixes (as ADK's services merge them)."""
    merged = dict(own)
    merged.update({State.APP_PREFIX + key: value for key, value in app.items()})
    merged.update({State.USER_PREFIX + key: value for key, value in user.items()})
    return merged
