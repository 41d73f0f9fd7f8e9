"""Session names that stay their owner's, and a search index that never refuses a message.

* ``agent_sessions.name``: the name a session was opened by (``ledger.agent_session(name,
  user_id=...)``), unique per user. A named session normally lives at an id derived from the
  user and the name; when another user took that id first, the owner's session is created
  under a random id and found again by this column, so nobody can block someone else's name.
* ``conversation_messages.search_vector`` indexes the first 100,000 characters of each
  message (PostgreSQL). Before, one message of about 1.4 MB of distinct words made
  ``to_tsvector`` fail ("string is too long for tsvector") and with it the whole append:
  storage depended on the search index. A generated column's expression cannot be altered in
  place before PostgreSQL 17, so the column is dropped and added again, which rewrites
  ``conversation_messages`` once under an exclusive lock. SQLite searches with ``LIKE`` over
  the whole content and is unchanged.
* ``agent_sessions.trimmed_seq`` is repaired where a downgrade below ``agentledger_0002`` lost
  it (see ``_restore_trimmed_starts``).

Revision ID: agentledger_0004
Revises: agentledger_0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "agentledger_0004"
down_revision: str | Sequence[str] | None = "agentledger_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_INDEX = "ix_conversation_messages_search_vector"
NAME_INDEX = "uq_agent_sessions_user_id_name"
#: Characters of each message the PostgreSQL search index covers (see the module docstring).
SEARCHED_CHARACTERS = 100_000
BOUNDED = f"to_tsvector('simple'::regconfig, \"left\"(content, {SEARCHED_CHARACTERS}))"
UNBOUNDED = "to_tsvector('simple'::regconfig, content)"


def upgrade() -> None:
    op.add_column("agent_sessions", sa.Column("name", sa.String(length=255), nullable=True))
    op.create_index(
        NAME_INDEX,
        "agent_sessions",
        ["user_id", "name"],
        unique=True,
        postgresql_where=sa.text("name IS NOT NULL"),
        sqlite_where=sa.text("name IS NOT NULL"),
    )
    if op.get_context().dialect.name == "postgresql":
        _search_vector(BOUNDED)
    _restore_trimmed_starts()


def _restore_trimmed_starts() -> None:
    """Repair ``trimmed_seq`` where it no longer marks where a history starts: a database
    downgraded below ``agentledger_0002`` (which drops the column) and upgraded again holds
    sessions whose front retention trimmed, each now starting at 0. A history is
    ``trimmed_seq + 1 .. last_seq``; only sessions that break that are changed."""
    first = (
        "(SELECT MIN(m.seq) FROM conversation_messages m WHERE m.session_id = agent_sessions.id)"
    )
    op.execute(
        f"UPDATE agent_sessions SET trimmed_seq = COALESCE({first} - 1, last_seq) "
        f"WHERE trimmed_seq <> COALESCE({first} - 1, last_seq)"
    )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        _search_vector(UNBOUNDED)
    op.drop_index(NAME_INDEX, table_name="agent_sessions")
    # SQLite before 3.35 cannot drop columns: batch mode rebuilds the table there.
    with op.batch_alter_table("agent_sessions") as batch:
        batch.drop_column("name")


def _search_vector(expression: str) -> None:
    op.drop_index(SEARCH_INDEX, table_name="conversation_messages")
    op.drop_column("conversation_messages", "search_vector")
    op.add_column(
        "conversation_messages",
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR(),
            sa.Computed(expression, persisted=True),
            nullable=True,
        ),
    )
    op.create_index(
        SEARCH_INDEX, "conversation_messages", ["search_vector"], postgresql_using="gin"
    )
