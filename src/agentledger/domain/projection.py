"""The chat view of a stored item, and the item stored for a chat message.

Every row keeps two faces of the same message:

* ``item`` — what the caller stored, exactly (an OpenAI Agents SDK input item, the chat
  message dict built by :func:`item_from_chat`, or a LangChain message in its envelope, see
  :mod:`agentledger.domain.langchain_messages`);
* the seed's chat columns ``role``/``content``/``tool_calls``/``tool_call_id``, derived here so
  that ``service.get_session`` shows an SDK conversation as user / assistant-with-tool_calls /
  tool / assistant messages, and SQL users can query it.

The mapping is deliberately total: an item type this module has never heard of still gets a
chat view (an assistant row), so future SDK item types are stored without a code change, and an
item with neither ``type`` nor ``role`` (a wrapper's envelope, such as the SDK's
``EncryptedSession`` writes) is stored exactly with an empty ``opaque`` view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentledger.domain.encoding import check_text, dump_json
from agentledger.domain.langchain_messages import LANGCHAIN_ITEM_TYPE, chat_form
from agentledger.errors import InvalidInputError, InvalidItemTypeError

#: Roles of the chat view. ``developer`` and ``system`` are instructions; ``tool`` is a result.
ROLES: tuple[str, ...] = ("user", "assistant", "tool", "system", "developer")

_TEXT_PART_KEYS = ("text", "refusal")
#: Longest item ``type`` (the chat view's ``item_type`` column is varchar(64)); SDK types are
#: short identifiers such as ``function_call_output``.
MAX_ITEM_TYPE_LENGTH = 64
#: The chat view's ``item_type`` of an item with neither ``type`` nor ``role`` (for example an
#: ``EncryptedSession`` envelope): stored and returned exactly, with an empty assistant view.
OPAQUE_ITEM_TYPE = "opaque"
#: The ``type`` of a Google ADK event as the ADK adapter stores it:
#: ``{"type": "adk_event", "event": Event.model_dump(mode="json")}``.
ADK_EVENT_TYPE = "adk_event"


@dataclass(frozen=True, slots=True)
class ChatView:
    """The chat columns of one row, plus the item's type."""

    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    item_type: str


def check_role(role: object) -> str:
    """Return ``role`` if the chat view knows it; otherwise say which roles exist."""
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidInputError(f"unknown role {role!r}; use one of: {', '.join(ROLES)}")
    return role


def item_from_chat(
    role: str,
    content: str,
    tool_calls: list[dict[str, Any]] | None,
    tool_call_id: str | None,
) -> dict[str, Any]:
    """The item stored for a message added through the chat API (``add_message``).

    A ``tool`` message becomes an SDK ``function_call_output`` so an Agents SDK session over the
    same history sees a proper tool result; other messages keep the chat shape, which the SDK
    accepts as an easy input message.
    """
    if role == "tool" and tool_call_id is not None and not tool_calls:
        return {"type": "function_call_output", "call_id": tool_call_id, "output": content}
    item: dict[str, Any] = {"role": role, "content": content}
    if tool_calls is not None:
        item["tool_calls"] = tool_calls
    if tool_call_id is not None:
        item["tool_call_id"] = tool_call_id
    return item


