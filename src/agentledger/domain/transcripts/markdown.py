"""A readable Markdown rendering of a transcript (for people, not for import)."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from agentledger.domain.display import terminal_text
from agentledger.domain.langchain_messages import LANGCHAIN_ITEM_TYPE
from agentledger.domain.projection import ADK_EVENT_TYPE, chat_view
from agentledger.domain.records import Checkpoint
from agentledger.domain.transcripts.model import SessionTranscript, TranscriptMessage
from agentledger.errors import InvalidInputError

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
    damaged = set(transcript.damaged_seqs)
    last = transcript.last_seq + len(damaged)
    messages = {message.seq: message for message in transcript.messages}
    marks = checkpoint_marks(transcript)
    lines = markdown_head(transcript, marks)
    for seq in range(transcript.trimmed_seq + 1, last + 1):
        lines.extend(markdown_seq(seq, messages.get(seq), seq in damaged, marks))
    return "\n".join(lines) + "\n"


def checkpoint_marks(transcript: SessionTranscript) -> dict[int, list[Checkpoint]]:
    """The checkpoints by the seq after which each is shown."""
    marks: dict[int, list[Checkpoint]] = {}
    for checkpoint in transcript.checkpoints:
        marks.setdefault(max(checkpoint.upto_seq, transcript.trimmed_seq), []).append(checkpoint)
    return marks


def markdown_head(transcript: SessionTranscript, marks: dict[int, list[Checkpoint]]) -> list[str]:
    """The title, the session's facts, and checkpoints before the first message (its
    ``messages`` are not read: a streamed export renders them page by page after it)."""
    title = _escaped(transcript.title) if transcript.title else f"Session {transcript.id}"
    lines = [
        f"# {title}",
        "",
        f"- session: {_code(str(transcript.id))}",
        f"- user: {_code(transcript.user_id)}",
        f"- agent: {_code(transcript.agent_name)}",
        f"- framework: {_code(transcript.framework)}",
        f"- created: {transcript.created_at.isoformat()}",
        f"- updated: {transcript.updated_at.isoformat()}",
    ]
    if transcript.archived_at is not None:
        lines.append(f"- archived: {transcript.archived_at.isoformat()}")
    if transcript.metadata:
        lines.append(f"- metadata: {_code(json.dumps(transcript.metadata, ensure_ascii=False))}")
    if transcript.framework_state is not None and transcript.framework_state["state"]:
        shown = json.dumps(transcript.framework_state["state"], ensure_ascii=False)
        lines.append(f"- session state: {_code(shown)}")
    if transcript.trimmed_seq:
        lines.append(f"- messages 1 to {transcript.trimmed_seq} were trimmed by retention")
    for checkpoint in marks.get(transcript.trimmed_seq, []):
        lines.extend(_render_checkpoint(checkpoint))
    return lines


def markdown_seq(
    seq: int,
    message: TranscriptMessage | None,
    damaged: bool,
    marks: dict[int, list[Checkpoint]],
) -> list[str]:
    """The lines of one seq: its message (or the note that it is damaged), then the
    checkpoints that apply from there."""
    lines = [""]
    if damaged:
        lines.extend([f"## {seq} · (damaged)", "", "The stored JSON of this message is damaged."])
    elif message is not None:
        lines.extend(_render_message(message))
    for checkpoint in marks.get(seq, []):
        lines.extend(_render_checkpoint(checkpoint))
    return lines


def _render_checkpoint(checkpoint: Checkpoint) -> list[str]:
    """Where a compaction checkpoint applies: from here on, a model received its summary
    instead of the messages up to here (which this transcript still shows, above)."""
    model = f" by {_code(checkpoint.model)}" if checkpoint.model else ""
    return [
        "",
        f"## Checkpoint after message {checkpoint.upto_seq}",
        "",
        f"Compaction{model} at {checkpoint.created_at.isoformat()}: from here on the model "
        f"received this summary instead of messages 1 to {checkpoint.upto_seq}.",
        "",
        *_fenced(_pretty(list(checkpoint.items)), "json"),
    ]


def _render_message(message: TranscriptMessage) -> list[str]:
    item = message.item
    try:
        view = chat_view(item)
    except InvalidInputError:
        return [f"## {message.seq} · item", "", *_fenced(_pretty(item), "json")]
    # A LangChain message renders as the chat message its view shows (role, text, tool calls).
    item_type = "message" if view.item_type == LANGCHAIN_ITEM_TYPE else view.item_type
    if item_type == "function_call" and isinstance(item, dict):
        heading = f"## {message.seq} · Tool call {_code(str(item.get('name')))}"
        body = [f"call id: {_code(str(item.get('call_id')))}", ""]
        return [heading, "", *body, *_fenced(_arguments(item.get("arguments")), "json")]
    if item_type.endswith("_output") or view.role == "tool":
        call = f" for {_code(view.tool_call_id)}" if view.tool_call_id else ""
        return [f"## {message.seq} · Tool result{call}", "", *_fenced(view.content)]
    if item_type == "reasoning":
        return [f"## {message.seq} · Reasoning", "", *_fenced(view.content)]
    if item_type not in ("message", ADK_EVENT_TYPE):
        return [f"## {message.seq} · {_code(item_type)}", "", *_fenced(_pretty(item), "json")]
    label = _ROLE_LABELS.get(view.role) or _code(view.role)
    author = _adk_author(item) if item_type == ADK_EVENT_TYPE else None
    out = [f"## {message.seq} · {label}" + (f" {_code(author)}" if author else "")]
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


def _adk_author(item: Any) -> str | None:
    """Who wrote a Google ADK event (``user`` or an agent's name), shown beside the role."""
    event = item.get("event") if isinstance(item, dict) else None
    author = event.get("author") if isinstance(event, dict) else None
    return author if isinstance(author, str) and author else None


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
