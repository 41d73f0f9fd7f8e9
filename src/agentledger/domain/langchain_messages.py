"""LangChain messages as stored items: their envelope, and their chat form.

The LangChain adapter (:mod:`agentledger.integrations.langchain`) stores each message as one
item, ``{"type": "langchain", "message": <message_to_dict(message)>}``: the exact message as
``langchain_core.messages.message_to_dict`` writes it (``{"type": "ai", "data": {...}}``),
wrapped under an item type of its own so that no Agents SDK rule mistakes it for an SDK item
(an unknown SDK ``type`` would be read as a tool call). The envelope is what comes back, so
every field (content blocks, ids, names, ``additional_kwargs``, ``response_metadata``,
``usage_metadata``, tool calls valid or not, chunks) round-trips exactly.

:func:`chat_form` gives the same message in the chat shape the rest of agentledger reads
(``role``, ``content``, OpenAI-style ``tool_calls``, ``tool_call_id``): the projection derives
the chat view of a row from it (search, listings, exports and transcripts), and the history
windows and retention pair an AI message's tool calls with their tool messages through it.
Pure: it knows the dict layout, never imports LangChain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentledger.domain.encoding import dump_json
from agentledger.errors import InvalidInputError

#: The item ``type`` (and chat-view ``item_type``) of a stored LangChain message.
LANGCHAIN_ITEM_TYPE = "langchain"

#: The chat role of each LangChain message type (``message.type``); a ``chat`` message names
#: its own role, and a type not listed here (``remove``, future ones) reads as ``assistant``.
_ROLE_OF_TYPE = {
    "human": "user",
    "HumanMessageChunk": "user",
    "ai": "assistant",
    "AIMessageChunk": "assistant",
    "system": "system",
    "SystemMessageChunk": "system",
    "tool": "tool",
    "ToolMessageChunk": "tool",
    "function": "tool",
    "FunctionMessageChunk": "tool",
}
_CHAT_TYPES = frozenset({"chat", "ChatMessageChunk"})
#: LangChain's own spellings of chat roles, as a ``ChatMessage(role=...)`` may use them.
_ROLE_ALIASES = {"human": "user", "ai": "assistant"}


def is_langchain_item(item: Any) -> bool:
    """Whether ``item`` is a stored LangChain message (see the module docstring)."""
    return isinstance(item, dict) and item.get("type") == LANGCHAIN_ITEM_TYPE


def langchain_item(message: Mapping[str, Any]) -> dict[str, Any]:
    """The item stored for a LangChain message given as ``message_to_dict`` writes it."""
    return {"type": LANGCHAIN_ITEM_TYPE, "message": dict(message)}


def stored_message(item: Mapping[str, Any]) -> dict[str, Any]:
    """The ``message_to_dict`` form inside a stored LangChain item, checked for its shape."""
    message = item.get("message")
    if (
        not isinstance(message, dict)
        or not isinstance(message.get("type"), str)
        or not isinstance(message.get("data"), dict)
    ):
        raise InvalidInputError(
            "a 'langchain' item must hold the message as "
            "langchain_core.messages.message_to_dict writes it: "
            '{"type": "langchain", "message": {"type": "human", "data": {...}}}'
        )
    return message


def chat_form(item: Mapping[str, Any]) -> dict[str, Any]:
    """The stored LangChain message ``item`` as a chat message: ``role`` (the LangChain name
    for it, for a ``ChatMessage``), ``content`` (as stored: text or content blocks), and, when
    present, ``tool_calls`` (OpenAI chat format, arguments as JSON text; unparsable calls keep
    their raw argument text) and ``tool_call_id``."""
    message = stored_message(item)
    kind: str = message["type"]
    data: dict[str, Any] = message["data"]
    if kind in _CHAT_TYPES:
        role = data.get("role")
        role = _ROLE_ALIASES.get(role, role) if isinstance(role, str) else "assistant"
    else:
        role = _ROLE_OF_TYPE.get(kind, "assistant")
    form: dict[str, Any] = {"role": role, "content": data.get("content")}
    calls = [
        *(_call(call, parsed=True) for call in _dicts(data.get("tool_calls"))),
        *(_call(call, parsed=False) for call in _dicts(data.get("invalid_tool_calls"))),
    ]
    if calls:
        form["tool_calls"] = calls
    tool_call_id = data.get("tool_call_id")
    if isinstance(tool_call_id, str):
        form["tool_call_id"] = tool_call_id
    return form


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def _call(call: dict[str, Any], *, parsed: bool) -> dict[str, Any]:
    """One LangChain tool call (``{"name", "args", "id"}``) in OpenAI chat format."""
    args = call.get("args")
    arguments = dump_json(args, "tool call args") if parsed or not isinstance(args, str) else args
    return {
        "id": call.get("id"),
        "type": "function",
        "function": {"name": call.get("name"), "arguments": arguments},
    }
