"""Time as agentledger keeps it: aware UTC, on every backend."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (never ``datetime.utcnow()``)."""
    return datetime.now(UTC)


#: The earliest aware UTC time: a cutoff further back than this keeps everything.
EARLIEST = datetime.min.replace(tzinfo=UTC)


def cutoff_before(now: datetime, age: timedelta | float) -> datetime:
    """``now`` minus ``age`` (a timedelta, or days), or :data:`EARLIEST` when that lies before
    the first representable time: an age of a million days means "nothing is that old"."""
    try:
        return now - (age if isinstance(age, timedelta) else timedelta(days=age))
    except OverflowError:
        return EARLIEST


def as_utc(value: datetime) -> datetime:
    """Return ``value`` as aware UTC; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def as_day(value: date | str) -> date:
    """A calendar day as a database returns it when grouping by day: a ``date``, or ISO
    ``'YYYY-MM-DD'`` text (SQLite)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(value[:10])
