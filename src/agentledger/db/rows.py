"""Rows as read back: the one filter for messages whose stored JSON was damaged.

A row changed outside agentledger (invalid JSON text, or nesting too deep for Python) decodes to
a :class:`~agentledger.domain.encoding.DamagedJSON` marker (see ``load_stored_json``); an item
that decodes to something other than an object counts as damaged too. Every read
leaves such a message out through :func:`intact` and logs it by session and seq, never by
content, so one bad row never makes a session unreadable.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any, TypeVar

from agentledger.domain.encoding import DamagedJSON

logger = logging.getLogger("agentledger")

RowT = TypeVar("RowT")


def intact(
    session_id: uuid.UUID,
    rows: Iterable[RowT],
    *,
    damaged: list[int] | None = None,
) -> list[RowT]:
    """The rows whose JSON columns (``item``, ``tool_calls``) decoded; the others are logged and
    their seqs appended to ``damaged`` when given. Rows need a ``seq`` and may have ``item`` and
    ``tool_calls``."""
    kept = []
    for row in rows:
        damage = _damage_of(row)
        if damage is None:
            kept.append(row)
            continue
        seq = int(getattr(row, "seq"))  # noqa: B009 - rows of several shapes
        logger.warning(
            "agentledger: message seq %s of session %s was left out: its stored JSON is %s; "
            "repair or delete that row",
            seq,
            session_id,
            damage.reason,
        )
        if damaged is not None:
            damaged.append(seq)
    return kept


#: A stored item that decodes to something other than an object (agentledger stores only
#: objects, so an UPDATE outside it wrote this): left out like undecodable JSON.
_NOT_AN_OBJECT = DamagedJSON("valid JSON but not an object, which agentledger never stores")
#: A row shape without an ``item`` column.
_NO_ITEM = object()


def _damage_of(row: Any) -> DamagedJSON | None:
    if type(getattr(row, "item", None)) is dict and type(getattr(row, "tool_calls", None)) in (
        list,
        type(None),
    ):
        return None  # intact, as nearly every row is: decided without the general walk below
    for field in ("item", "tool_calls"):
        value = getattr(row, field, None)
        if isinstance(value, DamagedJSON):
            return value
    item = getattr(row, "item", _NO_ITEM)
    if item is not _NO_ITEM and not isinstance(item, dict):
        return _NOT_AN_OBJECT  # JSON null included: the column is NOT NULL, so null is JSON's
    return None


def intact_metadata(session_id: uuid.UUID, value: Any) -> dict[str, Any]:
    """A session's metadata as read back; damaged JSON (changed outside agentledger) reads as
    ``{}``, logged by session id, so the session stays usable and ``update_metadata`` can
    repair it."""
    if isinstance(value, DamagedJSON):
        logger.warning(
            "agentledger: the metadata of session %s reads as {}: its stored JSON is %s; "
            "repair it with update_metadata (or set_title) or delete the session",
            session_id,
            value.reason,
        )
        return {}
    return value if isinstance(value, dict) else {}
