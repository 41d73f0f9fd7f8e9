"""Session names: the agentledger session that a string session id stands for.

Pure (no database, no agent framework), so the CLI, the importer and every framework adapter
name sessions the same way without importing any of each other.
"""

from __future__ import annotations

import uuid

from agentledger.domain.encoding import check_text

#: Namespace of the UUIDs that session *names* map to. Fixed forever: changing it would make every
#: named session open a different (empty) agentledger session.
SESSION_NAME_NAMESPACE = uuid.UUID("4689be51-cd3f-5e3f-97b3-bf8e7f3da0a1")


def resolve_session_uuid(session_id: str | uuid.UUID, user_id: str) -> uuid.UUID:
    """The agentledger session UUID that an SDK ``session_id`` string stands for.

    A string that parses as a UUID *is* that session (so ids handed out by ``create_session``
    work unchanged). Any other string is a name, mapped deterministically with uuid5 over
    :data:`SESSION_NAME_NAMESPACE` and ``user_id`` plus the name, so the same name used by two
    users opens two separate sessions, and no user can reach another's session by guessing its
    name (ownership is still enforced by the service for UUIDs).
    """
    if isinstance(session_id, uuid.UUID):
        return session_id
    if not isinstance(session_id, str):
        raise TypeError(f"session_id must be a str or uuid.UUID, not {type(session_id).__name__}")
    if not isinstance(user_id, str):
        raise TypeError(f"user_id must be a str, not {type(user_id).__name__}")
    try:
        return uuid.UUID(session_id)
    except ValueError:
        pass
    check_text(session_id, "session_id")
    check_text(user_id, "user_id")
    # NUL cannot occur in a valid user_id, so the pair is encoded unambiguously.
    return uuid.uuid5(SESSION_NAME_NAMESPACE, f"{user_id}\x00{session_id}")


def session_name(session_id: str | uuid.UUID) -> str | None:
    """The name a session id string stands for, or ``None`` when it is a UUID (a session id
    itself, not a name)."""
    if isinstance(session_id, uuid.UUID):
        return None
    try:
        uuid.UUID(session_id)
    except ValueError:
        return session_id
    return None
