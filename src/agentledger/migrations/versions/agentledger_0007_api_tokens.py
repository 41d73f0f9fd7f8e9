"""API tokens of the standalone HTTP server, and a notification when messages are appended.

* ``agentledger_api_tokens``: one row per bearer token made by ``agentledger tokens create``.
  Only the token's sha256 is stored (the token is shown once); ``revoked_at`` marks a revoked
  one. It is server configuration, not a tenant's data, so it has no row-level security policy:
  the server looks a token up before it knows who is calling.
* PostgreSQL only: a row trigger on ``agent_sessions`` sends ``NOTIFY agentledger_appended``
  with the payload ``'<session id> <last seq>'`` whenever an append raises the session's
  ``last_seq`` (the append statement updates that one row, whatever the batch's size). The
  HTTP API's Server-Sent Events listen on that channel instead of polling. The payload never
  carries message content; the notification is delivered at commit, so a rolled-back append
  sends none. See ``agentledger.web.events`` for why a trigger on the session row.

Revision ID: agentledger_0007
Revises: agentledger_0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "agentledger_0007"
down_revision: str | Sequence[str] | None = "agentledger_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "agentledger_api_tokens"
FUNCTION = "agentledger_notify_appended"
TRIGGER = "agentledger_appended"

NOTIFY_FUNCTION = f"""
CREATE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('agentledger_appended', NEW.id::text || ' ' || NEW.last_seq::text);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("admin", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agentledger_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_agentledger_api_tokens_token_hash")),
    )
    op.create_index("ix_agentledger_api_tokens_user_id", TABLE, ["user_id"])
    if op.get_context().dialect.name == "postgresql":
        op.execute(NOTIFY_FUNCTION)
        op.execute(
            f"CREATE TRIGGER {TRIGGER}_update AFTER UPDATE OF last_seq ON agent_sessions "
            f"FOR EACH ROW WHEN (NEW.last_seq > OLD.last_seq) EXECUTE FUNCTION {FUNCTION}()"
        )
        op.execute(
            f"CREATE TRIGGER {TRIGGER}_insert AFTER INSERT ON agent_sessions "
            f"FOR EACH ROW WHEN (NEW.last_seq > 0) EXECUTE FUNCTION {FUNCTION}()"
        )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}_insert ON agent_sessions")
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}_update ON agent_sessions")
        op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
    op.drop_table(TABLE)  # its index goes with it
