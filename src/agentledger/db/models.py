"""The declarative schema: sessions, their messages, idempotent batches and token usage.

Rules the schema carries (docs/schema.md explains each):

* Order is ``conversation_messages.seq``, a gap-free per-session sequence allocated from
  ``agent_sessions.last_seq`` under the session row's lock. Timestamps are informational only.
* Every primary and unique key of the per-session tables starts with ``session_id``, so they can
  be hash-partitioned or distributed by session without a schema change.
* ``item`` keeps the full Agents SDK item losslessly (PostgreSQL ``json``, which, unlike
  ``jsonb``, stores U+0000 and keeps key order); ``role``/``content``/``tool_calls``/
  ``tool_call_id`` are the seed's chat view of the same row.
* ``search_vector`` is PostgreSQL full-text search over ``content`` (a generated ``tsvector``
  with a GIN index); on SQLite the same column is a virtual column that is always NULL, with an
  index that never holds a row, so one model describes both backends exactly.

The tables live on :data:`metadata` (with a naming convention, so constraint names are stable)
so that a host application can add it to its own Alembic ``target_metadata``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from agentledger.db.types import (
    NulSafeJSON,
    NulSafeText,
    SearchDocument,
    SearchVector,
    SearchVectorComputed,
    UTCDateTime,
)
from agentledger.domain.projection import ROLES

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: The MetaData holding every agentledger table; list it in a host's Alembic target_metadata.
metadata = MetaData(naming_convention=NAMING_CONVENTION)


_ROLE_CHECK = "role IN (" + ", ".join(f"'{role}'" for role in ROLES) + ")"


class LedgerBase(AsyncAttrs, DeclarativeBase):
    """Declarative base of agentledger's models (separate from any host's base)."""

    metadata = metadata


class AgentSession(LedgerBase):
    """One conversation of one user with one agent."""

    __tablename__ = "agent_sessions"
    __table_args__ = (
        # Serves "a user's sessions, most recently updated first" as a keyset scan.
        Index("ix_agent_sessions_user_id_updated_at", "user_id", "updated_at", "id"),
        # Serves cleanup of sessions idle since a cutoff.
        Index("ix_agent_sessions_updated_at", "updated_at"),
        # A name is its owner's once (see naming.py); unnamed sessions are not indexed.
        Index(
            "uq_agent_sessions_user_id_name",
            "user_id",
            "name",
            unique=True,
            postgresql_where=text("name IS NOT NULL"),
            sqlite_where=text("name IS NOT NULL"),
        ),
        CheckConstraint("last_seq >= 0", name="last_seq_non_negative"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[str] = mapped_column(String(255))
    agent_name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.now())
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", NulSafeJSON, server_default=text("'{}'")
    )
    #: Highest ``seq`` handed out; the next batch starts at ``last_seq + 1``.
    last_seq: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    #: Highest ``seq`` trimmed from the front by retention; messages are
    #: ``trimmed_seq + 1 .. last_seq``, so the count is ``last_seq - trimmed_seq``.
    trimmed_seq: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    #: A title for session pickers; when unset, listings show the first user message.
    title: Mapped[str | None] = mapped_column(NulSafeText(255), nullable=True)
    #: When a retention policy archived the session (``None``: active). Archived sessions keep
    #: their history but are left out of ``list_user_sessions`` and ``search`` by default.
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The name the session was opened by (``ledger.agent_session(name, user_id=...)``), if
    #: any; unique per user.
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: Who holds the session's turn lease (a random token per turn; ``None``: nobody), and
    #: until when unless renewed (see ``SessionService.claim_turn``).
    turn_holder: Mapped[str | None] = mapped_column(String(64), nullable=True)
    turn_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The agent framework whose conversation this is (``openai-agents``, ``adk``,
    #: ``langchain``, ...; see ``validation.check_framework``): one ledger for all of them.
    framework: Mapped[str] = mapped_column(String(32), server_default=text("'openai-agents'"))

    messages: Mapped[list[ConversationMessage]] = relationship(
        back_populates="session",
        order_by="ConversationMessage.seq",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class ConversationMessage(LedgerBase):
    """One item of a session's history, in the chat view and as the full SDK item."""

    __tablename__ = "conversation_messages"
    __table_args__ = (
        UniqueConstraint("session_id", "id"),
        CheckConstraint(_ROLE_CHECK, name="role_known"),
        CheckConstraint("seq > 0", name="seq_positive"),
        # Full-text search (PostgreSQL). On SQLite the indexed column is always NULL and the
        # partial index's predicate is false: the index exists, stays empty and costs nothing.
        Index(
            "ix_conversation_messages_search_vector",
            "search_vector",
            postgresql_using="gin",
            sqlite_where=text("0"),
        ),
    )

    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("agent_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, default=uuid.uuid4)
    role: Mapped[str] = mapped_column(String(50))
    content: Mapped[str] = mapped_column(NulSafeText)
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(NulSafeJSON, nullable=True)
    tool_call_id: Mapped[str | None] = mapped_column(NulSafeText(255), nullable=True)
    #: The SDK item's ``type`` ("message", "function_call", "reasoning", ...).
    item_type: Mapped[str] = mapped_column(String(64), server_default=text("'message'"))
    #: The item exactly as stored by the caller (PostgreSQL ``json``: lossless, keeps U+0000).
    item: Mapped[Any] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.now())
    #: ``to_tsvector('simple', left(content, SEARCHED_CHARACTERS))``, generated by PostgreSQL
    #: (see ``SEARCH_CONFIG``); always NULL on SQLite. Deferred: the ORM never loads it with a
    #: message.
    search_vector: Mapped[str | None] = mapped_column(
        SearchVector, SearchVectorComputed(SearchDocument()), nullable=True, deferred=True
    )

    session: Mapped[AgentSession] = relationship(back_populates="messages")


