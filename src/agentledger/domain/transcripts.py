"""Session transcripts: the JSONL export/import format and a readable Markdown rendering.

JSONL (``agentledger.transcript`` version 1), one JSON object per line, UTF-8:

* line 1, the header: ``{"format": "agentledger.transcript", "version": 1, "session": {...},
  "message_count": N}`` with the session's ``id``, ``user_id``, ``agent_name``, ``title``,
  ``metadata``, ``created_at``, ``updated_at``, ``archived_at`` and ``trimmed_seq`` (messages
  start at ``trimmed_seq + 1``; retention may have trimmed the ones before);
* then one line per message, in order: ``{"seq": n, "created_at": "...", "item": {...}}`` where
  ``item`` is the stored item exactly (what ``get_items`` returns).

It is lossless: every stored item and every character comes back exactly. Text is written as
UTF-8; control characters, bidirectional-formatting characters and U+2028/U+2029 are written
as ``\\u`` escapes (the same JSON value, safe to print to a terminal). Only ``\\n`` separates
lines. ``message_count`` lets a reader tell a complete file from a truncated one. An item at
the deepest nesting agentledger stores (:data:`~agentledger.domain.encoding.MAX_JSON_DEPTH`) still
exports and imports: the line around it may be that much deeper.

This module is pure: no database. The service builds a :class:`SessionTranscript`
(``export_session``) and stores one (``import_session``).
"""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from agentledger.domain.display import json_text, terminal_text
from agentledger.domain.encoding import MAX_JSON_DEPTH, dump_json
from agentledger.domain.projection import chat_view
from agentledger.domain.time import as_utc
from agentledger.errors import InvalidInputError, LedgerDatabaseError

#: The highest sequence number a session can reach (the column is a BIGINT).
MAX_SEQ = 2**63 - 1

FORMAT = "agentledger.transcript"
VERSION = 1


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

    @property
    def items(self) -> list[Any]:
        """The items in order, as ``get_items`` returns them."""
        return [message.item for message in self.messages]

    @property
    def last_seq(self) -> int:
        return self.trimmed_seq + len(self.messages)


# -- JSONL ---------------------------------------------------------------------------------------


