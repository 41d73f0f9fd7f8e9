"""Row-level security policies for PostgreSQL, inert until switched on.

Each table gets one policy, ``agentledger_tenant``: a row is visible and writable only when its
session belongs to the user named by the transaction-local setting ``agentledger.user_id``
(``SELECT set_config('agentledger.user_id', 'u1', true)``, which is what
``ledger.service.for_user('u1')`` sends at the start of every transaction). A policy does nothing
while its table's row-level security is off, which is how this revision leaves them: switching it
on is the opt-in step (``agentledger db rls enable``), so upgrading never changes what an existing
application can read. SQLite has no row-level security; there this revision only moves the version.

Revision ID: agentledger_0003
Revises: agentledger_0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "agentledger_0003"
down_revision: str | Sequence[str] | None = "agentledger_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POLICY = "agentledger_tenant"
# current_setting(..., true) is NULL when the setting was never made on the connection and ''
# after a transaction that made it ended: neither equals a user id, so an unscoped caller sees
# nothing rather than everything.
OWNER_IS_TENANT = "user_id = current_setting('agentledger.user_id', true)"
# The owner of the row's session, compared like a session's own user_id (and the subquery is
# itself filtered by agent_sessions' policy). A correlated scalar subquery is one primary-key
# lookup per row; an EXISTS could be planned as a hashed set of all the tenant's sessions, a
# plan that prepared statements then keep for every tenant on the connection.
SESSION_IS_TENANTS = (
    "(SELECT owner.user_id FROM agent_sessions AS owner WHERE owner.id = {table}.session_id)"
    " = current_setting('agentledger.user_id', true)"
)
SESSION_TABLES = ("conversation_messages", "conversation_batches", "session_usage")
TABLES = ("agent_sessions", *SESSION_TABLES)


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(
        f"CREATE POLICY {POLICY} ON agent_sessions "
        f"USING ({OWNER_IS_TENANT}) WITH CHECK ({OWNER_IS_TENANT})"
    )
    for table in SESSION_TABLES:
        condition = SESSION_IS_TENANTS.format(table=table)
        op.execute(
            f"CREATE POLICY {POLICY} ON {table} USING ({condition}) WITH CHECK ({condition})"
        )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table in TABLES:
        # Without its policy a table with row-level security on would refuse every row to
        # every role but its owner: switch it off with the policy.
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        op.execute(f"DROP POLICY {POLICY} ON {table}")