class MessageBatch(LedgerBase):
    """Remembers an idempotent ``add_messages`` batch so a retry stores it only once."""

    __tablename__ = "conversation_batches"

    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("agent_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    first_seq: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(BigInteger)
    #: sha256 of the batch's items: a key reused for a different batch is refused, not ignored.
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.now())


class SessionUsage(LedgerBase):
    """Token usage of one agent run (a turn) in a session."""

    __tablename__ = "session_usage"

    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("agent_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    requests: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    input_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    total_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.now())


class SessionCheckpoint(LedgerBase):
    """A compaction checkpoint: summary items that stand for the history up to and including
    ``upto_seq``. The originals stay; what a model receives is the newest checkpoint's items
    followed by every message after ``upto_seq``."""

    __tablename__ = "session_checkpoints"
    __table_args__ = (Index("ix_session_checkpoints_upto", "session_id", "upto_seq"),)

    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("agent_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    upto_seq: Mapped[int] = mapped_column(BigInteger)
    #: The summary items (a JSON array of Agents SDK input items).
    items: Mapped[Any] = mapped_column(JSON(none_as_null=True))
    #: What produced the summary (a model name, or the summarizer's name).
    model: Mapped[str | None] = mapped_column(String(255), nullable=True)
    requests: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    input_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    total_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.now())


class ApiToken(LedgerBase):
    """A bearer token of the HTTP API's standalone server (``agentledger tokens create``).

    Only the token's sha256 is stored: the token itself is shown once, when it is made. A
    revoked token keeps its row (``revoked_at``) so ``tokens list`` can still show it. The
    table is server configuration, not a tenant's data: row-level security leaves it alone
    (the server reads it before it knows who is calling)."""

    __tablename__ = "agentledger_api_tokens"
    __table_args__ = (Index("ix_agentledger_api_tokens_user_id", "user_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    #: sha256 of the whole token, hex: what a request's token is looked up by.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(String(255))
    #: May call the maintenance routes (retention, erase-user).
    admin: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AppState(LedgerBase):
    """State shared by every session of one app of one framework (ADK's ``app:`` keys)."""

    __tablename__ = "ledger_app_state"

    framework: Mapped[str] = mapped_column(String(32), primary_key=True)
    app_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: A JSON object of the scope's keys (without their ``app:`` prefix).
    state: Mapped[Any] = mapped_column(JSON(none_as_null=True))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.now())


class UserState(LedgerBase):
    """State shared by one user's sessions of one app (ADK's ``user:`` keys); erased with the
    user."""

    __tablename__ = "ledger_user_state"
    # Erasure finds a user's rows whatever the app.
    __table_args__ = (Index("ix_ledger_user_state_user_id", "user_id"),)

    framework: Mapped[str] = mapped_column(String(32), primary_key=True)
    app_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[Any] = mapped_column(JSON(none_as_null=True))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.now())


class SessionStateRow(LedgerBase):
    """A framework session's own state (ADK's unprefixed keys) and the framework's clock of
    its last update; goes with its session."""

    __tablename__ = "ledger_session_state"

    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("agent_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[Any] = mapped_column(JSON(none_as_null=True))
    #: The framework's own time of the last update (ADK: seconds since the epoch, the last
    #: event's timestamp), kept exactly as the framework reports it.
    update_time: Mapped[float] = mapped_column(Double)


#: The tables as typed Core handles, for the repositories' statements.
sessions_table = cast(Table, AgentSession.__table__)
messages_table = cast(Table, ConversationMessage.__table__)
batches_table = cast(Table, MessageBatch.__table__)
usage_table = cast(Table, SessionUsage.__table__)
checkpoints_table = cast(Table, SessionCheckpoint.__table__)
api_tokens_table = cast(Table, ApiToken.__table__)
app_state_table = cast(Table, AppState.__table__)
user_state_table = cast(Table, UserState.__table__)
session_state_table = cast(Table, SessionStateRow.__table__)

#: Tables agentledger owns; Alembic filters (``include_object``) use this set.
OWNED_TABLES: frozenset[str] = frozenset(metadata.tables)
