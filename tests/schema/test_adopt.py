"""`agentledger db adopt`: a database on the seed's exact schema, upgraded in place."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from agentledger import Ledger, LedgerError, metadata
from agentledger.cli import main
from agentledger.schema.alembic import VERSION_TABLE, head_revision, include_object
from tests.conftest import create_pg_database, drop_pg_database, pg_url, run_sync

# The seed's schema, as the seed document wrote it (PostgreSQL only).
SEED_DDL = """
CREATE TABLE IF NOT EXISTS agent_sessions (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id VARCHAR(255) NOT NULL,
    agent_name VARCHAR(255) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    metadata JSONB DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS conversation_messages (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id UUID REFERENCES agent_sessions(id) ON DELETE CASCADE,
    role VARCHAR(50) NOT NULL,
    content TEXT NOT NULL,
    tool_calls JSONB,
    tool_call_id VARCHAR(255),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
);
CREATE INDEX idx_sessions_user_id ON agent_sessions(user_id);
CREATE INDEX idx_messages_session_id ON conversation_messages(session_id);
CREATE INDEX idx_messages_created_at ON conversation_messages(created_at);
"""

ALICE = uuid.UUID("00000000-0000-4000-8000-00000000a11c")
BOB = uuid.UUID("00000000-0000-4000-8000-000000000b0b")


@pytest.fixture
async def seed_db() -> AsyncIterator[str]:
    """A PostgreSQL database on the seed schema with conversations written the seed's way."""
    name = await create_pg_database()
    connection = await asyncpg.connect(pg_url(name))
    try:
        await connection.execute(SEED_DDL)
        await connection.execute(
            "INSERT INTO agent_sessions (id, user_id, agent_name, metadata) VALUES "
            '($1, \'alice\', \'MemoryAgent\', \'{"plan": "pro", "tag": "\ue000x"}\'), '
            "($2, 'bob', 'MemoryAgent', DEFAULT)",
            ALICE,
            BOB,
        )
        # One transaction: every row gets the same now(), so created_at ties; the seed's ids
        # then decide. Ids are chosen so that id order is the intended order.
        await connection.execute(
            """
            INSERT INTO conversation_messages (id, session_id, role, content, tool_calls,
                                               tool_call_id, created_at)
            VALUES
              ('00000000-0000-4000-8000-000000000001', $1, 'user', 'My name is Alice', NULL,
               NULL, '2025-01-01 10:00:00+00'),
              ('00000000-0000-4000-8000-000000000002', $1, 'assistant', '', '[{"id": "c1",
               "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]', NULL,
               '2025-01-01 10:00:01+00'),
              ('00000000-0000-4000-8000-000000000003', $1, 'tool', 'found: Alice', NULL, 'c1',
               '2025-01-01 10:00:01+00'),
              ('00000000-0000-4000-8000-000000000004', $1, 'assistant', 'Hi Alice \ue000!', NULL,
               NULL, '2025-01-01 10:00:01+00'),
              ('00000000-0000-4000-8000-000000000005', $2, 'user', 'hello', NULL, NULL, NULL)
            """,
            ALICE,
            BOB,
        )
    finally:
        await connection.close()
    try:
        yield pg_url(name)
    finally:
        await drop_pg_database(name)


def _schema_diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection,
        opts={
            "version_table": VERSION_TABLE,
            "include_object": include_object,
            "compare_type": True,
        },
    )
    return list(compare_metadata(context, metadata))


async def test_adopt_keeps_every_row_rebuilds_order_and_reaches_head(seed_db: str) -> None:
    async with Ledger.from_url(seed_db) as ledger:
        report = await ledger.adopt()
        assert (report.sessions, report.messages) == (2, 5)
        assert await ledger.current_revisions() == (head_revision(),)

        alice = await ledger.service.get_session(ALICE, user_id="alice")
        assert alice is not None
        assert alice.metadata == {"plan": "pro", "tag": "\ue000x"}
        assert [(m.seq, m.role, m.content) for m in alice.messages] == [
            (1, "user", "My name is Alice"),
            (2, "assistant", ""),
            (3, "tool", "found: Alice"),
            (4, "assistant", "Hi Alice \ue000!"),
        ]
        assert alice.messages[1].tool_calls is not None
        assert alice.messages[1].tool_calls[0]["function"]["name"] == "lookup"
        assert alice.messages[2].tool_call_id == "c1"
        assert str(alice.messages[0].id) == "00000000-0000-4000-8000-000000000001"
        # The SDK view of a tool message is a proper function_call_output.
        items = await ledger.service.get_items(ALICE, user_id="alice")
        assert items[2] == {
            "type": "function_call_output",
            "call_id": "c1",
            "output": "found: Alice",
        }

        # Normal operation continues the sequence.
        added = await ledger.service.add_message(ALICE, role="user", content="still here?")
        assert added.seq == 5
        page = await ledger.service.list_user_sessions("alice")
        assert [s.message_count for s in page] == [5]

        bob = await ledger.service.get_session(BOB)
        assert bob is not None
        assert [m.content for m in bob.messages] == ["hello"]

        async with ledger.engine.connect() as connection:
            assert await connection.run_sync(_schema_diff) == []


