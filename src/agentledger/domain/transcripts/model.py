"""What a transcript is (a session and its messages) and what makes one valid to store.

Pure: the service builds a :class:`SessionTranscript` (``export_session``) and stores one
(``import_session``) after :func:`check_transcript`.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agentledger.domain.records import Checkpoint
from agentledger.domain.time import as_utc
from agentledger.errors import InvalidInputError

#: The highest sequence number a session can reach (the column is a BIGINT).
MAX_SEQ = 2**63 - 1

FORMAT = "agentledger.transcript"
VERSION = 1
#: The version of a transcript that holds compaction checkpoints (lines after the messages);
#: one without any is still written as version 1, which older agentledger versions read.
VERSION_WITH_CHECKPOINTS = 2


@dataclass(frozen=True, slots=True)
class TranscriptMessage:
    """One stored item with its position in the session."""

    seq: int
    item: Any
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SessionTranscript:
    """A session and its history, as exported; ``messages`` are ``trimmed_seq + 1 ...``."""

    id: uuid.UUID
    user_id: str
    agent_name: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    messages: tuple[TranscriptMessage, ...] = ()
    title: str | None = None
    archived_at: datetime | None = None
    trimmed_seq: int = 0
    #: Seqs whose stored JSON is damaged (see docs/reliability.md): left out of ``messages``.
    #: A transcript with damaged messages renders as Markdown but does not export as JSONL.
    damaged_seqs: tuple[int, ...] = ()
    #: The name the session was opened by (``ledger.agent_session(name, ...)``), if any.
    name: str | None = None
    #: Compaction checkpoints: each one's summary stands for the messages up to its
    #: ``upto_seq`` in what a model receives (the messages themselves are all here).
    checkpoints: tuple[Checkpoint, ...] = ()
    #: The agent framework whose conversation this is (``openai-agents``, ``adk``, ...).
    framework: str = "openai-agents"
    #: The session's own framework state (Google ADK's session state), if it has any:
    #: ``{"state": {...}, "update_time": float}``. App and user state belong to no session and
    #: are not exported with one.
    framework_state: dict[str, Any] | None = None

    @property
    def items(self) -> list[Any]:
        """The items in order, as ``get_items`` returns them."""
        return [message.item for message in self.messages]

    @property
    def last_seq(self) -> int:
        return self.trimmed_seq + len(self.messages)


def check_transcript(transcript: SessionTranscript) -> None:
    """Refuse a transcript that would not be stored exactly as it says (one built in Python
    skips :func:`read_jsonl`'s checks): wrong types, naive or out-of-range times, and seqs
    that are not ``trimmed_seq + 1, + 2, ...`` (a duplicate or a gap would renumber or lose
    messages). Items are checked when they are prepared for storing."""
    if not isinstance(transcript, SessionTranscript):
        raise TypeError("expected a SessionTranscript (see transcripts.read_jsonl)")
    if not isinstance(transcript.id, uuid.UUID):
        raise InvalidInputError("the transcript's id must be a uuid.UUID")
    for name in ("user_id", "agent_name"):
        if not isinstance(getattr(transcript, name), str):
            raise InvalidInputError(f"the transcript's {name} must be a string")
    if not isinstance(transcript.framework, str):
        raise InvalidInputError("the transcript's framework must be a string")
    check_framework_state(transcript.framework_state, "the transcript's framework_state")
    for optional in ("title", "name"):
        if getattr(transcript, optional) is not None and not isinstance(
            getattr(transcript, optional), str
        ):
            raise InvalidInputError(f"the transcript's {optional} must be a string or None")
    if not isinstance(transcript.metadata, dict):
        raise InvalidInputError("the transcript's metadata must be a dict")
    for name in ("created_at", "updated_at", "archived_at"):
        _check_time(getattr(transcript, name), name, optional=name == "archived_at")
    start = transcript.trimmed_seq
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise InvalidInputError("the transcript's trimmed_seq must be an int, 0 or more")
    if not isinstance(transcript.messages, (tuple, list)):
        raise InvalidInputError("the transcript's messages must be a tuple of TranscriptMessage")
    if start + len(transcript.messages) > MAX_SEQ:
        raise InvalidInputError(
            f"trimmed_seq {start} plus {len(transcript.messages)} messages passes the highest "
            f"sequence number a session can hold ({MAX_SEQ})"
        )
    for index, message in enumerate(transcript.messages):
        if not isinstance(message, TranscriptMessage):
            raise InvalidInputError(f"message {index} of the transcript is not a TranscriptMessage")
        expected = start + 1 + index
        if message.seq != expected or isinstance(message.seq, bool):
            raise InvalidInputError(
                f"message {index} of the transcript has seq {message.seq!r}, expected "
                f"{expected}: seqs must run from trimmed_seq + 1 without duplicates or gaps"
            )
        _check_time(message.created_at, f"created_at of message {expected}", optional=True)
    last = start + len(transcript.messages)
    for index, checkpoint in enumerate(transcript.checkpoints):
        if not isinstance(checkpoint, Checkpoint):
            raise InvalidInputError(f"checkpoint {index} of the transcript is not a Checkpoint")
        upto = checkpoint.upto_seq
        if isinstance(upto, bool) or not isinstance(upto, int) or not 1 <= upto <= last:
            raise InvalidInputError(
                f"checkpoint {index} of the transcript has upto_seq {upto!r}; it must be a "
                f"seq from 1 to {last}"
            )
        if not isinstance(checkpoint.items, tuple) or not checkpoint.items:
            raise InvalidInputError(f"checkpoint {index} needs a non-empty tuple of items")
        counts = (
            checkpoint.usage.requests,
            checkpoint.usage.input_tokens,
            checkpoint.usage.output_tokens,
            checkpoint.usage.total_tokens,
        )
        if not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_SEQ for n in counts
        ):
            raise InvalidInputError(
                f"checkpoint {index}'s usage must hold integers from 0 to {MAX_SEQ}"
            )
        _check_time(checkpoint.created_at, f"created_at of checkpoint {index}", optional=False)


def check_framework_state(value: object, what: str) -> None:
    """``None``, or ``{"state": <object>, "update_time": <finite number>}``."""
    if value is None:
        return
    if (
        not isinstance(value, dict)
        or set(value) != {"state", "update_time"}
        or not isinstance(value["state"], dict)
        or isinstance(value["update_time"], bool)
        or not isinstance(value["update_time"], (int, float))
        or not math.isfinite(value["update_time"])
    ):
        raise InvalidInputError(
            f'{what} must be null or {{"state": {{...}}, "update_time": <seconds>}}'
        )


def _check_time(value: object, what: str, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInputError(f"the transcript's {what} must be a timezone-aware datetime")
    try:
        as_utc(value)
    except OverflowError:
        raise InvalidInputError(
            f"the transcript's {what} lies outside the years 1 to 9999 in UTC"
        ) from None


def not_after(value: datetime, now: datetime) -> datetime:
    """``value``, or ``now`` when it lies in the future: an imported time from the future
    (a skewed clock, or a crafted file) would otherwise keep a session safe from retention."""
    return min(as_utc(value), now)
