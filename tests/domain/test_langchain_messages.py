"""The chat view and pairing of stored LangChain messages, without a database (and without
LangChain: the items are written out as ``message_to_dict`` makes them)."""

from __future__ import annotations

from typing import Any

import pytest

from agentledger.domain.langchain_messages import chat_form, langchain_item
from agentledger.domain.projection import ChatView, chat_view
from agentledger.domain.validation import prepare_item
from agentledger.domain.windows import LINK_FIELDS, cut_points, history_window, unanchored_end
from agentledger.errors import InvalidInputError


def lc(kind: str, **data: Any) -> dict[str, Any]:
    return langchain_item({"type": kind, "data": {"type": kind, **data}})


def call(call_id: str, name: str = "f", args: Any = None) -> dict[str, Any]:
    return {"name": name, "args": {} if args is None else args, "id": call_id, "type": "tool_call"}


@pytest.mark.parametrize(
    ("item", "role", "tool_call_id"),
    [
        (lc("human", content="hi"), "user", None),
        (lc("HumanMessageChunk", content="hi"), "user", None),
        (lc("ai", content="hi"), "assistant", None),
        (lc("AIMessageChunk", content="hi"), "assistant", None),
        (lc("system", content="hi"), "system", None),
        (lc("SystemMessageChunk", content="hi"), "system", None),
        (lc("tool", content="hi", tool_call_id="c1"), "tool", "c1"),
        (lc("ToolMessageChunk", content="hi", tool_call_id="c1"), "tool", "c1"),
        (lc("function", content="hi", name="fn"), "tool", None),
        (lc("chat", content="hi", role="human"), "user", None),
        (lc("chat", content="hi", role="developer"), "developer", None),
        (lc("ChatMessageChunk", content="hi", role="critic"), "assistant", None),
        (lc("remove", content="", id="m1"), "assistant", None),
    ],
)
def test_every_message_type_has_a_chat_view(
    item: dict[str, Any], role: str, tool_call_id: str | None
) -> None:
    view = chat_view(item)
    assert (view.role, view.tool_call_id, view.item_type) == (role, tool_call_id, "langchain")
    assert view.content == ("" if item["message"]["type"] == "remove" else "hi")


def test_content_blocks_show_their_text_and_tool_calls_their_arguments() -> None:
    item = lc(
        "ai",
        content=[
            {"type": "reasoning", "reasoning": "hidden"},
            {"type": "text", "text": "one"},
            {"type": "image_url", "image_url": {"url": "data:,"}},
            {"type": "text", "text": "two"},
        ],
        tool_calls=[call("c1", "search", {"q": "x"})],
        invalid_tool_calls=[{"name": "g", "args": "{oops", "id": "c2", "error": "bad"}],
    )
    assert chat_view(item) == ChatView(
        "assistant",
        "one\ntwo",
        [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "search", "arguments": '{"q":"x"}'},
            },
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{oops"}},
        ],
        None,
        "langchain",
    )


@pytest.mark.parametrize(
    "item",
    [
        {"type": "langchain"},
        {"type": "langchain", "message": "human: hi"},
        {"type": "langchain", "message": {"type": "human"}},
        {"type": "langchain", "message": {"data": {"content": "hi"}}},
    ],
)
def test_a_malformed_langchain_item_is_refused(item: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError, match="message_to_dict"):
        prepare_item(item)


def test_agents_sdk_items_keep_their_views() -> None:
    """Unchanged by the LangChain branch: a few SDK items and a chat dict."""
    assert chat_view({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}) == (
        ChatView(
            "assistant",
            "",
            [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            None,
            "function_call",
        )
    )
    output = {"type": "function_call_output", "call_id": "c", "output": "ok"}
    assert chat_view(output) == ChatView("tool", "ok", None, "c", "function_call_output")
    assert chat_view({"role": "user", "content": "hi"}) == ChatView(
        "user", "hi", None, None, "message"
    )


def test_windows_and_cuts_keep_tool_calls_with_their_tool_messages() -> None:
    items = [
        lc("human", content="q1"),
        lc("ai", content="", tool_calls=[call("a"), call("b")]),
        lc("tool", content="ra", tool_call_id="a"),
        lc("tool", content="rb", tool_call_id="b"),
        lc("ai", content="answer"),
        lc("human", content="q2"),
    ]
    assert cut_points(items) == [True, True, False, False, True, True, True]
    assert history_window(items, max_turns=1) == items[5:]
    assert history_window(items, max_turns=2) == items
    assert chat_form(items[1])["tool_calls"][1]["id"] == "b"


def test_langchain_items_cut_down_to_the_link_fields_are_judged_as_whole_ones() -> None:
    """What a partition retirement reads of a window (only :data:`LINK_FIELDS`) pairs a
    LangChain AI message's tool calls with its tool messages as the whole items do."""
    items = [
        lc("human", content="q1 " * 50),
        lc("ai", content="", tool_calls=[call("a"), call("b")]),
        lc("tool", content="ra", tool_call_id="a"),
        lc("tool", content="rb", tool_call_id="b"),
        lc("ai", content="answer"),
    ]
    cut_down = [{key: item[key] for key in LINK_FIELDS if key in item} for item in items]
    assert cut_points(cut_down) == cut_points(items) == [True, True, False, False, True, True]
    assert unanchored_end(cut_down[3:]) == unanchored_end(items[3:]) == 1
