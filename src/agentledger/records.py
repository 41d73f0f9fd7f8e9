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
    #: The explicit title set with ``set_title`` (``None`` when unset).
    title: str | None = None
    #: The name the session was opened by (``ledger.agent_session(name, ...)``), if any.
    name: str | None = None


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
    #: For a session picker: the explicit title, else the start of the first user message
    #: (whitespace collapsed, at most ~80 characters), else ``None``.
    title: str | None = None
    #: When retention archived the session (listed only with ``include_archived=True``).
    archived_at: datetime | None = None
    #: The name the session was opened by (``ledger.agent_session(name, ...)``), if any.
    name: str | None = None


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


@dataclass(frozen=True, slots=True)
class BlockedSession:
    """A session a bulk delete left in place: a row of another table (``table``, through the
    foreign key ``constraint``; ``None`` when the database did not say) refers to it, or to one
    of its messages, without ``ON DELETE`` (see :class:`~agentledger.SessionReferencedError`)."""

    session_id: uuid.UUID
    table: str | None = None
    constraint: str | None = None


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What :meth:`SessionService.erase_user` removed (or, with ``dry_run``, would remove);
    ``blocked``: sessions it could not delete (rows of other tables refer to them)."""

    sessions: int = 0
    messages: int = 0
    usage_records: int = 0
    blocked: tuple[BlockedSession, ...] = ()

    def __add__(self, other: ErasureReport) -> ErasureReport:
        return ErasureReport(
            self.sessions + other.sessions,
            self.messages + other.messages,
            self.usage_records + other.usage_records,
            self.blocked + other.blocked,
        )


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One message matching a search; ``snippet`` is the text around the first match."""

    session_id: uuid.UUID
    seq: int
    role: str
    content: str
    snippet: str
    #: Higher is better: ``ts_rank`` on PostgreSQL, occurrences of the terms on SQLite.
    rank: float
    created_at: datetime
    agent_name: str
    item_type: str = "message"


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of :meth:`SessionService.search`; pass ``next_cursor`` back for the next."""

    hits: tuple[SearchHit, ...]
    next_cursor: str | None

    def __iter__(self) -> Iterator[SearchHit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, index: int) -> SearchHit:
        return self.hits[index]


@dataclass(frozen=True, slots=True)
class TranscriptImport:
    """What :meth:`SessionService.import_session` did: new items, and whether it created
    the session (``False``: it existed and was completed, or already complete)."""

    session_id: uuid.UUID
    items_added: int
    created: bool
