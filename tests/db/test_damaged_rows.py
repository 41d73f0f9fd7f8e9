"""A row damaged by hand never blocks its session: reads leave it out and log a warning that
names the session and seq, never the content (docs/reliability.md)."""

from __future__ import annotations

import logging
import uuid

import pytest
from sqlalchemy import text

from agentledger import Ledger
from tests.support.damage import damage_row
from tests.support.items import contents

SECRET = "damaged-row-secret-content"


async def test_a_damaged_row_is_left_out_of_every_read(
    ledger: Ledger, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    svc = ledger.service
    session = await svc.create_session(user_id="u", agent_name="a")
    await svc.add_messages(
        session.id, [{"role": "user", "content": f"m{index}"} for index in range(1, 6)]
    )
    await damage_row(ledger, session.id, 3, backend, secret=SECRET)
    caplog.set_level(logging.WARNING, logger="agentledger")

    items = await svc.get_items(session.id)
    assert [item["content"] for item in items] == ["m1", "m2", "m4", "m5"]
    # A damaged row does not count towards ``limit``: the read reaches one row further back.
    tail = await svc.get_items(session.id, limit=3)
    assert [item["content"] for item in tail] == ["m2", "m4", "m5"]
    record = await svc.get_session(session.id)
    assert record is not None
    assert [m.seq for m in record.messages] == [1, 2, 4, 5]

    sdk = ledger.agent_session(str(session.id), user_id="u")
    assert contents(await sdk.get_items()) == ["m1", "m2", "m4", "m5"]

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings
    assert all(str(session.id) in w and "seq 3" in w for w in warnings)
    assert not any(SECRET in r.getMessage() for r in caplog.records)

    # The session stays writable, and popping through the damaged row heals it.
    await svc.add_message(session.id, role="user", content="m6")
    assert (await svc.pop_item(session.id))["content"] == "m6"
    assert (await svc.pop_item(session.id))["content"] == "m5"
    assert (await svc.pop_item(session.id))["content"] == "m4"
    assert await svc.pop_item(session.id) is None  # the damaged one: removed, reported
    assert (await svc.pop_item(session.id))["content"] == "m2"
    assert [item["content"] for item in await svc.get_items(session.id)] == ["m1"]
    assert not any(SECRET in r.getMessage() for r in caplog.records)


async def test_damaged_session_metadata_reads_as_empty_and_never_blocks_a_listing(
    ledger: Ledger, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    svc = ledger.service
    damaged = await svc.create_session(user_id="u", agent_name="a", metadata={"k": 1})
    intact = await svc.create_session(user_id="u", agent_name="a", metadata={"k": 1})
    sid: str | uuid.UUID
    if backend == "sqlite":
        statement = "UPDATE agent_sessions SET metadata = :bad WHERE id = :sid"
        bad, sid = "{not json " + SECRET, damaged.id.hex
    else:
        statement = "UPDATE agent_sessions SET metadata = CAST(:bad AS json) WHERE id = :sid"
        bad, sid = "[" * 5_000 + f'"{SECRET}"' + "]" * 5_000, damaged.id
    async with ledger.engine.begin() as connection:
        await connection.execute(text(statement), {"bad": bad, "sid": sid})
    caplog.set_level(logging.WARNING, logger="agentledger")

    record = await svc.get_session(damaged.id)
    assert record is not None
    assert record.metadata == {}
    page = await svc.list_user_sessions("u")
    assert {summary.id: summary.metadata for summary in page.sessions} == {
        damaged.id: {},
        intact.id: {"k": 1},
    }
    filtered = await svc.list_user_sessions("u", metadata={"k": 1})
    assert [summary.id for summary in filtered.sessions] == [intact.id]

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(damaged.id) in warning for warning in warnings)
    assert not any(SECRET in r.getMessage() for r in caplog.records)

    # Setting metadata again repairs it.
    await svc.update_metadata(damaged.id, {"k": 2})
    repaired = await svc.get_session(damaged.id)
    assert repaired is not None
    assert repaired.metadata == {"k": 2}
