"""LangChain messages of every type, with every field a message can carry, and the oracle.

The corpus is what the round-trip and oracle tests store: each message type of
``langchain_core.messages`` (chunks included) with ids, names, ``additional_kwargs``,
``response_metadata``, content blocks, tool calls valid and invalid, usage metadata, tool
artifacts and U+0000 in text. The oracle is langchain-core's own ``InMemoryChatMessageHistory``
(deprecated upstream, still the reference behaviour of ``BaseChatMessageHistory``).
"""

from __future__ import annotations

import warnings

from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
)


def every_message() -> list[BaseMessage]:
    """One message of each type, each with the fields that type can carry."""
    return [
        SystemMessage(
            "You are terse.", id="sys-1", additional_kwargs={"cache": {"ttl": 60}}, name="policy"
        ),
        HumanMessage(
            [
                {"type": "text", "text": "What is on this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
            id="human-1",
            name="alice",
            additional_kwargs={"client": "web"},
        ),
        AIMessage(
            "Let me look that up.",
            id="ai-1",
            tool_calls=[
                {"name": "search", "args": {"q": "cats", "top": 3}, "id": "call-1"},
                {"name": "weather", "args": {"city": "Oslo"}, "id": "call-2"},
            ],
            invalid_tool_calls=[
                {"name": "broken", "args": '{"q": ', "id": "call-3", "error": "bad JSON"}
            ],
            usage_metadata={"input_tokens": 12, "output_tokens": 7, "total_tokens": 19},
            response_metadata={"model_name": "fake-1", "finish_reason": "tool_calls"},
            additional_kwargs={"refusal": None},
        ),
        ToolMessage(
            "3 cats found\x00",
            tool_call_id="call-1",
            id="tool-1",
            name="search",
            artifact={"hits": [1, 2, 3]},
            status="success",
        ),
        ToolMessage([{"type": "text", "text": "-3 °C"}], tool_call_id="call-2", status="error"),
        AIMessage(
            [
                {"type": "reasoning", "reasoning": "It is cold."},
                {"type": "text", "text": "Cats, and it is cold in Oslo."},
            ],
            id="ai-2",
            response_metadata={"model_provider": "fake", "output_version": "v1"},
        ),
        ChatMessage(content="Looks fine to me.", role="critic", id="chat-1"),
        ChatMessage(content="I am the user too.", role="user"),
        FunctionMessage(content='{"ok": true}', name="legacy_fn", id="fn-1"),
        AIMessageChunk(
            content="partial",
            id="chunk-1",
            tool_call_chunks=[{"name": "search", "args": '{"q": "do', "id": "call-4", "index": 0}],
        ),
        HumanMessageChunk(content="human chunk"),
        SystemMessageChunk(content="system chunk"),
        ToolMessageChunk(content="tool chunk", tool_call_id="call-4"),
        ChatMessageChunk(content="chat chunk", role="moderator"),
        FunctionMessageChunk(content="function chunk", name="legacy_fn"),
        HumanMessage("Thanks! «ünïcödé» 🐈"),
    ]


def oracle() -> InMemoryChatMessageHistory:
    """A fresh ``InMemoryChatMessageHistory`` (its deprecation warning silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return InMemoryChatMessageHistory()
