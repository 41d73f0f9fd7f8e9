"""Turn leases: one agent turn at a time per session, without holding a connection.

``agent_sessions.turn_holder`` names who holds the session's turn (a random token per turn) and
``turn_expires_at`` when that lease ends unless renewed. ``SessionAgent`` runs and
``LedgerSession.turn()`` claim the lease with one conditional UPDATE before the model is
called, renew it while the turn lasts and release it at the end, so the items of concurrent
turns on one session never interleave; a crashed turn blocks the session for at most one
lease. Both columns are NULL when nobody holds the turn.

Revision ID: agentledger_0005
Revises: agentledger_0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "agentledger_0005"
down_revision: str | Sequence[str] | None = "agentledger_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("agent_sessions", sa.Column("turn_holder", sa.String(length=64), nullable=True))
    op.add_column(
        "agent_sessions", sa.Column("turn_expires_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    # SQLite before 3.35 cannot drop columns: batch mode rebuilds the table there.
    with op.batch_alter_table("agent_sessions") as batch:
        batch.drop_column("turn_expires_at")
        batch.drop_column("turn_holder")
