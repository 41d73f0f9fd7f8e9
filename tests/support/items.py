"""Typed access to Agents SDK items in tests.

``agents.items.TResponseInputItem`` is a union of some thirty TypedDicts, most of which have no
``content``, ``output`` or ``call_id``: mypy refuses ``item["content"]`` on the union, although a
test knows which kind of item it reads. Every one of them is a ``Mapping[str, Any]``, though, so
these helpers read an item through that type (no cast needed), and :func:`as_items` says once
where a test hands the SDK dicts its types do not describe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from agents.items import TResponseInputItem


def fields(item: Mapping[str, Any]) -> Mapping[str, Any]:
    """The item as a plain mapping, to read keys its kind is known to have."""
    return item


def content(item: Mapping[str, Any]) -> Any:
    """``item["content"]`` of a message item."""
    return item["content"]


def contents(items: Iterable[Mapping[str, Any]]) -> list[Any]:
    """``content`` of each of ``items`` (all messages), in order."""
    return [item["content"] for item in items]


def as_items(values: Iterable[Mapping[str, Any]]) -> list[TResponseInputItem]:
    """Dicts the SDK's item types do not describe (item kinds of a future SDK, deliberately bad
    input, rows built as ``dict[str, Any]``), passed where the SDK expects its input items. A
    session stores any JSON object; that is what such tests check."""
    return cast("list[TResponseInputItem]", list(values))


def texts(items: Iterable[Mapping[str, Any]]) -> list[str]:
    """The text of each message item, in order: a string ``content`` as it is, a list of
    content parts (what the model's replies hold) as their ``text`` joined."""
    found = []
    for item in items:
        value = item["content"]
        if isinstance(value, list):
            value = "".join(part.get("text", "") for part in value if isinstance(part, dict))
        found.append(value)
    return found
