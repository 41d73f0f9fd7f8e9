"""History windows: which suffix of a conversation to send to the model.

A long conversation does not fit a model's context, and resending all of it costs tokens on every
turn. A *window* is the latest part of the history, bounded by a number of user turns and/or an
approximate token budget. Cutting a history anywhere is not safe, though: the Responses API
rejects a ``function_call_output`` whose ``function_call`` is missing, and a reasoning item must
stay in front of the output item of the same response that follows it. So a window always starts
at a *cut point* that separates no such pair.

Everything here is a pure function over a list of items (plain dicts, as stored by
:class:`~agentledger.integrations.openai_agents.LedgerSession`), so it can be tested without a
database and reused on any history. A window is always a suffix of the history: items keep their
order and nothing in the middle is dropped.

Rules, precisely:

* Items that share a ``call_id`` (a call and its outputs: ``function_call`` /
  ``function_call_output``, ``computer_call`` / ``computer_call_output``, ``shell_call`` /
  ``shell_call_output``, ...; a ``local_shell_call_output`` names its call by ``id``) are never
  separated; nor are an ``mcp_approval_request`` and the items naming it in
  ``approval_request_id``. With parallel tool calls every pair that straddles a position
  forbids a cut there.
* A stored LangChain message (:mod:`agentledger.domain.langchain_messages`) is read in its
  chat form: an AI message's tool calls and the tool messages answering them are a pair, and a
  human message starts a user turn.
* A ``reasoning`` item is never separated from the item right after it, unless that item starts
  a new input (a user/system/developer message): the reasoning belongs to the same response.
* ``max_turns=N`` keeps the last N user turns: the window starts at the N-th user message from
  the end (the whole history when there are fewer), moved *earlier* if needed to reach a cut
  point. Keeping a pair intact wins over the turn count.
* ``max_tokens=T`` keeps the longest suffix, starting at a cut point, whose estimated size is at
  most T tokens; it may be empty when even the last indivisible group is larger than T. The
  estimate is :func:`approx_tokens` (about four characters of JSON per token) unless another
  ``count_tokens`` is given.
* With both, the window satisfies both (the later of the two starts).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentledger.domain.langchain_messages import chat_form, is_langchain_item
from agentledger.errors import InvalidInputError

#: Estimates the tokens of one item; see :func:`approx_tokens`.
TokenCounter = Callable[[Any], int]

#: Message roles that start new model input (a reasoning item before them is not needed).
_INPUT_ROLES = frozenset({"user", "system", "developer"})

#: The fields of an item that the rules binding items together read (:func:`cut_points`,
#: :func:`unanchored_end`): an item cut down to these is judged exactly as the whole item is,
#: so a caller that only needs a cut can read these and not the content. A stored LangChain
#: message keeps its role, tool calls and tool call id inside ``message`` (read whole).
LINK_FIELDS = (
    "type",
    "role",
    "call_id",
    "tool_call_id",
    "tool_calls",
    "id",
    "approval_request_id",
    "message",
)


@dataclass(frozen=True, slots=True)
class HistoryWindow:
    """Bounds of a history window: the last ``max_turns`` user turns and/or ``max_tokens``.

    ``None`` means unbounded. ``count_tokens`` replaces the chars/4 estimate (pass a real
    tokenizer when the budget must be tight).
    """

    max_turns: int | None = None
    max_tokens: int | None = None
    count_tokens: TokenCounter | None = None

    def __post_init__(self) -> None:
        _check_bound(self.max_turns, "max_turns")
        _check_bound(self.max_tokens, "max_tokens")
        if self.count_tokens is not None and not callable(self.count_tokens):
            raise TypeError("count_tokens must be a callable taking one item and returning an int")

    @property
    def unbounded(self) -> bool:
        """True when the window keeps the whole history."""
        return self.max_turns is None and self.max_tokens is None

    def start(self, items: Sequence[Any]) -> int:
        """Index in ``items`` where this window starts (see :func:`window_start`)."""
        return window_start(
            items,
            max_turns=self.max_turns,
            max_tokens=self.max_tokens,
            count_tokens=self.count_tokens or approx_tokens,
        )

    def apply(self, items: Sequence[Any]) -> list[Any]:
        """The items of this window, in order."""
        return list(items[self.start(items) :])


def _check_bound(value: object, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int or None, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be zero or positive, got {value}")


def approx_tokens(item: Any) -> int:
    """About one token per four characters of the item's compact JSON, rounded up.

    Deliberately crude and tokenizer-free: it needs no model-specific vocabulary, is stable across
    SDK versions, and overestimates slightly (JSON keys count too), which is the safe side for a
    budget.
    """
    text = json.dumps(item, ensure_ascii=False, separators=(",", ":"), default=str)
    return (len(text) + 3) // 4


def _as_read(item: Any) -> Any:
    """``item`` as these rules read it: a stored LangChain message in its chat form (a human
    message is a user turn, an AI message's tool calls pair with the tool messages answering
    them), anything else as it is."""
    if is_langchain_item(item):
        try:
            return chat_form(item)
        except InvalidInputError:
            return item
    return item


def is_user_message(item: Any) -> bool:
    """True for a user message (an SDK ``message`` item or an easy ``{"role": "user"}`` dict)."""
    item = _as_read(item)
    return (
        isinstance(item, dict)
        and item.get("role") == "user"
        and item.get("type", "message") == "message"
    )


def _starts_input(item: Any) -> bool:
    item = _as_read(item)
    return (
        isinstance(item, dict)
        and item.get("role") in _INPUT_ROLES
        and item.get("type", "message") == "message"
    )


def _is_reasoning(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "reasoning"


def _is_output_side(item: Any) -> bool:
    """True for items that answer an earlier item (tool outputs, approval responses)."""
    item = _as_read(item)
    if not isinstance(item, dict):
        return False
    item_type = item.get("type")
    return (
        (isinstance(item_type, str) and item_type.endswith("_output"))
        or isinstance(item.get("approval_request_id"), str)
        or (item.get("role") == "tool" and isinstance(item.get("tool_call_id"), str))
    )


def _link_keys(item: Any) -> tuple[tuple[str, str], ...]:
    """The keys binding ``item`` to the other items of its calls (empty: bound to nothing).

    Responses items carry one ``call_id`` (or an approval id); a chat-format assistant message
    (``add_message(..., tool_calls=[...])``) carries one per tool call, and a chat-format tool
    message names its call by ``tool_call_id``; so do LangChain messages, through their chat
    form."""
    item = _as_read(item)
    if not isinstance(item, dict):
        return ()
    call_id = item.get("call_id")
    if isinstance(call_id, str) and call_id:
        return (("call", call_id),)
    tool_call_id = item.get("tool_call_id")
    if item.get("role") == "tool" and isinstance(tool_call_id, str) and tool_call_id:
        return (("call", tool_call_id),)
    tool_calls = item.get("tool_calls")
    if isinstance(tool_calls, list) and tool_calls:
        return tuple(
            ("call", call["id"])
            for call in tool_calls
            if isinstance(call, dict) and isinstance(call.get("id"), str) and call["id"]
        )
    item_type = item.get("type")
    item_id = item.get("id")
    if item_type == "local_shell_call_output" and isinstance(item_id, str):
        # The Responses API names the shell call this output answers by its "id".
        return (("call", item_id),)
    if item_type == "mcp_approval_request" and isinstance(item_id, str):
        return (("approval", item_id),)
    approval = item.get("approval_request_id")
    if isinstance(approval, str) and approval:
        return (("approval", approval),)
    return ()


def cut_points(items: Sequence[Any]) -> list[bool]:
    """``result[i]`` is True when a window may start at index ``i`` (0 and ``len`` always may).

    Linear time: each group of linked items forbids the positions after its first member up to
    and including its last member, accumulated with a difference array.
    """
    count = len(items)
    span: dict[tuple[str, str], tuple[int, int]] = {}
    for index, item in enumerate(items):
        for key in _link_keys(item):
            first, _last = span.get(key, (index, index))
            span[key] = (first, index)
    blocked = [0] * (count + 2)
    for first, last in span.values():
        if last > first:
            blocked[first + 1] += 1
            blocked[last + 1] -= 1
    allowed = [True] * (count + 1)
    depth = 0
    for index in range(1, count):
        depth += blocked[index]
        splits_pair = depth > 0
        orphans_reasoning = _is_reasoning(items[index - 1]) and not _starts_input(items[index])
        allowed[index] = not (splits_pair or orphans_reasoning)
    return allowed


def window_start(
    items: Sequence[Any],
    *,
    max_turns: int | None = None,
    max_tokens: int | None = None,
    count_tokens: TokenCounter = approx_tokens,
) -> int:
    """Index where the window over ``items`` starts; ``items[start:]`` is the window."""
    _check_bound(max_turns, "max_turns")
    _check_bound(max_tokens, "max_tokens")
    count = len(items)
    if max_turns is None and max_tokens is None:
        return 0
    allowed = cut_points(items)
    start = 0
    if max_turns is not None:
        turn_start = count
        if max_turns > 0:
            seen = 0
            turn_start = 0
            for index in range(count - 1, -1, -1):
                if is_user_message(items[index]):
                    seen += 1
                    if seen == max_turns:
                        turn_start = index
                        break
        while not allowed[turn_start]:
            turn_start -= 1
        start = turn_start
    if max_tokens is not None:
        token_start = count
        used = 0
        for index in range(count - 1, -1, -1):
            used += count_tokens(items[index])
            if used > max_tokens:
                break
            if allowed[index]:
                token_start = index
        start = max(start, token_start)
    return start


def history_window(
    items: Sequence[Any],
    *,
    max_turns: int | None = None,
    max_tokens: int | None = None,
    count_tokens: TokenCounter = approx_tokens,
) -> list[Any]:
    """The window over ``items`` (a new list, in order); see the module docstring. The
    documented one-call form of ``HistoryWindow(...).apply(items)``, for any list of items."""
    return HistoryWindow(
        max_turns=max_turns, max_tokens=max_tokens, count_tokens=count_tokens
    ).apply(items)


def has_unanchored_outputs(items: Sequence[Any]) -> bool:
    """True when an output item's call is not in ``items`` (it may lie before them).

    A window computed over only the tail of a history is the window of the whole history unless
    the tail cut a call off from its output; callers reading a tail use this to know they must
    read further back.
    """
    return unanchored_end(items) > 0


def unanswered(items: Sequence[Any]) -> set[tuple[str, str]]:
    """The link keys of the calls among ``items`` that no later item of ``items`` answers."""
    waiting: set[tuple[str, str]] = set()
    for item in items:
        keys = _link_keys(item)
        if not keys:
            continue
        if _is_output_side(item):
            waiting.difference_update(keys)
        else:
            waiting.update(keys)
    return waiting


def answered(items: Sequence[Any]) -> set[tuple[str, str]]:
    """The link keys that output items among ``items`` answer."""
    return {key for item in items if _is_output_side(item) for key in _link_keys(item)}


def unlinked(item: Any) -> Any:
    """A stand-in for ``item`` that binds to no other item but is judged as ``item`` is by the
    rule that keeps a reasoning item with what follows it: for an item that has gone already,
    whose links to what stays :func:`unanchored_end` judges (a call id it shares with a later,
    complete pair must not tie that pair to it)."""
    return {"type": "reasoning"} if _is_reasoning(item) else {}


def unanchored_end(items: Sequence[Any]) -> int:
    """The index just after the last output item of ``items`` whose call is not among the
    items before it (0 when every output has its call): a history that loses everything before
    ``items`` must lose ``items[:unanchored_end(items)]`` too, or it starts with an answer to
    a call it no longer has."""
    seen: set[tuple[str, str]] = set()
    end = 0
    for index, item in enumerate(items):
        keys = _link_keys(item)
        if _is_output_side(item) and any(key not in seen for key in keys):
            end = index + 1
        seen.update(keys)
    return end


#: Items read by the first tail read of :func:`read_window`; later reads double it.
FIRST_TAIL_READ = 64


async def read_window(
    read_latest: Callable[[int | None], Awaitable[Sequence[Any]]],
    window: HistoryWindow,
    *,
    first_read: int = FIRST_TAIL_READ,
) -> list[Any]:
    """The window of a stored history, reading only as much of its tail as the window needs.

    ``read_latest(n)`` returns the latest ``n`` items in order (all of them for ``None``), e.g.
    ``SessionService.get_items``. The tail is read with doubling sizes until the window computed
    on it provably equals the window of the whole history: the tail was the whole history, or
    the window starts inside the tail and none of its outputs lost its call to the cut. Each
    window comes from a single read, so it is a consistent snapshot even while others append.
    """
    if window.unbounded:
        return list(await read_latest(None))
    if first_read < 1:
        raise ValueError(f"first_read must be at least 1, got {first_read}")
    size = first_read
    while True:
        tail = list(await read_latest(size))
        if len(tail) < size:
            return window.apply(tail)
        start = window.start(tail)
        if start > 0 and not has_unanchored_outputs(tail[start:]):
            return tail[start:]
        size *= 2