def chat_view(item: Any) -> ChatView:
    """Derive the chat columns of ``item`` (an SDK item or a chat message dict)."""
    if not isinstance(item, dict):
        raise InvalidItemTypeError(
            f"a history item must be a dict (an Agents SDK input item), got {type(item).__name__}"
        )
    item_type = item.get("type")
    if item_type is None:
        if "role" not in item:
            # Not an item this module can read (an EncryptedSession envelope, a wrapper's own
            # record): stored exactly, shown as what it is.
            return ChatView("assistant", "", None, None, OPAQUE_ITEM_TYPE)
        item_type = "message"
    if not isinstance(item_type, str) or not item_type:
        raise InvalidInputError(
            f"a history item's 'type' must be a non-empty string (e.g. 'function_call'), got "
            f"{item_type!r}"
        )
    if len(item_type) > MAX_ITEM_TYPE_LENGTH or "\x00" in item_type:
        raise InvalidInputError(
            f"a history item's 'type' must be 1 to {MAX_ITEM_TYPE_LENGTH} characters without "
            f"U+0000 (the chat view indexes it), got {item_type[:80]!r}"
        )
    if item_type == LANGCHAIN_ITEM_TYPE:
        return _langchain_view(item)
    if item_type == "message":
        return _message_view(item)
    if item_type == ADK_EVENT_TYPE:
        return _adk_event_view(item.get("event"))
    call_id = _optional_str(item.get("call_id"))
    if item_type.endswith("_output"):
        return ChatView("tool", _text_of(item.get("output")), None, call_id, item_type)
    if item_type == "reasoning":
        return ChatView("assistant", _text_of(item.get("summary")), None, None, item_type)
    call: dict[str, Any] = {"id": call_id or _optional_str(item.get("id")), "type": item_type}
    if item_type == "function_call":
        call["type"] = "function"
        call["function"] = {"name": item.get("name"), "arguments": item.get("arguments")}
    return ChatView("assistant", "", [call], None, item_type)


def _message_view(item: dict[str, Any]) -> ChatView:
    role = check_role(item.get("role"))
    content = _text_of(item.get("content"))
    tool_calls = item.get("tool_calls")
    if tool_calls is not None and not isinstance(tool_calls, list):
        raise InvalidInputError("tool_calls must be a list of dicts or None")
    return ChatView(role, content, tool_calls, _optional_str(item.get("tool_call_id")), "message")


def _adk_event_view(event: Any) -> ChatView:
    """The chat view of a Google ADK event (plain dicts: no ADK import). Its content's parts
    say what it is: function responses make a tool row, function calls an assistant row with
    ``tool_calls``, text parts a user row (content role ``user``) or an assistant row."""
    content = event.get("content") if isinstance(event, dict) else None
    parts = content.get("parts") if isinstance(content, dict) else None
    parts = [part for part in parts if isinstance(part, dict)] if isinstance(parts, list) else []
    text = _text_of([part["text"] for part in parts if isinstance(part.get("text"), str)])
    responses = [
        p["function_response"] for p in parts if isinstance(p.get("function_response"), dict)
    ]
    if responses:
        first = responses[0]
        shown = [{"name": r.get("name"), "response": r.get("response")} for r in responses]
        return ChatView(
            "tool",
            dump_json(shown[0] if len(shown) == 1 else shown, "function response"),
            None,
            _optional_str(first.get("id")),
            ADK_EVENT_TYPE,
        )
    calls = [
        {
            "id": _optional_str(call.get("id")),
            "type": "function",
            "function": {
                "name": call.get("name"),
                "arguments": dump_json(call.get("args") or {}, "function call arguments"),
            },
        }
        for call in (p["function_call"] for p in parts if isinstance(p.get("function_call"), dict))
    ]
    role = "user" if isinstance(content, dict) and content.get("role") == "user" else "assistant"
    return ChatView(role, text, calls or None, None, ADK_EVENT_TYPE)


def _text_of(value: Any) -> str:
    """The readable text of a content value: a string, or the text parts of a part list."""
    if value is None:
        return ""
    if isinstance(value, str):
        return check_text(value, "content")
    if isinstance(value, list):
        texts: list[str] = []
        for part in value:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                texts.extend(part[key] for key in _TEXT_PART_KEYS if isinstance(part.get(key), str))
        return check_text("".join(texts) if len(texts) <= 1 else "\n".join(texts), "content")
    return dump_json(value, "content")


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _langchain_view(item: dict[str, Any]) -> ChatView:
    """A stored LangChain message shows as the chat message it is (a human message as a user
    message, an AI message with its tool calls, a tool message answering its call); a
    ``ChatMessage`` with a role of its own shows as an assistant message."""
    form = chat_form(item)
    role = form["role"] if form["role"] in ROLES else "assistant"
    content = _text_of(form["content"])
    return ChatView(
        role, content, form.get("tool_calls"), form.get("tool_call_id"), LANGCHAIN_ITEM_TYPE
    )