async def test_adopt_refuses_orphans_and_changes_nothing(seed_db: str) -> None:
    connection = await asyncpg.connect(seed_db)
    try:
        await connection.execute(
            "INSERT INTO conversation_messages (session_id, role, content) "
            "VALUES (NULL, 'user', 'lost')"
        )
    finally:
        await connection.close()
    async with Ledger.from_url(seed_db) as ledger:
        with pytest.raises(LedgerError, match="1 messages have no session_id"):
            await ledger.adopt()
        assert await ledger.current_revisions() == ()
    connection = await asyncpg.connect(seed_db)
    try:
        columns = await connection.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'conversation_messages'"
        )
    finally:
        await connection.close()
    assert "seq" not in {row["column_name"] for row in columns}


async def test_adopt_refuses_unknown_roles_and_foreign_shapes(seed_db: str) -> None:
    connection = await asyncpg.connect(seed_db)
    try:
        await connection.execute(
            "UPDATE conversation_messages SET role = 'function' WHERE content = 'hello'"
        )
    finally:
        await connection.close()
    async with Ledger.from_url(seed_db) as ledger:
        with pytest.raises(LedgerError, match="'function'"):
            await ledger.adopt()
    connection = await asyncpg.connect(seed_db)
    try:
        await connection.execute("ALTER TABLE agent_sessions ADD COLUMN extra int")
    finally:
        await connection.close()
    async with Ledger.from_url(seed_db) as ledger:
        with pytest.raises(LedgerError, match="does not have the seed's shape"):
            await ledger.adopt()


@pytest.mark.parametrize("value", ["[1, 2]", '"a string"', "42"])
async def test_adopt_refuses_metadata_that_is_not_an_object(seed_db: str, value: str) -> None:
    connection = await asyncpg.connect(seed_db)
    try:
        await connection.execute(
            "UPDATE agent_sessions SET metadata = CAST($1 AS jsonb) WHERE id = $2", value, ALICE
        )
    finally:
        await connection.close()
    async with Ledger.from_url(seed_db) as ledger:
        with pytest.raises(LedgerError, match="1 sessions have metadata that is not a JSON"):
            await ledger.adopt()
        assert await ledger.current_revisions() == ()


async def test_adopt_refuses_a_database_agentledger_already_manages(database_url: str) -> None:
    async with Ledger.from_url(database_url) as ledger:
        with pytest.raises(LedgerError, match="agentledger db upgrade"):
            await ledger.adopt()


def test_cli_adopt(seed_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--database-url", seed_db, "db", "adopt"])
    out = capsys.readouterr().out
    assert code == 0
    assert "adopted 2 sessions and 5 messages" in out

    async def count() -> int:
        async with Ledger.from_url(seed_db) as ledger:
            record = await ledger.service.get_session(ALICE)
            return 0 if record is None else len(record.messages)

    assert run_sync(count()) == 4
    assert main(["--database-url", seed_db, "db", "adopt"]) == 1
    assert "already managed" in capsys.readouterr().err


def test_seed_sqlite_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--database-url", f"sqlite:///{tmp_path / 'x.db'}", "db", "adopt"])
    assert code == 1
    assert "PostgreSQL" in capsys.readouterr().err


async def test_upgrade_refuses_a_seed_schema_and_points_to_adopt(seed_db: str) -> None:
    async with Ledger.from_url(seed_db) as ledger:
        with pytest.raises(LedgerError, match="agentledger db adopt"):
            await ledger.upgrade()
        assert await ledger.current_revisions() == ()
