"""Conversation lifecycle: session titles and front trimming by retention.

Revision ID: agentledger_0002
Revises: agentledger_0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "agentledger_0002"
down_revision: str | Sequence[str] | None = "agentledger_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN works on both backends (and in offline --sql mode).
    op.add_column(
        "agent_sessions",
        sa.Column("trimmed_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("agent_sessions", sa.Column("title", sa.String(length=255), nullable=True))


def downgrade() -> None:
    # SQLite before 3.35 cannot drop columns: batch mode rebuilds the table there.
    with op.batch_alter_table("agent_sessions") as batch:
        batch.drop_column("title")
        batch.drop_column("trimmed_seq")
