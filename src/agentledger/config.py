"""Configuration: ``LedgerSettings`` (pydantic-settings) and database URL handling.

The URL comes from ``AGENTLEDGER_DATABASE_URL``, else ``DATABASE_URL`` (as in the seed), else the
embedded default ``sqlite+aiosqlite:///agentledger.db``. Plain ``postgresql://`` / ``postgres://``
URLs are driven through asyncpg and ``sqlite://`` through aiosqlite. The password never appears in
a repr, a log line or an error: use :func:`safe_url` whenever a URL is shown.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_serializer, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL

from agentledger.db.urls import normalize_url, safe_url
from agentledger.domain.retention import RetentionPolicy, parse_policies
from agentledger.errors import ConfigurationError

__all__ = [
    "DEFAULT_DATABASE_URL",
    "ConfigurationError",
    "LedgerSettings",
    "normalize_url",
    "safe_url",
]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///agentledger.db"


class LedgerSettings(BaseSettings):
    """Settings read from arguments, the environment (``AGENTLEDGER_*``) and a ``.env`` file."""

    model_config = SettingsConfigDict(
        env_prefix="AGENTLEDGER_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        # A URL is an input: a validation error must never echo it (it holds the password).
        hide_input_in_errors=True,
    )

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        # Order matters: the first alias found wins, and environment names match without
        # regard to case, so "database_url" would pick up DATABASE_URL before
        # AGENTLEDGER_DATABASE_URL were looked at. An explicit argument still wins over both.
        validation_alias=AliasChoices("AGENTLEDGER_DATABASE_URL", "DATABASE_URL", "database_url"),
        repr=False,
        description="SQLAlchemy URL; postgresql:// and sqlite:// are given async drivers.",
    )
    read_url: str | None = Field(
        default=None,
        repr=False,
        description="Optional second database (a streaming read replica) for history reads and "
        "listings (get_items, get_session, list_user_sessions, get_usage); writes never go "
        "there, and a read that could miss this ledger's own writes, or finds the replica "
        "down, runs on the primary instead (read-your-writes: see docs/scaling.md).",
    )
    read_retry_after: float = Field(
        default=5.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds reads stay on the primary after the read replica could not be "
        "reached, before it is tried again.",
    )
    pool_size: int = Field(default=5, ge=1, description="Connections kept open (PostgreSQL).")
    max_overflow: int = Field(default=10, ge=0, description="Extra connections under load.")
    pool_timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for one.")
    pool_pre_ping: bool = Field(default=True, description="Test connections on checkout.")
    pool_recycle: int = Field(default=1800, description="Seconds before a connection is renewed.")
    sqlite_busy_timeout: float = Field(
        default=30.0, gt=0, description="Seconds SQLite waits for the write lock."
    )
    echo: bool = Field(default=False, description="Log SQL statements (never their parameters).")
    migrate_on_start: bool = Field(
        default=False,
        description="Run `alembic upgrade head` when the Ledger opens, instead of failing fast.",
    )
    host_alembic_ini: str | None = Field(
        default=None,
        description="Your application's alembic.ini, when its version_locations hold "
        "agentledger's revisions (one history, one alembic_version): the schema check then "
        "follows that history to find agentledger's applied revisions.",
    )
    retention: Annotated[dict[str, RetentionPolicy], NoDecode] = Field(
        default_factory=dict,
        description="Retention policies per agent name ('*': every other agent), applied by "
        '`agentledger cleanup`; JSON in AGENTLEDGER_RETENTION, e.g. {"*": {"days": 90}, '
        '"support": {"days": 365, "archive": true, "max_messages": 500}}.',
    )
    row_level_security: bool = Field(
        default=False,
        description="Scope the SDK sessions and SessionAgent runs to their user_id "
        "(service.for_user) so PostgreSQL row-level security policies see the tenant; "
        "switch the policies on with `agentledger db rls enable`.",
    )
    default_user_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="The owner of sessions opened without a user_id (ledger.agent_session, "
        "SessionAgent.run), for single-user applications; unset, user_id is required.",
    )
    default_agent_name: str = Field(default="agent", min_length=1, max_length=255)
    telemetry: bool = Field(
        default=False,
        description="OpenTelemetry spans for every operation and the append metrics, through "
        "the global tracer and meter providers (needs the extra agentledger[otel]); see "
        "docs/observability.md.",
    )
    pgbouncer: bool = Field(
        default=False,
        description="The URL points at a transaction pooler (PgBouncer in transaction mode): "
        "no statement is prepared for later use on a server connection (asyncpg's and "
        "SQLAlchemy's statement caches off), server settings in the URL are refused, and "
        "migrations are refused (run them on the direct URL). See docs/operations.md.",
    )

    @field_validator("database_url")
    @classmethod
    def _parseable(cls, value: str) -> str:
        normalize_url(value)
        return value

    @field_validator("read_url")
    @classmethod
    def _parseable_or_unset(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None  # AGENTLEDGER_READ_URL= (empty) means no read engine
        if value is not None:
            normalize_url(value)
        return value

    @field_serializer("database_url", "read_url")
    def _shown(self, value: str | None) -> str | None:
        # model_dump() and model_dump_json() are how settings get printed and logged: the
        # password is masked there as in repr(); read the attribute for the real URL.
        return None if value is None else safe_url(value)

    @field_validator("retention", mode="before")
    @classmethod
    def _policies(cls, value: object) -> dict[str, RetentionPolicy]:
        # One set of rules for AGENTLEDGER_RETENTION, --policy-file and Python callers.
        return parse_policies(value)

    @property
    def url(self) -> URL:
        """The normalized (async driver) URL."""
        return normalize_url(self.database_url)

    @property
    def safe_database_url(self) -> str:
        return safe_url(self.url)

    @property
    def read_engine_url(self) -> URL | None:
        """The normalized ``read_url``, or ``None`` when reads use the primary."""
        return None if self.read_url is None else normalize_url(self.read_url)

    def engine_kwargs(self, url: URL | None = None) -> dict[str, Any]:
        """Keyword arguments for ``create_async_engine`` from the pool settings (for ``url``,
        by default the primary's)."""
        kwargs: dict[str, Any] = {"echo": self.echo, "pool_pre_ping": self.pool_pre_ping}
        if (url or self.url).get_backend_name() == "postgresql":
            kwargs.update(
                pool_size=self.pool_size,
                max_overflow=self.max_overflow,
                pool_timeout=self.pool_timeout,
                pool_recycle=self.pool_recycle,
                # Hand out the most recently used connection: its server backend is warm
                # (caches, prepared statements), and surplus connections can idle out.
                pool_use_lifo=True,
            )
        return kwargs

    def __repr_args__(self) -> Any:
        yield "database_url", self.safe_database_url
        if self.read_url is not None:
            yield "read_url", safe_url(self.read_url)
        yield from super().__repr_args__()
