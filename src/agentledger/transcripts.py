"""Session transcripts: the JSONL export/import format and a readable Markdown rendering.

JSONL (``agentledger.transcript`` version 1), one JSON object per line, UTF-8:

* line 1, the header: ``{"format": "agentledger.transcript", "version": 1, "session": {...},
  "message_count": N}`` with the session's ``id``, ``user_id``, ``agent_name``, ``title``,
  ``metadata``, ``created_at``, ``updated_at``, ``archived_at`` and ``trimmed_seq`` (messages
  start at ``trimmed_seq + 1``; retention may have trimmed the ones before);
* then one line per message, in order: ``{"seq": n, "created_at": "...", "item": {...}}`` where
  ``item`` is the stored item exactly (what ``get_items`` returns).

It is lossless: JSON escapes U+0000 as ``\\u0000`` and keeps every other character (written
raw, not ``\\u`` escaped); only ``\\n`` separates lines (U+2028 and friends may appear raw inside
a line). ``message_count`` lets a reader tell a complete file from a truncated one.

This module is pure: no database. The service builds a :class:`SessionTranscript`
(``export_session``) and stores one (``import_session``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from .encoding import dump_json
from .errors import InvalidInputError
from .projection import chat_view
from .types import as_utc

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


def _line(value: Any, what: str) -> str:
    return dump_json(value, what)


def jsonl_lines(transcript: SessionTranscript) -> Iterator[str]:
    """The transcript's JSONL lines, without line ends."""
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
        },
        "message_count": len(transcript.messages),
    }
    yield _line(header, "session header")
    for message in transcript.messages:
        yield _line(
            {"seq": message.seq, "created_at": _stamp(message.created_at), "item": message.item},
            f"message {message.seq}",
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
    metadata = session.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _problem(source, number, 'session "metadata" must be an object')
    trimmed = session.get("trimmed_seq", 0)
    if not isinstance(trimmed, int) or isinstance(trimmed, bool) or trimmed < 0:
        raise _problem(source, number, 'session "trimmed_seq" must be a non-negative integer')
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
    return as_utc(parsed)


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

    For reading, not for import (use JSONL for that). U+0000 shows as ``\\0``.
    """
    title = transcript.title or f"Session {transcript.id}"
    lines = [
        f"# {_inline(title)}",
        "",
        f"- session: `{transcript.id}`",
        f"- user: `{_inline(transcript.user_id)}`",
        f"- agent: `{_inline(transcript.agent_name)}`",
        f"- created: {transcript.created_at.isoformat()}",
        f"- updated: {transcript.updated_at.isoformat()}",
    ]
    if transcript.archived_at is not None:
        lines.append(f"- archived: {transcript.archived_at.isoformat()}")
    if transcript.metadata:
        lines.append(
            f"- metadata: `{_inline(json.dumps(transcript.metadata, ensure_ascii=False))}`"
        )
    if transcript.trimmed_seq:
        lines.append(f"- messages 1 to {transcript.trimmed_seq} were trimmed by retention")
    for message in transcript.messages:
        lines.append("")
        lines.extend(_render_message(message))
    return "\n".join(lines) + "\n"


def _render_message(message: TranscriptMessage) -> list[str]:
    item = message.item
    try:
        view = chat_view(item)
    except InvalidInputError:
        return [f"## {message.seq} · item", "", *_fenced(_pretty(item), "json")]
    item_type = view.item_type
    if item_type == "function_call" and isinstance(item, dict):
        name = item.get("name")
        heading = f"## {message.seq} · Tool call `{_inline(str(name))}`"
        body = [f"call id: `{_inline(str(item.get('call_id')))}`", ""]
        return [heading, "", *body, *_fenced(_arguments(item.get("arguments")), "json")]
    if item_type.endswith("_output") or view.role == "tool":
        call = f" for `{_inline(view.tool_call_id)}`" if view.tool_call_id else ""
        return [f"## {message.seq} · Tool result{call}", "", *_fenced(_visible(view.content))]
    if item_type == "reasoning":
        return [f"## {message.seq} · Reasoning", "", *_quoted(view.content)]
    if item_type != "message":
        return [f"## {message.seq} · {_inline(item_type)}", "", *_fenced(_pretty(item), "json")]
    label = _ROLE_LABELS.get(view.role, view.role.title())
    out = [f"## {message.seq} · {label}", ""]
    if view.content:
        out.extend(_visible(view.content).split("\n"))
    for tool_call in view.tool_calls or []:
        function = tool_call.get("function") if isinstance(tool_call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        call_id = tool_call.get("id") if isinstance(tool_call, dict) else None
        out.extend(
            [
                "",
                f"Tool call `{_inline(str(name))}` (call id `{_inline(str(call_id))}`):",
                "",
                *_fenced(_arguments(arguments), "json"),
            ]
        )
    if view.tool_call_id and view.role != "tool":
        out.extend(["", f"(answers call `{_inline(view.tool_call_id)}`)"])
    return out


def _visible(text: str) -> str:
    return text.replace("\x00", "\\0")


def _inline(text: str) -> str:
    return " ".join(_visible(text).replace("`", "'").split())


def _pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def _arguments(arguments: Any) -> str:
    """Tool arguments pretty-printed when they are JSON text (the usual case)."""
    if isinstance(arguments, str):
        try:
            return _pretty(json.loads(arguments))
        except ValueError:
            return _visible(arguments)
    return _pretty(arguments)


def _fenced(text: str, language: str = "") -> list[str]:
    """A code block whose fence is longer than any backtick run inside ``text``."""
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{language}", *_visible(text).split("\n"), fence]


def _quoted(text: str) -> list[str]:
    return [f"> {line}" if line else ">" for line in _visible(text).split("\n")]
