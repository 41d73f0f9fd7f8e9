"""Turn leases: their defaults and the checks of their arguments (see services/turns.py)."""

from __future__ import annotations

from datetime import timedelta

from agentledger.errors import InvalidInputError

#: How long a turn lease lasts unless renewed (a turn renews it every third of that).
DEFAULT_TURN_LEASE = timedelta(seconds=30)
#: The shortest lease: renewing every third of it must stay well above a statement's time.
MIN_TURN_LEASE = timedelta(milliseconds=500)
#: How long a turn waits for the one before it by default.
DEFAULT_TURN_WAIT = timedelta(minutes=5)


def check_turn_holder(holder: object) -> str:
    """A turn holder token: 1 to 64 characters (the column's width), no NUL."""
    if not isinstance(holder, str) or not 1 <= len(holder) <= 64 or "\x00" in holder:
        raise InvalidInputError("a turn holder is a string of 1 to 64 characters without NUL")
    return holder


def check_duration(
    value: object, what: str, *, zero_ok: bool = False, minimum: timedelta | None = None
) -> timedelta:
    """A lease or a wait: a ``timedelta`` above zero (or zero, ``zero_ok``; at least
    ``minimum`` when given), at most a day."""
    if not isinstance(value, timedelta):
        raise TypeError(f"{what} must be a datetime.timedelta, not {type(value).__name__}")
    if value < timedelta(0) or (value == timedelta(0) and not zero_ok):
        raise InvalidInputError(f"{what} must be {'zero or ' if zero_ok else ''}positive")
    if minimum is not None and value < minimum:
        raise InvalidInputError(
            f"{what} must be at least {minimum.total_seconds()} s (renewed every third of "
            f"it, a shorter one lapses between renewals), got {value}"
        )
    if value > timedelta(days=1):
        raise InvalidInputError(f"{what} must be at most one day, got {value}")
    return value
