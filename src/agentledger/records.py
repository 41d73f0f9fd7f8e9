"""Immutable values the service hands out.

Records are plain frozen dataclasses built from rows inside the unit of work, so they stay valid
after it closed (no lazy loads, no session attached) and can be passed between tasks freely.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message of a session in the chat view; ``item`` is the full stored item."""

    seq: int
    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    created_at: datetime
    id: uuid.UUID
    item_type: str = "message"
    item: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session with its whole history (in ``seq`` order)."""

    id: uuid.UUID
    user_id: str
    agent_name: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    messages: tuple[MessageRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """A session as listed for a user: no messages, but how many there are."""

    id: uuid.UUID
    user_id: str
    agent_name: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    message_count: int


@dataclass(frozen=True, slots=True)
class SessionPage:
    """One page of :meth:`SessionService.list_user_sessions`.

    Pass ``next_cursor`` back as ``cursor=`` for the following page; it is ``None`` on the last.
    """

    sessions: tuple[SessionSummary, ...]
    next_cursor: str | None

    def __iter__(self) -> Iterator[SessionSummary]:
        return iter(self.sessions)

    def __len__(self) -> int:
        return len(self.sessions)

    def __getitem__(self, index: int) -> SessionSummary:
        return self.sessions[index]


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where a batch landed: ``seqs`` are its sequence numbers, contiguous and in order."""

    session_id: uuid.UUID
    first_seq: int
    count: int
    #: When the batch was stored (by the first attempt, for an idempotent retry).
    created_at: datetime
    #: False when an idempotency key matched an earlier batch and nothing new was written.
    created: bool = True

    @property
    def seqs(self) -> range:
        return range(self.first_seq, self.first_seq + self.count)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage totals (of a session, or of all of a user's sessions)."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
