"""Immutable values: what the service hands out, and what its layers pass each other.

Records are plain frozen dataclasses built from rows inside the unit of work, so they stay valid
after it closed (no lazy loads, no session attached) and can be passed between tasks freely.
Three describe a session for callers (:class:`SessionRecord` with its history,
:class:`SessionSummary` in a listing, and the export's ``SessionTranscript``); inside the
library a session row travels as :class:`SessionState` and a session to create as
:class:`SessionSpec`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")


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
    #: The agent framework whose conversation this is (``openai-agents``, ``adk``,
    #: ``langchain``, ...): every framework's sessions live in the same ledger.
    framework: str = "openai-agents"


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
    #: The agent framework whose conversation this is (see :attr:`SessionRecord.framework`).
    framework: str = "openai-agents"


@dataclass(frozen=True, slots=True)
class Items(Generic[T]):
    """A result holding ``items`` in order: iterate it, index it, take its length."""

    items: tuple[T, ...]

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> T:
        return self.items[index]


@dataclass(frozen=True, slots=True)
class Page(Items[T]):
    """One page of a keyset-paginated result: iterate it, index it, take its length; pass
    ``next_cursor`` back as ``cursor=`` for the following page (``None`` on the last)."""

    next_cursor: str | None


class SessionPage(Page[SessionSummary]):
    """One page of :meth:`SessionService.list_user_sessions`."""

    __slots__ = ()

    @property
    def sessions(self) -> tuple[SessionSummary, ...]:
        return self.items


@dataclass(frozen=True, slots=True)
class MessagePage(Items[MessageRecord]):
    """One page of :meth:`SessionService.get_messages`: messages in order, and where the next
    page starts. Iterate it, index it, take its length."""

    #: Pass as ``after_seq=`` for the page after this one (``None``: nothing after it).
    next_after_seq: int | None = None
    #: Pass as ``before_seq=`` for the page before this one (``None``: nothing before it).
    next_before_seq: int | None = None

    @property
    def messages(self) -> tuple[MessageRecord, ...]:
        return self.items


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
class UsageEntry:
    """One usage record: the token usage of one agent run (a turn), and when it was recorded."""

    usage: Usage
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """A user's token usage of one agent on one UTC day (summed over its sessions' runs)."""

    day: date
    agent_name: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A compaction checkpoint: ``items`` (the summary) stand for the session's history up to
    and including ``upto_seq``. The originals stay in the history; a model receives these
    items followed by every message after ``upto_seq``."""

    id: uuid.UUID
    upto_seq: int
    items: tuple[Any, ...]
    #: What produced the summary (a model name, or the summarizer's name), if known.
    model: str | None
    #: The token usage of producing it (zero for a summarizer that reports none).
    usage: Usage
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ModelContext:
    """What a model receives from a session: the newest checkpoint (if any) and the messages
    after it, in order (see :meth:`SessionService.get_context`)."""

    checkpoint: Checkpoint | None
    messages: tuple[MessageRecord, ...]

    @property
    def items(self) -> list[Any]:
        """The items themselves: the checkpoint's summary, then each message's item."""
        head = list(self.checkpoint.items) if self.checkpoint is not None else []
        return [*head, *(message.item for message in self.messages)]


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
class PartitionRetirement:
    """What :meth:`SessionService.retire_message_partition` did (with ``dry_run``: would do).

    ``sessions`` had messages in the partition; each history now starts after the newest of
    them. ``messages``: the rows the partition held (dropped with it). ``beyond``: rows outside
    it that went with the cut: outputs (and what lies before them) whose calls were in the
    partition, and rows numbered below a dropped one but dated later (clocks of several
    writers disagree).
    """

    partition: str
    sessions: int
    messages: int
    beyond: int
    dry_run: bool = False

    def describe(self) -> str:
        """One line for the command line."""
        verb = "would drop" if self.dry_run else "dropped"
        extra = f"; the cuts took {self.beyond} more" if self.beyond else ""
        return (
            f"{self.partition}: {verb} {self.messages} messages of {self.sessions} sessions{extra}"
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
    #: The framework of the hit's session (see :attr:`SessionRecord.framework`).
    framework: str = "openai-agents"


class SearchPage(Page[SearchHit]):
    """One page of :meth:`SessionService.search`."""

    __slots__ = ()

    @property
    def hits(self) -> tuple[SearchHit, ...]:
        return self.items


@dataclass(frozen=True, slots=True)
class TranscriptImport:
    """What :meth:`SessionService.import_session` did: new items, and whether it created
    the session (``False``: it existed and was completed, or already complete)."""

    session_id: uuid.UUID
    items_added: int
    created: bool


@dataclass(frozen=True, slots=True)
class ScopedStates:
    """A framework session's state at its three scopes (Google ADK's ``app:`` keys, ``user:``
    keys and the session's own), each without its prefix; ``update_time``: the framework's
    time of the session's last update (``None`` when it has none)."""

    app: dict[str, Any]
    user: dict[str, Any]
    session: dict[str, Any]
    update_time: float | None = None


@dataclass(frozen=True, slots=True)
class ScopedSession:
    """A framework session as :meth:`SessionService.get_scoped_session` reads it: the session
    (without messages), its scoped state, ``last_seq`` for a compare-and-append, and the
    stored items of the requested window of its history, in order."""

    record: SessionRecord
    states: ScopedStates
    last_seq: int
    items: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class ScopedSessionRow:
    """A framework app's session as listed: no messages, its own state."""

    id: uuid.UUID
    user_id: str
    name: str | None
    state: dict[str, Any]
    update_time: float


@dataclass(frozen=True, slots=True)
class ScopedSessionPage:
    """One page of :meth:`SessionService.list_scoped_sessions`, with the app's state and the
    listed users' state; ``next_after``: pass as ``after=`` for the next page."""

    sessions: tuple[ScopedSessionRow, ...]
    app_state: dict[str, Any]
    user_states: dict[str, dict[str, Any]]
    next_after: uuid.UUID | None


# -- inside the library -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """What a session is created with when a write finds it missing (the SDK's first write);
    ``name``: the name it is opened by (see :mod:`agentledger.domain.naming`)."""

    user_id: str
    agent_name: str
    name: str | None = None
    #: The framework the adapter creating it serves (see :attr:`SessionRecord.framework`).
    framework: str = "openai-agents"


@dataclass(frozen=True, slots=True)
class SessionState:
    """A session row as the use cases need it (read, or locked, in a unit of work)."""

    id: uuid.UUID
    user_id: str
    agent_name: str
    metadata: dict[str, Any]
    title: str | None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    trimmed_seq: int
    last_seq: int
    name: str | None = None
    framework: str = "openai-agents"

    @property
    def message_count(self) -> int:
        """Sequences are gap-free from ``trimmed_seq + 1`` to ``last_seq``."""
        return self.last_seq - self.trimmed_seq


@dataclass(frozen=True, slots=True)
class NewRow:
    """A validated message ready to insert; JSON values are already encoded as text."""

    id: uuid.UUID
    role: str
    content: str
    tool_calls_json: str | None
    tool_call_id: str | None
    item_type: str
    item_json: str
    #: Bytes the row takes in an append statement (``encoding.check_message_size``).
    size: int
