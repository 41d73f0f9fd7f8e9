"""Logs never carry the password (any level) nor message content (INFO and above), and
``echo=True`` logs statements without their parameters."""

from __future__ import annotations

import logging

import pytest

from agentledger import Ledger
from agentledger.errors import LedgerError

CONTENT = "top-secret-message-content-4711"
PASSWORD = "s3cr3t-pa55word"


async def test_debug_and_info_logs_hold_no_password_and_info_no_content(
    database_url: str, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agentledger")
    async with Ledger.from_url(database_url) as ledger:
        svc = ledger.service
        session = await svc.create_session(user_id="u", agent_name="a")
        await svc.add_message(session.id, role="user", content=CONTENT)
        await svc.get_items(session.id)
    if backend == "postgresql":
        bad_url = database_url.replace("postgres@", f"postgres:{PASSWORD}@").replace(
            "127.0.0.1:5432", "127.0.0.1:1"
        )
        async with Ledger.from_url(bad_url) as broken:
            with pytest.raises(LedgerError) as caught:
                await broken.service.get_items(session.id)
            assert PASSWORD not in str(caught.value)
            assert PASSWORD not in repr(broken)
    for record in caplog.records:
        assert PASSWORD not in record.getMessage()
        if record.levelno >= logging.INFO:
            assert CONTENT not in record.getMessage()


async def test_echo_logs_statements_but_not_parameters(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    async with Ledger.from_url(database_url, echo=True) as ledger:
        svc = ledger.service
        session = await svc.create_session(user_id="u", agent_name="a")
        await svc.add_message(session.id, role="user", content=CONTENT)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "conversation_messages" in text  # statements are logged...
    assert CONTENT not in text  # ...their parameters are not


async def test_aiosqlite_debug_logs_carry_no_message_content(
    database_url: str, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    # aiosqlite logs each call with its arguments at DEBUG; an application that turns every
    # logger up to DEBUG must still not find message content in its logs.
    caplog.set_level(logging.DEBUG)
    async with Ledger.from_url(database_url) as ledger:
        svc = ledger.service
        session = await svc.create_session(user_id="u", agent_name="a")
        await svc.add_message(session.id, role="user", content=CONTENT)
        assert [m.content for m in (await svc.get_session(session.id)).messages] == [CONTENT]  # type: ignore[union-attr]
    assert caplog.records  # the logging was on
    for record in caplog.records:
        assert CONTENT not in record.getMessage(), (record.name, record.levelname)


def test_the_library_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("agentledger").handlers
    assert any(isinstance(handler, logging.NullHandler) for handler in handlers)
