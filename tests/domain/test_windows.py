"""The pure history-window functions: turn and token bounds that never split a call from its
output nor a reasoning item from what it precedes.

Besides hand-made histories, randomized histories are checked against a brute-force oracle that
restates the rules directly (O(n²)), so the linear-time implementation cannot drift from them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

import pytest

from agentledger.domain.windows import (
    HistoryWindow,
    approx_tokens,
    cut_points,
    has_unanchored_outputs,
    history_window,
    read_window,
    window_start,
)

# -- item builders ----------------------------------------------------------------------------


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {
        "id": f"msg_{text}",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def call(call_id: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": "lookup",
        "arguments": "{}",
    }


def output(call_id: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": f"result {call_id}"}


def reasoning(name: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": f"rs_{name}", "summary": []}


def one_token(_item: Any) -> int:
    return 1


# -- hand-made histories ----------------------------------------------------------------------

THREE_TURNS = [
    user("u1"),
    assistant("a1"),
    user("u2"),
    reasoning("r2"),
    call("c2"),
    output("c2"),
    assistant("a2"),
    user("u3"),
    assistant("a3"),
]


def test_unbounded_window_is_the_whole_history() -> None:
    assert history_window(THREE_TURNS) == THREE_TURNS
    assert HistoryWindow().apply(THREE_TURNS) == THREE_TURNS
    assert HistoryWindow().unbounded


@pytest.mark.parametrize(
    ("max_turns", "first_user"),
    [(1, "u3"), (2, "u2"), (3, "u1"), (10, "u1")],
)
def test_max_turns_starts_at_the_nth_last_user_message(max_turns: int, first_user: str) -> None:
    window = history_window(THREE_TURNS, max_turns=max_turns)
    assert window[0] == user(first_user)
    assert window == THREE_TURNS[THREE_TURNS.index(user(first_user)) :]


def test_zero_turns_or_tokens_is_an_empty_window() -> None:
    assert history_window(THREE_TURNS, max_turns=0) == []
    assert history_window(THREE_TURNS, max_tokens=0) == []
    assert history_window([], max_turns=3, max_tokens=10) == []


def test_turn_window_moves_back_to_keep_a_call_with_its_output() -> None:
    # The call was made before the user interjected; its output arrived after.
    items = [user("u1"), call("c1"), user("u2"), output("c1"), assistant("a")]
    assert window_start(items, max_turns=1) == 1
    assert history_window(items, max_turns=1)[0] == call("c1")


def test_token_window_never_starts_between_a_call_and_its_output() -> None:
    items = [user("u"), call("c"), output("c"), assistant("a")]
    # Two tokens would fit [output, assistant], but that orphans the output: only [a] is safe.
    assert history_window(items, max_tokens=2, count_tokens=one_token) == [assistant("a")]
    assert history_window(items, max_tokens=3, count_tokens=one_token) == items[1:]


def test_parallel_calls_forbid_every_cut_inside_them() -> None:
    items = [user("u"), call("a"), call("b"), output("a"), output("b"), assistant("done")]
    allowed = cut_points(items)
    assert allowed == [True, True, False, False, False, True, True]
    assert history_window(items, max_tokens=4, count_tokens=one_token) == [assistant("done")]


def test_reasoning_stays_with_the_item_it_precedes() -> None:
    items = [user("u"), reasoning("r"), call("c"), output("c"), assistant("a")]
    allowed = cut_points(items)
    assert allowed[2] is False  # between reasoning and its call
    window = history_window(items, max_tokens=4, count_tokens=one_token)
    assert window == items[1:]
    assert history_window(items, max_tokens=3, count_tokens=one_token) == [assistant("a")]


def test_reasoning_before_a_new_user_message_may_be_dropped() -> None:
    items = [user("u1"), reasoning("dangling"), user("u2"), assistant("a2")]
    assert cut_points(items)[2] is True
    assert history_window(items, max_turns=1) == items[2:]


def test_mcp_approval_request_and_response_stay_together() -> None:
    request = {"type": "mcp_approval_request", "id": "apr_1", "name": "t", "arguments": "{}"}
    response = {"type": "mcp_approval_response", "approval_request_id": "apr_1", "approve": True}
    items = [user("u"), request, response, assistant("a")]
    assert cut_points(items)[2] is False
    assert history_window(items, max_tokens=2, count_tokens=one_token) == [assistant("a")]


def test_hosted_tool_calls_stay_with_their_outputs() -> None:
    computer = {"type": "computer_call", "id": "cu_1", "call_id": "cc1", "action": {}}
    computer_out = {"type": "computer_call_output", "call_id": "cc1", "output": {}}
    # The Responses API's local_shell_call_output names its call by "id", not "call_id".
    shell = {"type": "local_shell_call", "id": "ls_1", "call_id": "sh1", "action": {}}
    shell_out = {"type": "local_shell_call_output", "id": "sh1", "output": "ok"}
    web = {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {}}
    items = [user("u"), computer, computer_out, shell, shell_out, web, assistant("a")]
    assert cut_points(items) == [True, True, False, True, False, True, True, True]
    assert has_unanchored_outputs([shell_out])


def test_combined_bounds_take_the_smaller_window() -> None:
    by_turns = window_start(THREE_TURNS, max_turns=2)
    by_tokens = window_start(THREE_TURNS, max_tokens=2, count_tokens=one_token)
    both = window_start(THREE_TURNS, max_turns=2, max_tokens=2, count_tokens=one_token)
    assert both == max(by_turns, by_tokens)
    assert both == len(THREE_TURNS) - 2


def test_approx_tokens_is_a_quarter_of_the_json_length_rounded_up() -> None:
    item = user("x" * 401)
    text = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
    assert approx_tokens(item) == -(-len(text) // 4)
    assert approx_tokens(user("日本語")) < approx_tokens(user("日本語" * 10))


def test_window_bounds_are_validated() -> None:
    with pytest.raises(ValueError, match="max_turns"):
        HistoryWindow(max_turns=-1)
    with pytest.raises(TypeError, match="max_tokens"):
        HistoryWindow(max_tokens=True)
    with pytest.raises(TypeError, match="count_tokens"):
        HistoryWindow(count_tokens=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_tokens"):
        window_start(THREE_TURNS, max_tokens=-5)


def test_unanchored_outputs_are_detected() -> None:
    assert has_unanchored_outputs([output("c"), assistant("a")])
    assert not has_unanchored_outputs([call("c"), output("c")])
    assert not has_unanchored_outputs([user("u"), assistant("a")])
    assert not has_unanchored_outputs([call("c")])


# -- randomized histories against a brute-force oracle ----------------------------------------


def random_history(rng: random.Random, turns: int) -> list[dict[str, Any]]:
    """Turns of user text, optional reasoning, tool calls (some parallel, some answered only
    after a later user message) and assistant text."""
    items: list[dict[str, Any]] = []
    pending: list[str] = []
    counter = 0
    for turn in range(turns):
        items.append(user(f"u{turn}" + "x" * rng.randint(0, 40)))
        for call_id in pending:
            items.append(output(call_id))
        pending = []
        for _step in range(rng.randint(0, 3)):
            if rng.random() < 0.5:
                items.append(reasoning(f"{turn}-{counter}"))
            ids = [f"c{counter + i}" for i in range(rng.randint(1, 3))]
            counter += len(ids)
            items.extend(call(call_id) for call_id in ids)
            if rng.random() < 0.15:
                pending = ids  # answered after the next user message
                break
            items.extend(output(call_id) for call_id in ids)
        if rng.random() < 0.3:
            items.append(reasoning(f"{turn}-final"))
        if not pending:
            items.append(assistant(f"a{turn}" + "y" * rng.randint(0, 60)))
    return items


def oracle_allowed(items: Sequence[dict[str, Any]], index: int) -> bool:
    """The rules, stated directly: no call/output pair straddles ``index`` and no reasoning item
    is cut off from a following non-input item."""
    if index in (0, len(items)):
        return True
    for before in items[:index]:
        for after in items[index:]:
            if before.get("call_id") is not None and before.get("call_id") == after.get("call_id"):
                return False
    previous, following = items[index - 1], items[index]
    return not (previous.get("type") == "reasoning" and following.get("role") != "user")


def oracle_start(
    items: Sequence[dict[str, Any]], max_turns: int | None, max_tokens: int | None
) -> int:
    allowed = [oracle_allowed(items, index) for index in range(len(items) + 1)]
    start = 0
    if max_turns is not None:
        users = [index for index, item in enumerate(items) if item.get("role") == "user"]
        target = 0 if len(users) < max_turns else (users[-max_turns] if max_turns else len(items))
        start = max(index for index in range(target + 1) if allowed[index])
    if max_tokens is not None:
        fitting = [
            index
            for index in range(len(items) + 1)
            if allowed[index] and sum(approx_tokens(item) for item in items[index:]) <= max_tokens
        ]
        start = max(start, min(fitting))
    return start


@pytest.mark.parametrize("seed", range(40))
def test_random_histories_match_the_oracle(seed: int) -> None:
    rng = random.Random(seed)
    items = random_history(rng, rng.randint(1, 12))
    for _ in range(6):
        max_turns = rng.choice([None, 0, 1, 2, 3, 20])
        max_tokens = rng.choice([None, 0, 15, 60, 200, 100_000])
        start = window_start(items, max_turns=max_turns, max_tokens=max_tokens)
        assert start == oracle_start(items, max_turns, max_tokens)
        window = items[start:]
        kept_calls = {item["call_id"] for item in window if "call_id" in item}
        for item in items[:start]:
            assert item.get("call_id") not in kept_calls
        if max_tokens is not None:
            assert sum(approx_tokens(item) for item in window) <= max_tokens


# -- reading only the tail ----------------------------------------------------------------------


class TailReader:
    """A stand-in for ``SessionService.get_items``: the latest ``n`` items, recording calls."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.requests: list[int | None] = []

    async def __call__(self, limit: int | None) -> list[dict[str, Any]]:
        self.requests.append(limit)
        if limit is None:
            return list(self.items)
        return self.items[-limit:] if limit else []


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("first_read", [1, 3, 64])
async def test_tail_reads_give_the_window_of_the_whole_history(seed: int, first_read: int) -> None:
    rng = random.Random(1000 + seed)
    items = random_history(rng, rng.randint(1, 30))
    window = HistoryWindow(
        max_turns=rng.choice([None, 1, 2, 5]), max_tokens=rng.choice([None, 40, 300])
    )
    reader = TailReader(items)
    assert await read_window(reader, window, first_read=first_read) == window.apply(items)
    # Only an unbounded window reads the whole history; a bounded one reads tails.
    assert (None in reader.requests) == window.unbounded


