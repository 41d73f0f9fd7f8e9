"""Turn leases, so concurrent agent turns never interleave, and compaction checkpoints.

* ``agent_sessions.turn_holder`` names who holds the session's turn (a random token per turn)
  and ``turn_expires_at`` when that lease ends unless renewed. ``SessionAgent`` runs and
  ``LedgerSession.turn()`` claim the lease with one conditional UPDATE before the model is
  called, renew it while the turn lasts and release it at the end, so the items of concurrent
  turns on one session never interleave; a crashed turn blocks the session for at most one
  lease. Both columns are NULL when nobody holds the turn.
* ``session_checkpoints``: a compaction's summary items, standing for the history up to and
  including ``upto_seq``, with what produced them and its token usage. Nothing is deleted from
  the history; a model receives the newest checkpoint's items and the messages after it. On
  PostgreSQL the table gets the tenant policy of the other tables, switched on when theirs is.

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

TABLE = "session_checkpoints"
POLICY = "agentledger_tenant"
# As in agentledger_0003: the row's session must belong to the tenant the transaction names.
SESSION_IS_TENANTS = (
    f"(SELECT owner.user_id FROM agent_sessions AS owner WHERE owner.id = {TABLE}.session_id)"
    " = current_setting('agentledger.user_id', true)"
)
COUNTER = sa.BigInteger()


def upgrade() -> None:
    op.add_column("agent_sessions", sa.Column("turn_holder", sa.String(length=64), nullable=True))
    op.add_column(
        "agent_sessions", sa.Column("turn_expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_table(
        TABLE,
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("upto_seq", sa.BigInteger(), nullable=False),
        sa.Column("items", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("requests", COUNTER, server_default=sa.text("0"), nullable=False),
        sa.Column("input_tokens", COUNTER, server_default=sa.text("0"), nullable=False),
        sa.Column("output_tokens", COUNTER, server_default=sa.text("0"), nullable=False),
        sa.Column("total_tokens", COUNTER, server_default=sa.text("0"), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(["session_id"], ["agent_sessions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session_id", "id"),
    )
    op.create_index("ix_session_checkpoints_upto", TABLE, ["session_id", "upto_seq"])
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            f"CREATE POLICY {POLICY} ON {TABLE} "
            f"USING ({SESSION_IS_TENANTS}) WITH CHECK ({SESSION_IS_TENANTS})"
        )
        # Row-level security switched on for the other tables binds this one too.
        op.execute(
            "DO $$ BEGIN IF (SELECT relrowsecurity FROM pg_class "
            "WHERE oid = 'agent_sessions'::regclass) THEN "
            f"ALTER TABLE {TABLE} ENABLE ROW LEVEL SECURITY; END IF; END $$"
        )


def downgrade() -> None:
    op.drop_table(TABLE)  # its index and policy go with it
    # SQLite before 3.35 cannot drop columns: batch mode rebuilds the table there.
    with op.batch_alter_table("agent_sessions") as batch:
        batch.drop_column("turn_expires_at")
        batch.drop_column("turn_holder")
