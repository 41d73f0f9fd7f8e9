"""What the transcript browser shows of stored records: inert text, paired tool calls, and
outputs cut to a size a browser renders at once.

Everything here produces plain strings; the templates escape them (Jinja2 autoescape) and
nothing is ever marked safe. Control and bidirectional-formatting characters (ANSI escapes
among them) are shown as visible escapes by the library's one rule for that,
:func:`agentledger.domain.display.terminal_text`, so a tool's coloured output cannot hide or
rewrite what is around it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentledger.domain.display import terminal_text
from agentledger.domain.encoding import dump_json
from agentledger.domain.projection import chat_view
from agentledger.domain.records import Checkpoint, MessageRecord
from agentledger.errors import LedgerError

#: Characters of a message or tool output a page shows before "show all" (about 4 KB of text).
PREVIEW_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Text:
    """A shown text: its (escaped for control characters) preview and whether it was cut."""

    shown: str
    truncated: bool
    #: Characters of the original: all of it, and how many the preview holds.
    length: int
    kept: int


def shown_text(value: str, limit: int = PREVIEW_CHARS) -> Text:
    """``value`` cut to ``limit`` characters, control characters made visible."""
    cut = value[:limit]
    return Text(terminal_text(cut, keep_lines=True), len(value) > limit, len(value), len(cut))


def one_line(value: Any) -> str:
    """A short value (a name, a metadata value) on one line, control characters visible."""
    text = value if isinstance(value, str) else dump_json(value, "value")
    return terminal_text(text)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call of an assistant message and, when it is on the same page, its output."""

    call_id: str
    name: str
    arguments: Text
    output: ShownMessage | None = None


@dataclass(slots=True)
class ShownMessage:
    """One message as the transcript shows it."""

    seq: int
    role: str
    item_type: str
    created_at: str
    content: Text
    tool_call_id: str | None
    calls: list[ToolCall] = field(default_factory=list)


def _arguments(call: Mapping[str, Any]) -> tuple[str, Text]:
    function = call.get("function")
    if isinstance(function, Mapping):
        name, arguments = function.get("name"), function.get("arguments")
    else:
        name, arguments = call.get("type"), call.get("arguments")
    if not isinstance(arguments, str):
        arguments = "" if arguments is None else dump_json(arguments, "arguments")
    return one_line(name if isinstance(name, str) else "tool"), shown_text(arguments)


def shown_message(record: MessageRecord) -> ShownMessage:
    """A message record as shown, its tool calls not yet paired with their outputs."""
    calls = []
    for call in record.tool_calls or ():
        if not isinstance(call, Mapping):
            continue
        name, arguments = _arguments(call)
        call_id = call.get("id")
        calls.append(ToolCall(call_id if isinstance(call_id, str) else "", name, arguments))
    return ShownMessage(
        seq=record.seq,
        role=record.role,
        item_type=one_line(record.item_type),
        created_at=record.created_at.isoformat(timespec="seconds"),
        content=shown_text(record.content),
        tool_call_id=record.tool_call_id,
        calls=calls,
    )


def paired(records: Iterable[MessageRecord]) -> list[ShownMessage]:
    """The messages of one page, each tool output placed under the call it answers when that
    call is on the page (the output is then not listed on its own)."""
    shown = [shown_message(record) for record in records]
    answers = {
        message.tool_call_id: message
        for message in shown
        if message.role == "tool" and message.tool_call_id
    }
    placed: set[int] = set()
    for message in shown:
        for index, call in enumerate(message.calls):
            output = answers.get(call.call_id) if call.call_id else None
            if output is not None and output.seq > message.seq:
                message.calls[index] = ToolCall(call.call_id, call.name, call.arguments, output)
                placed.add(output.seq)
    return [message for message in shown if message.seq not in placed]


@dataclass(frozen=True, slots=True)
class ShownCheckpoint:
    """A compaction checkpoint: the summary that stands for the history up to ``upto_seq``."""

    upto_seq: int
    model: str
    created_at: str
    summary: Text
    total_tokens: int


def shown_checkpoint(checkpoint: Checkpoint) -> ShownCheckpoint:
    """A checkpoint with its summary items as readable text."""
    texts = []
    for item in checkpoint.items:
        try:
            texts.append(chat_view(item).content)
        except LedgerError:
            texts.append(dump_json(item, "checkpoint item"))
    return ShownCheckpoint(
        upto_seq=checkpoint.upto_seq,
        model=one_line(checkpoint.model or "unknown"),
        created_at=checkpoint.created_at.isoformat(timespec="seconds"),
        summary=shown_text("\n\n".join(texts)),
        total_tokens=checkpoint.usage.total_tokens,
    )


def checkpoints_after(
    checkpoints: Sequence[ShownCheckpoint], messages: Sequence[ShownMessage]
) -> dict[int, list[ShownCheckpoint]]:
    """Which checkpoints to show after which message of the page: after the message that
    holds the one each checkpoint covers up to (itself, or the call a tool output answers);
    checkpoints whose ``upto_seq`` is not on the page are left out."""
    holder: dict[int, int] = {}
    for message in messages:
        holder[message.seq] = message.seq
        for call in message.calls:
            if call.output is not None:
                holder[call.output.seq] = message.seq
    placed: dict[int, list[ShownCheckpoint]] = {}
    for checkpoint in checkpoints:
        if checkpoint.upto_seq in holder:
            placed.setdefault(holder[checkpoint.upto_seq], []).append(checkpoint)
    return placed


def parse_metadata_filter(values: Iterable[str]) -> dict[str, Any]:
    """``key=value`` filters of the sessions list as ``list_user_sessions`` takes them: the
    value is a JSON number, ``true``/``false``, or else the text itself."""
    wanted: dict[str, Any] = {}
    for entry in values:
        key, sep, raw = entry.partition("=")
        key = key.strip()
        if not sep or not key:
            continue
        wanted[key] = _scalar(raw.strip())
    return wanted


def _scalar(raw: str) -> Any:
    if raw in ("true", "false"):
        return raw == "true"
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        number = float(raw)
    except ValueError:
        return raw
    return number if number == number and abs(number) != float("inf") else raw