async def test_tail_reads_stop_early_on_a_long_history() -> None:
    items = [entry for turn in range(500) for entry in (user(f"u{turn}"), assistant(f"a{turn}"))]
    reader = TailReader(items)
    window = await read_window(reader, HistoryWindow(max_turns=2))
    assert window == items[-4:]
    assert reader.requests == [64]


async def test_tail_reads_go_back_for_a_call_far_before_its_output() -> None:
    items = [user("u0"), call("far")]
    items += [entry for turn in range(1, 80) for entry in (user(f"u{turn}"), assistant("a"))]
    items += [output("far"), assistant("done")]
    reader = TailReader(items)
    window = await read_window(reader, HistoryWindow(max_turns=1))
    assert window == items[1:]
    assert reader.requests == [64, 128, 256]


async def test_unbounded_window_reads_everything_once() -> None:
    reader = TailReader(THREE_TURNS)
    assert await read_window(reader, HistoryWindow()) == THREE_TURNS
    assert reader.requests == [None]


# -- chat-format tool calls (add_message with tool_calls / tool_call_id) ----------------------


def chat_call(*call_ids: str) -> dict[str, Any]:
    """How get_items returns an assistant message stored with ``tool_calls``."""
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}
            for call_id in call_ids
        ],
    }


def chat_output(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": f"result {call_id}"}


@pytest.mark.parametrize("answer", [output, chat_output], ids=["as-item", "as-chat"])
def test_a_window_never_separates_a_chat_tool_call_from_its_outputs(answer: Any) -> None:
    items = [
        user("weather?"),
        chat_call("c1", "c2"),
        answer("c1"),
        user("interjection"),
        answer("c2"),
        assistant("done"),
    ]
    for budget in range(len(items) + 1):
        window = history_window(items, max_tokens=budget, count_tokens=one_token)
        assert not has_unanchored_outputs(window), (budget, window)
    for turns in (1, 2):
        window = history_window(items, max_turns=turns)
        assert not has_unanchored_outputs(window), (turns, window)
    assert cut_points(items) == [True, True, False, False, False, True, True]


# -- cutting a history's front where an earlier part is gone (time partitions) -----------------


def test_a_front_cut_after_a_gone_part_drops_outputs_whose_calls_went() -> None:
    from agentledger.domain.retention import front_cut

    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
    out = {"type": "function_call_output", "call_id": "c1", "output": "x"}
    later_call = {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"}
    later_out = {"type": "function_call_output", "call_id": "c2", "output": "y"}
    said = {"role": "assistant", "content": "done"}
    asked = {"role": "user", "content": "next"}
    # items[0] is the newest item that goes; its call's output must go with it ...
    assert front_cut([call, out, said, asked], 1, history_starts=False) == 2
    # ... and so must an output whose call went before the items start, with what precedes it
    # (the call c2 between them would lose its output's partner otherwise: the cut moves on).
    assert front_cut([said, later_call, out, later_out, asked], 1, history_starts=False) == 4
    # A whole history knows every call: the same items keep the pair c2 whole from index 1.
    assert front_cut([said, later_call, later_out, asked], 1) == 1
    # Nothing can stay: everything goes.
    assert front_cut([call, said, out], 1, history_starts=False) == 3


def test_a_call_id_reused_after_the_cut_keeps_the_later_turn() -> None:
    """Providers that number calls per turn (call_0 every time): a complete pair that goes
    must not take a later, complete pair with the same id (regression: whole turns went)."""
    from agentledger.domain.retention import front_cut

    def call(cid: str) -> dict[str, str]:
        return {"type": "function_call", "call_id": cid, "name": "f", "arguments": "{}"}

    def out(cid: str) -> dict[str, str]:
        return {"type": "function_call_output", "call_id": cid, "output": "x"}

    asked = {"role": "user", "content": "x"}
    said = {"role": "assistant", "content": "y"}
    # The newest gone item is the output of a complete pair; the next turn reuses its id.
    assert front_cut([out("c1"), asked, call("c1"), out("c1"), said], 1, history_starts=False) == 1
    # An output whose call went goes (with what precedes it); the later pair with its id stays.
    items = [call("c1"), out("c1"), asked, call("c1"), out("c1"), said]
    assert front_cut(items, 1, history_starts=False) == 2
    # Going past an output can leave another output without its call: that goes as well.
    items = [call("a"), call("b"), out("a"), asked, out("b"), said]
    assert front_cut(items, 1, history_starts=False) == 5
