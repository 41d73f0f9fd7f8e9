"""Conversation lifecycle: session titles, retention (front trimming, archiving) and search.

Revision ID: agentledger_0002
Revises: agentledger_0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "agentledger_0002"
down_revision: str | Sequence[str] | None = "agentledger_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_INDEX = "ix_conversation_messages_search_vector"


def upgrade() -> None:
    # Plain ADD COLUMN works on both backends (and in offline --sql mode).
    op.add_column(
        "agent_sessions",
        sa.Column("trimmed_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("agent_sessions", sa.Column("title", sa.String(length=255), nullable=True))
    op.add_column(
        "agent_sessions", sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True)
    )
    if op.get_context().dialect.name == "postgresql":
        # Full-text search: 'simple' (lower-casing only, language-neutral) spelled out, as a
        # generated column needs an immutable expression. Adding a STORED generated column
        # rewrites conversation_messages once, under an exclusive lock.
        op.add_column(
            "conversation_messages",
            sa.Column(
                "search_vector",
                postgresql.TSVECTOR(),
                sa.Computed("to_tsvector('simple'::regconfig, content)", persisted=True),
                nullable=True,
            ),
        )
        op.create_index(
            SEARCH_INDEX, "conversation_messages", ["search_vector"], postgresql_using="gin"
        )
    else:
        # SQLite searches with LIKE: the same column and index exist for one model on both
        # backends, but the column is virtual and NULL and the partial index never holds a row.
        op.add_column(
            "conversation_messages",
            sa.Column("search_vector", sa.Text(), sa.Computed(sa.text("NULL"), persisted=False)),
        )
        op.create_index(
            SEARCH_INDEX, "conversation_messages", ["search_vector"], sqlite_where=sa.text("0")
        )


def downgrade() -> None:
    op.drop_index(SEARCH_INDEX, table_name="conversation_messages")
    # SQLite >= 3.35 drops a generated column in place; batch mode would copy it as data.
    op.drop_column("conversation_messages", "search_vector")
    # SQLite before 3.35 cannot drop columns: batch mode rebuilds the table there.
    with op.batch_alter_table("agent_sessions") as batch:
        batch.drop_column("archived_at")
        batch.drop_column("title")
        batch.drop_column("trimmed_seq")
