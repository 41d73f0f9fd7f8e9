"""Initial agentledger schema: sessions, ordered messages, idempotent batches, usage.

Revision ID: agentledger_0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "agentledger_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("agentledger",)
depends_on: str | Sequence[str] | None = None

# Plain SQLAlchemy types, so this released revision's DDL never changes with library code.
TIMESTAMP = sa.DateTime(timezone=True)
JSONB = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")

ROLES = ("user", "assistant", "tool", "system", "developer")


def upgrade() -> None:
    op.create_table(
        "agent_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("agent_name", sa.String(length=255), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("metadata", JSONB, server_default=sa.text("'{}'"), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("last_seq >= 0", name=op.f("ck_agent_sessions_last_seq_non_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_sessions")),
    )
    op.create_index(
        "ix_agent_sessions_user_id_updated_at",
        "agent_sessions",
        ["user_id", "updated_at", "id"],
    )
    op.create_index("ix_agent_sessions_updated_at", "agent_sessions", ["updated_at"])

    op.create_table(
        "conversation_messages",
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=50), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("tool_calls", JSONB, nullable=True),
        sa.Column("tool_call_id", sa.String(length=255), nullable=True),
        sa.Column(
            "item_type", sa.String(length=64), server_default=sa.text("'message'"), nullable=False
        ),
        sa.Column("item", sa.JSON(), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            "role IN (" + ", ".join(f"'{role}'" for role in ROLES) + ")",
            name=op.f("ck_conversation_messages_role_known"),
        ),
        sa.CheckConstraint("seq > 0", name=op.f("ck_conversation_messages_seq_positive")),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["agent_sessions.id"],
            name=op.f("fk_conversation_messages_session_id_agent_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", "seq", name=op.f("pk_conversation_messages")),
        sa.UniqueConstraint(
            "session_id", "id", name=op.f("uq_conversation_messages_session_id_id")
        ),
    )

    create_bookkeeping_tables()


def create_bookkeeping_tables() -> None:
    """Idempotency batches and usage; also called by `agentledger db adopt` on a seed database."""
    op.create_table(
        "conversation_batches",
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["agent_sessions.id"],
            name=op.f("fk_conversation_batches_session_id_agent_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "session_id", "idempotency_key", name=op.f("pk_conversation_batches")
        ),
    )

    op.create_table(
        "session_usage",
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("requests", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["agent_sessions.id"],
            name=op.f("fk_session_usage_session_id_agent_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", "id", name=op.f("pk_session_usage")),
    )


def downgrade() -> None:
    op.drop_table("session_usage")
    op.drop_table("conversation_batches")
    op.drop_table("conversation_messages")
    op.drop_index("ix_agent_sessions_updated_at", table_name="agent_sessions")
    op.drop_index("ix_agent_sessions_user_id_updated_at", table_name="agent_sessions")
    op.drop_table("agent_sessions")
