"""Scoped state for framework sessions (Google ADK's ``app:``, ``user:`` and session state).

* ``ledger_app_state``: state shared by every session of one app of one framework, keyed by
  ``(framework, app_name)``. It belongs to no user, so its row-level security policy lets
  every tenant read and write it (an app's shared state is shared by definition).
* ``ledger_user_state``: state shared by one user's sessions of one app, keyed by
  ``(framework, app_name, user_id)``; its policy shows a row only to its user, and erasing the
  user removes it.
* ``ledger_session_state``: a session's own state and the framework's time of its last update,
  one row per session, deleted with it; its policy is the session's.

On PostgreSQL the policies are switched on with the other tables' (``agentledger db rls
enable``), and here if theirs already are.

Revision ID: agentledger_0008_adk_state
Revises: agentledger_0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "agentledger_0008_adk_state"
down_revision: str | Sequence[str] | None = "agentledger_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POLICY = "agentledger_tenant"
TENANT = "current_setting('agentledger.user_id', true)"
POLICIES = {
    "ledger_app_state": "true",
    "ledger_user_state": f"user_id = {TENANT}",
    "ledger_session_state": (
        "(SELECT owner.user_id FROM agent_sessions AS owner "
        f"WHERE owner.id = ledger_session_state.session_id) = {TENANT}"
    ),
}


def _stamp() -> sa.Column[Any]:
    return sa.Column(
        "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "ledger_app_state",
        sa.Column("framework", sa.String(length=32), nullable=False),
        sa.Column("app_name", sa.String(length=255), nullable=False),
        sa.Column("state", sa.JSON(none_as_null=True), nullable=False),
        _stamp(),
        sa.PrimaryKeyConstraint("framework", "app_name"),
    )
    op.create_table(
        "ledger_user_state",
        sa.Column("framework", sa.String(length=32), nullable=False),
        sa.Column("app_name", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("state", sa.JSON(none_as_null=True), nullable=False),
        _stamp(),
        sa.PrimaryKeyConstraint("framework", "app_name", "user_id"),
    )
    op.create_index("ix_ledger_user_state_user_id", "ledger_user_state", ["user_id"])
    op.create_table(
        "ledger_session_state",
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("update_time", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["agent_sessions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session_id"),
    )
    if op.get_context().dialect.name != "postgresql":
        return
    for table, condition in POLICIES.items():
        op.execute(
            f"CREATE POLICY {POLICY} ON {table} USING ({condition}) WITH CHECK ({condition})"
        )
        # Row-level security switched on for the other tables binds these too.
        op.execute(
            "DO $$ BEGIN IF (SELECT relrowsecurity FROM pg_class "
            "WHERE oid = 'agent_sessions'::regclass) THEN "
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY; END IF; END $$"
        )


def downgrade() -> None:
    # Their indexes and policies go with them.
    op.drop_table("ledger_session_state")
    op.drop_table("ledger_user_state")
    op.drop_table("ledger_app_state")
