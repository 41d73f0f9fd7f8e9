"""Keyset page cursors: opaque to callers, validated completely when they come back.

A cursor is the JSON list of the values that order a page's last row, base64url-encoded.
Listings order by ``(updated_at, id)``; search by ``(rank, session_id, seq)`` plus a fingerprint
of the query, so a cursor is only accepted by the search that made it. Anything that is not a
cursor this module made is an :class:`~agentledger.errors.InvalidInputError`, never a database
error.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from datetime import UTC, datetime
from typing import Any

from agentledger.errors import InvalidInputError

#: Cursors this module makes are well under this; a longer one is refused unread.
MAX_CURSOR_LENGTH = 1000
_MAX_SEQ = 2**63 - 1


def encode(values: list[Any]) -> str:
    raw = json.dumps(values, ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: object, size: int) -> list[Any]:
    if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR_LENGTH:
        raise ValueError("not a cursor string")
    values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    if not isinstance(values, list) or len(values) != size:
        raise ValueError("not a cursor of this kind")
    return values


def encode_listing(updated_at: datetime, session_id: uuid.UUID) -> str:
    return encode([updated_at.isoformat(), str(session_id)])


def decode_listing(cursor: object) -> tuple[datetime, uuid.UUID]:
    """The ``(updated_at, id)`` a listing page ended at."""
    try:
        stamp, session_id = _decode(cursor, 2)
        updated_at = datetime.fromisoformat(stamp)
        if updated_at.tzinfo is None:
            raise ValueError("cursor timestamp is not timezone-aware")
        return updated_at.astimezone(UTC), uuid.UUID(session_id)
    except (binascii.Error, ValueError, TypeError, AttributeError, OverflowError) as error:
        raise InvalidInputError(
            "malformed cursor; pass the next_cursor of a previous page unchanged"
        ) from error


def encode_search(rank: float, session_id: uuid.UUID, seq: int, fingerprint: str) -> str:
    return encode([rank, str(session_id), seq, fingerprint])


def decode_search(cursor: object, fingerprint: str) -> tuple[float, uuid.UUID, int]:
    """``(rank, session_id, seq)`` of the last hit of the previous page of this search."""
    try:
        rank, session_id, seq, made_for = _decode(cursor, 4)
        if isinstance(rank, bool) or not isinstance(rank, (int, float)) or not math.isfinite(rank):
            raise ValueError("rank is not a finite number")
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= _MAX_SEQ:
            raise ValueError("seq is not a sequence number")
        parsed = (float(rank), uuid.UUID(session_id), seq)
    except (binascii.Error, ValueError, TypeError, AttributeError, OverflowError) as error:
        raise InvalidInputError(
            "malformed search cursor; pass the next_cursor of a previous page unchanged"
        ) from error
    if made_for != fingerprint:
        raise InvalidInputError(
            "this cursor belongs to a different search; repeat the same user_id, query, "
            "agent_name and include_archived to get the next page, or omit the cursor to start "
            "over"
        )
    return parsed