def _stamp(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _line(value: Any, what: str, wrapping: int) -> str:
    """One JSONL line; ``wrapping`` is how many levels the line adds around stored values."""
    return json_text(dump_json(value, what, max_depth=MAX_JSON_DEPTH + wrapping))


def jsonl_lines(transcript: SessionTranscript) -> Iterator[str]:
    """The transcript's JSONL lines, without line ends.

    Refuses (before the first line) a transcript with damaged messages: a JSONL export is a
    complete copy or nothing."""
    if transcript.damaged_seqs:
        shown = ", ".join(map(str, transcript.damaged_seqs[:10]))
        raise LedgerDatabaseError(
            f"session {transcript.id} cannot be exported losslessly: the stored JSON of "
            f"message(s) {shown} is damaged (changed outside agentledger); repair or delete "
            "those rows (docs/reliability.md, 'Damaged rows'), or export it as Markdown, "
            "which shows the rest"
        )
    header = {
        "format": FORMAT,
        "version": VERSION,
        "session": {
            "id": str(transcript.id),
            "user_id": transcript.user_id,
            "agent_name": transcript.agent_name,
            "title": transcript.title,
            "metadata": transcript.metadata,
            "created_at": _stamp(transcript.created_at),
            "updated_at": _stamp(transcript.updated_at),
            "archived_at": _stamp(transcript.archived_at),
            "trimmed_seq": transcript.trimmed_seq,
            "name": transcript.name,
        },
        "message_count": len(transcript.messages),
    }
    yield _line(header, "session header", 2)
    for message in transcript.messages:
        yield _line(
            {"seq": message.seq, "created_at": _stamp(message.created_at), "item": message.item},
            f"message {message.seq}",
            1,
        )


def write_jsonl(transcript: SessionTranscript, stream: TextIO) -> None:
    """Write the transcript as JSONL to a text stream (open it with ``encoding="utf-8"``)."""
    for line in jsonl_lines(transcript):
        stream.write(line)
        stream.write("\n")


def dumps_jsonl(transcript: SessionTranscript) -> str:
    return "".join(f"{line}\n" for line in jsonl_lines(transcript))


def loads_jsonl(text: str, *, source: str = "transcript") -> SessionTranscript:
    """Parse JSONL text (split on ``\\n`` only, never on U+2028 and the like)."""
    return read_jsonl(text.split("\n"), source=source)


def read_jsonl(lines: Iterable[str], *, source: str = "transcript") -> SessionTranscript:
    """Parse and validate a JSONL transcript; :class:`InvalidInputError` names the bad line."""
    header: dict[str, Any] | None = None
    messages: list[TranscriptMessage] = []
    expected = 0
    number = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as error:
            raise InvalidInputError(
                f"{source}, line {number}: not valid JSON ({error}); export the session "
                "again with `agentledger sessions export`"
            ) from None
        except RecursionError:
            raise InvalidInputError(
                f"{source}, line {number}: nested too deeply to read (agentledger stores at "
                f"most {MAX_JSON_DEPTH} levels)"
            ) from None
        if header is None:
            header = _check_header(value, source, number)
            expected = header["trimmed_seq"] + 1
            continue
        messages.append(_check_message(value, source, number, expected))
        expected += 1
    if header is None:
        raise InvalidInputError(
            f"{source} is empty; expected an agentledger transcript (JSONL with a header line)"
        )
    if len(messages) != header["message_count"]:
        raise InvalidInputError(
            f"{source} holds {len(messages)} of the {header['message_count']} messages its "
            "header announces: the file is incomplete; export the session again"
        )
    return SessionTranscript(
        id=header["id"],
        user_id=header["user_id"],
        agent_name=header["agent_name"],
        metadata=header["metadata"],
        created_at=header["created_at"],
        updated_at=header["updated_at"],
        messages=tuple(messages),
        title=header["title"],
        archived_at=header["archived_at"],
        trimmed_seq=header["trimmed_seq"],
        name=header["name"],
    )


def _problem(source: str, number: int, what: str) -> InvalidInputError:
    return InvalidInputError(f"{source}, line {number}: {what}")


def _check_header(value: Any, source: str, number: int) -> dict[str, Any]:
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise _problem(
            source,
            number,
            f'not an agentledger transcript (the first line must have "format": "{FORMAT}")',
        )
    if value.get("version") != VERSION:
        raise _problem(
            source,
            number,
            f"transcript version {value.get('version')!r} is not supported (this agentledger "
            f"reads version {VERSION}); upgrade agentledger",
        )
    session = value.get("session")
    count = value.get("message_count")
    if not isinstance(session, dict):
        raise _problem(source, number, 'the header has no "session" object')
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise _problem(source, number, '"message_count" must be a non-negative integer')
    try:
        session_id = uuid.UUID(str(session.get("id")))
    except ValueError:
        raise _problem(source, number, 'session "id" is not a UUID') from None
    for key in ("user_id", "agent_name"):
        if not isinstance(session.get(key), str):
            raise _problem(source, number, f"session {key!r} must be a string")
    title = session.get("title")
    if title is not None and not isinstance(title, str):
        raise _problem(source, number, 'session "title" must be a string or null')
    name = session.get("name")
    if name is not None and not isinstance(name, str):
        raise _problem(source, number, 'session "name" must be a string or null')
    metadata = session.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _problem(source, number, 'session "metadata" must be an object')
    trimmed = session.get("trimmed_seq", 0)
    if not isinstance(trimmed, int) or isinstance(trimmed, bool) or not trimmed >= 0:
        raise _problem(source, number, 'session "trimmed_seq" must be a non-negative integer')
    if trimmed + count > MAX_SEQ:
        raise _problem(
            source,
            number,
            f'session "trimmed_seq" {trimmed} plus {count} messages passes the highest '
            f"sequence number a session can hold ({MAX_SEQ})",
        )
    return {
        "id": session_id,
        "user_id": session["user_id"],
        "agent_name": session["agent_name"],
        "title": title,
        "metadata": metadata,
        "created_at": _parse_stamp(session.get("created_at"), "created_at", source, number),
        "updated_at": _parse_stamp(session.get("updated_at"), "updated_at", source, number),
        "archived_at": _parse_stamp(
            session.get("archived_at"), "archived_at", source, number, optional=True
        ),
        "trimmed_seq": trimmed,
        "message_count": count,
        "name": name,
    }


def _parse_stamp(value: Any, what: str, source: str, number: int, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise _problem(source, number, f"{what} must be an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise _problem(source, number, f"{what} must carry a UTC offset")
    try:
        return as_utc(parsed)
    except OverflowError:
        raise _problem(
            source, number, f"{what} {value!r} lies outside the years 1 to 9999 in UTC"
        ) from None


def _check_message(value: Any, source: str, number: int, expected: int) -> TranscriptMessage:
    if not isinstance(value, dict) or "item" not in value:
        raise _problem(source, number, 'a message line must be {"seq": n, "item": {...}}')
    seq = value.get("seq")
    if seq != expected or isinstance(seq, bool):
        raise _problem(
            source,
            number,
            f"expected the message with seq {expected}, found seq {seq!r}: messages must be "
            "contiguous and in order",
        )
    created_at = value.get("created_at")
    stamp = None if created_at is None else _parse_stamp(created_at, "created_at", source, number)
    return TranscriptMessage(seq=expected, item=value["item"], created_at=stamp)


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


# -- Markdown ------------------------------------------------------------------------------------

_ROLE_LABELS = {
    "user": "User",
    "assistant": "Assistant",
    "system": "System",
    "developer": "Developer",
    "tool": "Tool result",
}


def render_markdown(transcript: SessionTranscript) -> str:
    """A readable transcript: who said what, tool calls with their arguments, tool results.

    For reading, not for import (use JSONL for that). Who said what is beyond doubt: every
    heading is written by agentledger, and every body (message text, tool output, arguments)
    sits in a code fence longer than any backtick run inside it, so content can neither forge
    a heading nor inject HTML; names in headings are code spans, the title is escaped.
    Control and bidi-formatting characters show as escapes (``\\e``, ``\\0``, ``\\u202e``).
    """
    title = _escaped(transcript.title) if transcript.title else f"Session {transcript.id}"
    lines = [
        f"# {title}",
        "",
        f"- session: {_code(str(transcript.id))}",
        f"- user: {_code(transcript.user_id)}",
        f"- agent: {_code(transcript.agent_name)}",
        f"- created: {transcript.created_at.isoformat()}",
        f"- updated: {transcript.updated_at.isoformat()}",
    ]
    if transcript.archived_at is not None:
        lines.append(f"- archived: {transcript.archived_at.isoformat()}")
    if transcript.metadata:
        lines.append(f"- metadata: {_code(json.dumps(transcript.metadata, ensure_ascii=False))}")
    if transcript.trimmed_seq:
        lines.append(f"- messages 1 to {transcript.trimmed_seq} were trimmed by retention")
    damaged = set(transcript.damaged_seqs)
    last = transcript.last_seq + len(damaged)
    messages = {message.seq: message for message in transcript.messages}
    for seq in range(transcript.trimmed_seq + 1, last + 1):
        lines.append("")
        if seq in damaged:
            lines.extend(
                [f"## {seq} · (damaged)", "", "The stored JSON of this message is damaged."]
            )
        elif seq in messages:
            lines.extend(_render_message(messages[seq]))
    return "\n".join(lines) + "\n"


def _render_message(message: TranscriptMessage) -> list[str]:
    item = message.item
    try:
        view = chat_view(item)
    except InvalidInputError:
        return [f"## {message.seq} · item", "", *_fenced(_pretty(item), "json")]
    item_type = view.item_type
    if item_type == "function_call" and isinstance(item, dict):
        heading = f"## {message.seq} · Tool call {_code(str(item.get('name')))}"
        body = [f"call id: {_code(str(item.get('call_id')))}", ""]
        return [heading, "", *body, *_fenced(_arguments(item.get("arguments")), "json")]
    if item_type.endswith("_output") or view.role == "tool":
        call = f" for {_code(view.tool_call_id)}" if view.tool_call_id else ""
        return [f"## {message.seq} · Tool result{call}", "", *_fenced(view.content)]
    if item_type == "reasoning":
        return [f"## {message.seq} · Reasoning", "", *_fenced(view.content)]
    if item_type != "message":
        return [f"## {message.seq} · {_code(item_type)}", "", *_fenced(_pretty(item), "json")]
    label = _ROLE_LABELS.get(view.role) or _code(view.role)
    out = [f"## {message.seq} · {label}"]
    if view.content:
        out.extend(["", *_fenced(view.content)])
    for tool_call in view.tool_calls or []:
        function = tool_call.get("function") if isinstance(tool_call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        call_id = tool_call.get("id") if isinstance(tool_call, dict) else None
        out.extend(
            [
                "",
                f"Tool call {_code(str(name))} (call id {_code(str(call_id))}):",
                "",
                *_fenced(_arguments(arguments), "json"),
            ]
        )
    if view.tool_call_id and view.role != "tool":
        out.extend(["", f"(answers call {_code(view.tool_call_id)})"])
    return out


def _one_line(text: str) -> str:
    return " ".join(terminal_text(text).split())


def _code(text: str) -> str:
    """``text`` on one line as a code span (inert: no Markdown, no HTML inside)."""
    visible = _one_line(text)
    fence = "`" * (_longest_backtick_run(visible) + 1)
    pad = " " if visible.startswith("`") or visible.endswith("`") else ""
    return f"{fence}{pad}{visible}{pad}{fence}"


_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def _escaped(text: str) -> str:
    """``text`` on one line as plain Markdown text: punctuation backslash-escaped, HTML's
    special characters as entities."""
    visible = _MARKDOWN_PUNCTUATION.sub(r"\\\1", _one_line(text))
    return html.escape(visible, quote=False)


def _pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def _arguments(arguments: Any) -> str:
    """Tool arguments pretty-printed when they are JSON text (the usual case)."""
    if isinstance(arguments, str):
        try:
            return _pretty(json.loads(arguments))
        except (ValueError, RecursionError):
            return arguments
    return _pretty(arguments)


def _longest_backtick_run(text: str) -> int:
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return longest


def _fenced(text: str, language: str = "") -> list[str]:
    """A code block whose fence is longer than any backtick run inside ``text``."""
    visible = terminal_text(text, keep_lines=True)
    fence = "`" * max(3, _longest_backtick_run(visible) + 1)
    return [f"{fence}{language}", *visible.split("\n"), fence]
