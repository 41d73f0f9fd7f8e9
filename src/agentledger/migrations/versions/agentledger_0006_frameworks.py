"""Sessions record the agent framework whose conversation they hold.

``agent_sessions.framework`` (``openai-agents``, ``adk``, ``langchain``, ...) lets one ledger keep
every framework's conversations: the service, CLI, exports, search, retention and erasure
treat them alike, and a listing can keep one framework's sessions. Existing sessions were all
written by the OpenAI Agents SDK integration (or through the service directly), so the server
default ``'openai-agents'`` fills them in; on PostgreSQL 11+ adding a column with a constant
default rewrites nothing.

Revision ID: agentledger_0006_frameworks
Revises: agentledger_0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "agentledger_0006_frameworks"
down_revision: str | Sequence[str] | None = "agentledger_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "agent_sessions",
        sa.Column(
            "framework",
            sa.String(length=32),
            server_default=sa.text("'openai-agents'"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    # SQLite before 3.35 cannot drop columns: batch mode rebuilds the table there.
    with op.batch_alter_table("agent_sessions") as batch:
        batch.drop_column("framework")
