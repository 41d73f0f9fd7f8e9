"""Column types that behave the same on PostgreSQL and SQLite.

* :class:`UTCDateTime` — ``timestamptz`` on PostgreSQL, ISO text on SQLite; always binds and
  returns timezone-aware UTC, whatever the connection's ``TimeZone``.
* :class:`NulSafeText` / :class:`NulSafeJSON` — ``text``/``jsonb`` on PostgreSQL that still round
  trip U+0000 (see :mod:`agentledger.encoding`); plain ``TEXT``/``JSON`` on SQLite.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

from .encoding import escape_nul, map_strings, unescape_nul


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (never ``datetime.utcnow()``)."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Return ``value`` as aware UTC; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _is_postgres(dialect: Dialect) -> bool:
    return dialect.name == "postgresql"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware-UTC timestamps on every backend (SQLite stores naive UTC text that sorts)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware (use datetime.now(UTC))")
        utc = value.astimezone(UTC)
        return utc if _is_postgres(dialect) else utc.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class NulSafeText(TypeDecorator[str]):
    """``text`` that stores U+0000 on PostgreSQL through a reversible escape."""

    impl = Text
    cache_ok = True

    def __init__(self, length: int | None = None) -> None:
        super().__init__()
        self.length = length

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        # Not dialect.type_descriptor(Text()): asyncpg adapts Text to its String subclass, whose
        # DDL is VARCHAR, so the column type would depend on the driver. SQLAlchemy adapts the
        # returned type to the dialect for binds and results by itself.
        return String(self.length) if self.length is not None else Text()

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None or not _is_postgres(dialect):
            return value
        return escape_nul(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None or not _is_postgres(dialect):
            return value
        return unescape_nul(value)


class NulSafeJSON(TypeDecorator[Any]):
    """``jsonb`` on PostgreSQL (queryable) that stores U+0000 in strings; JSON on SQLite."""

    impl = JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if _is_postgres(dialect):
            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or not _is_postgres(dialect):
            return value
        return map_strings(value, escape_nul)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None or not _is_postgres(dialect):
            return value
        return map_strings(value, unescape_nul)
