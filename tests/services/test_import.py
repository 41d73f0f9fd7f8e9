"""`agentledger import`: history copied from the Agents SDK's own stores, idempotently."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agents import SQLiteSession
from agents.extensions.memory import SQLAlchemySession
from sqlalchemy.ext.asyncio import create_async_engine

from agentledger import Ledger
from agentledger.cli import main
from agentledger.services.sdk_import import import_sdk_store
from tests.conftest import create_pg_database, drop_pg_database, pg_url, run_sync

CONVERSATION: list[Any] = [
    {"role": "user", "content": "Weather in Paris? 🌧"},
    {
        "type": "function_call",
        "call_id": "call_1",
        "name": "weather",
        "arguments": '{"city": "Paris"}',
        "id": "fc_1",
        "status": "completed",
    },
    {"type": "function_call_output", "call_id": "call_1", "output": "rain\x00 12°C"},
    {
        "role": "assistant",
        "type": "message",
        "id": "msg_1",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Rainy, 12°C.", "annotations": []}],
    },
]


async def _fill_sqlite_store(path: Path) -> None:
    first = SQLiteSession("chat-1", str(path))
    second = SQLiteSession("chat-2", str(path))
    try:
        await first.add_items(CONVERSATION)
        await second.add_items([{"role": "user", "content": "other chat"}])
    finally:
        first.close()
        second.close()


async def test_import_sqlite_store_is_lossless_and_idempotent(
    ledger: Ledger, tmp_path: Path
) -> None:
    store = tmp_path / "sdk.db"
    await _fill_sqlite_store(store)

    report = await import_sdk_store(
        ledger.service, str(store), user_id="u1", agent_name="Assistant", chunk_size=3
    )
    assert (report.sessions, report.items, report.unreadable) == (2, 5, 0)
    session = ledger.agent_session("chat-1", user_id="u1")
    assert await session.get_items() == CONVERSATION
    assert await ledger.agent_session("chat-2", user_id="u1").get_items() == [
        {"role": "user", "content": "other chat"}
    ]
    record = await ledger.service.get_session(session.ledger_session_id, user_id="u1")
    assert record is not None
    assert record.agent_name == "Assistant"

    again = await import_sdk_store(
        ledger.service, str(store), user_id="u1", agent_name="Assistant", chunk_size=3
    )
    assert again.items == 0
    assert len(await session.get_items()) == len(CONVERSATION)

    grown = SQLiteSession("chat-1", str(store))
    try:
        await grown.add_items([{"role": "user", "content": "and tomorrow?"}])
    finally:
        grown.close()
    with sqlite3.connect(store) as raw:
        raw.execute(
            "INSERT INTO agent_messages (session_id, message_data) VALUES ('chat-1', '{broken')"
        )
    third = await import_sdk_store(ledger.service, str(store), user_id="u1", agent_name="Assistant")
    assert (third.items, third.unreadable) == (1, 1)
    assert (await session.get_items())[-1] == {"role": "user", "content": "and tomorrow?"}
    assert len(await session.get_items()) == len(CONVERSATION) + 1


@pytest.fixture
async def sqlalchemy_store() -> AsyncIterator[str]:
    """An SDK SQLAlchemySession store in its own PostgreSQL database."""
    name = await create_pg_database()
    url = pg_url(name).replace("postgresql://", "postgresql+asyncpg://")
    engine = create_async_engine(url)
    try:
        store = SQLAlchemySession("ticket-7", engine=engine, create_tables=True)
        await store.add_items(CONVERSATION)
        yield url
    finally:
        await engine.dispose()
        await drop_pg_database(name)


async def test_import_sqlalchemy_session_tables(ledger: Ledger, sqlalchemy_store: str) -> None:
    report = await import_sdk_store(
        ledger.service, sqlalchemy_store, user_id="support", agent_name="Helpdesk"
    )
    assert (report.sessions, report.items) == (1, 4)
    assert await ledger.agent_session("ticket-7", user_id="support").get_items() == CONVERSATION


def test_cli_import(database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "sdk.db"
    run_sync(_fill_sqlite_store(store))
    code = main(["--database-url", database_url, "import", str(store), "--user", "u9"])
    assert code == 0
    assert "imported 5 new items into 2 sessions for user 'u9'" in capsys.readouterr().out
    assert main(["--database-url", database_url, "import", str(store), "--user", "u9"]) == 0
    assert "imported 0 new items" in capsys.readouterr().out
    bad = main(
        [
            "--database-url",
            database_url,
            "import",
            str(store),
            "--user",
            "u9",
            "--messages-table",
            "x; drop table y",
        ]
    )
    assert bad == 1
    assert "not a plain SQL table name" in capsys.readouterr().err


def test_an_sdk_session_on_another_users_id_is_left_out_and_the_rest_imported(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = "0b0e7c9e-9d1f-4c43-9b2e-8f7d6a5c4b3a"

    async def fill() -> None:
        store = SQLiteSession(taken, str(tmp_path / "sdk.db"))
        plain = SQLiteSession("plain", str(tmp_path / "sdk.db"))
        try:
            await store.add_items([{"role": "user", "content": "on a taken id"}])
            await plain.add_items([{"role": "user", "content": "plain"}])
        finally:
            store.close()
            plain.close()

    async def squat() -> None:
        async with Ledger.from_url(database_url) as ledger:
            await ledger.service.create_session("mallory", "A", session_id=taken)

    run_sync(fill())
    run_sync(squat())
    code = main(
        ["--database-url", database_url, "import", str(tmp_path / "sdk.db"), "--user", "u9"]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "imported 1 new items into 1 sessions" in captured.out
    assert f"SDK session '{taken}' was not imported" in captured.err
    assert "the id is in use" in captured.err
    assert "create it with create_session" not in captured.err

    async def check() -> None:
        async with Ledger.from_url(database_url) as ledger:
            assert await ledger.service.get_items(taken, user_id="mallory") == []
            memory = ledger.agent_session("plain", user_id="u9", agent_name="A")
            assert await memory.get_items() == [{"role": "user", "content": "plain"}]

    run_sync(check())
