"""Column types that behave the same on PostgreSQL and SQLite.

* :class:`UTCDateTime` — ``timestamptz`` on PostgreSQL, ISO text on SQLite; always binds and
  returns timezone-aware UTC, whatever the connection's ``TimeZone``.
* :class:`NulSafeText` / :class:`NulSafeJSON` — ``text``/``jsonb`` on PostgreSQL that still round
  trip U+0000 (see :mod:`agentledger.domain.encoding`); plain ``TEXT``/``JSON`` on SQLite.
* :class:`SearchVector` with :class:`SearchVectorComputed` and :class:`SearchDocument` — the
  full-text search column: a generated ``tsvector`` on PostgreSQL, a virtual always-NULL ``TEXT``
  column on SQLite (which searches with ``LIKE`` instead).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Computed, DateTime, Dialect, String, Text
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import DDLCompiler, SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from agentledger.domain.encoding import escape_nul, map_strings, unescape_nul
from agentledger.domain.time import as_utc


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


#: Text search configuration of ``conversation_messages.search_vector`` and of search queries.
#: ``simple`` lower-cases words and does nothing else: no stemming and no stop words, so it
#: treats every language of a conversation alike, finds identifiers, file names and numbers as
#: typed, and does not depend on the server's ``default_text_search_config``. A generated column
#: needs an immutable expression, so the configuration is spelled out, never defaulted.
SEARCH_CONFIG = "simple"


#: Characters of each message the PostgreSQL search index covers. A ``tsvector`` holds at most
#: 1 MB of distinct lexemes; even text built to maximise them (hyphenated words of 4-byte
#: characters) stays near 6 bytes of lexemes per character, so 100,000 characters always fit,
#: and no message is ever refused for its search document. Storage never depends on search.
SEARCHED_CHARACTERS = 100_000


class SearchDocument(ColumnElement[str]):
    """The search document of a message row, for its generated column.

    PostgreSQL: ``to_tsvector('simple'::regconfig, "left"(content, 100000))`` (spelled as
    PostgreSQL reflects it, so autogenerate compares equal). Elsewhere: ``NULL``.
    """

    inherit_cache = True
    type = Text()


@compiles(SearchDocument, "postgresql")
def _search_document_postgresql(element: SearchDocument, compiler: SQLCompiler, **kw: Any) -> str:
    return f"to_tsvector('{SEARCH_CONFIG}'::regconfig, \"left\"(content, {SEARCHED_CHARACTERS}))"


@compiles(SearchDocument)
def _search_document_default(element: SearchDocument, compiler: SQLCompiler, **kw: Any) -> str:
    return "NULL"


class SearchVectorComputed(Computed):
    """``GENERATED ALWAYS AS (...) STORED`` on PostgreSQL (a GIN index needs stored values);
    ``VIRTUAL`` on SQLite, where the value is NULL and ``ALTER TABLE ADD COLUMN`` refuses
    stored generated columns."""

    def __init__(self, sqltext: ColumnElement[Any]) -> None:
        super().__init__(sqltext, persisted=True)

    def _copy(self, **kw: Any) -> SearchVectorComputed:  # keep the class in Table.to_metadata
        return self._schema_item_copy(SearchVectorComputed(self.sqltext))


@compiles(SearchVectorComputed, "sqlite")
def _search_vector_sqlite(element: SearchVectorComputed, compiler: DDLCompiler, **kw: Any) -> str:
    expression = compiler.sql_compiler.process(
        element.sqltext, include_table=False, literal_binds=True
    )
    return f"GENERATED ALWAYS AS ({expression}) VIRTUAL"


class SearchVector(TypeDecorator[str]):
    """``tsvector`` on PostgreSQL, ``TEXT`` elsewhere (the column of :class:`SearchDocument`)."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return TSVECTOR() if _is_postgres(dialect) else Text()
