"""Timestamps leave the library timezone-aware and in UTC, whatever the connection's TimeZone."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text

from agentledger import Ledger, SessionService

NEW_YORK = "America/New_York"


def assert_utc(value: datetime) -> None:
    assert value.tzinfo is not None, f"{value!r} is naive"
    assert value.utcoffset() == timedelta(0), f"{value!r} is not in UTC"


@pytest.fixture
def local_time_zone_new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with the process's local time zone set to New York (then restore it)."""
    monkeypatch.setenv("TZ", NEW_YORK)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
async def new_york_ledger(
    database_url: str, backend: str, local_time_zone_new_york: None
) -> AsyncIterator[Ledger]:
    """A ledger whose PostgreSQL connections run with TimeZone = America/New_York."""
    engine_kwargs: dict[str, Any] = {}
    if backend == "postgresql":
        engine_kwargs["connect_args"] = {"server_settings": {"timezone": NEW_YORK}}
    async with Ledger.from_url(database_url, **engine_kwargs) as ledger:
        yield ledger


async def test_timestamps_are_aware_utc(ledger: Ledger) -> None:
    svc = ledger.service
    before = datetime.now(UTC)
    session = await svc.create_session("u1", "A")
    message = await svc.add_message(session.id, "user", "hi")
    batch = await svc.add_messages(session.id, [{"role": "user", "content": "more"}])
    after = datetime.now(UTC)
    record = await svc.get_session(session.id)
    page = await svc.list_user_sessions("u1")
    assert record is not None

    stamps = [
        session.created_at,
        session.updated_at,
        message.created_at,
        batch.created_at,
        record.created_at,
        record.updated_at,
        page.sessions[0].created_at,
        page.sessions[0].updated_at,
        *(m.created_at for m in record.messages),
    ]
    for stamp in stamps:
        assert_utc(stamp)
        assert before <= stamp <= after
    assert record.created_at == session.created_at
    assert record.messages[0].created_at == message.created_at
    assert record.updated_at == batch.created_at == record.messages[1].created_at


async def test_timestamps_stay_utc_when_the_connection_time_zone_differs(
    new_york_ledger: Ledger, backend: str
) -> None:
    ledger = new_york_ledger
    if backend == "postgresql":
        async with ledger.engine.connect() as connection:
            zone = (await connection.execute(text("SHOW timezone"))).scalar_one()
        assert zone == NEW_YORK  # the setting really is in effect

    # Half an hour before New York switches to daylight saving time.
    instant = datetime(2024, 3, 10, 6, 30, 15, 123456, tzinfo=UTC)
    svc = SessionService(ledger.unit_of_work, clock=lambda: instant)
    session = await svc.create_session("u1", "A")
    await svc.add_message(session.id, "user", "hi")
    # A clock in another zone: stored and returned as the same instant, in UTC.
    india = instant.astimezone(timezone(timedelta(hours=5, minutes=30))) + timedelta(hours=1)
    later = SessionService(ledger.unit_of_work, clock=lambda: india)
    await later.add_messages(session.id, [{"role": "assistant", "content": "hello"}])

    record = await ledger.service.get_session(session.id)
    page = await ledger.service.list_user_sessions("u1")
    assert record is not None
    for stamp in (
        record.created_at,
        record.updated_at,
        page.sessions[0].created_at,
        page.sessions[0].updated_at,
        *(m.created_at for m in record.messages),
    ):
        assert_utc(stamp)
    assert record.created_at == instant
    assert record.messages[0].created_at == instant
    assert record.messages[1].created_at == instant + timedelta(hours=1)
    assert record.updated_at == instant + timedelta(hours=1)
    assert page.sessions[0].updated_at == instant + timedelta(hours=1)

    # The database holds the right instant, not one shifted by the zone offset.
    async with ledger.engine.connect() as connection:
        if backend == "postgresql":
            epoch = (
                await connection.execute(
                    text("SELECT extract(epoch FROM created_at) FROM agent_sessions")
                )
            ).scalar_one()
            assert float(epoch) == pytest.approx(instant.timestamp())
        else:
            stored = (
                await connection.execute(text("SELECT created_at FROM agent_sessions"))
            ).scalar_one()
            assert str(stored).startswith("2024-03-10 06:30:15")


async def test_records_are_utc_even_when_the_clock_uses_another_zone(ledger: Ledger) -> None:
    # Regression: the service handed the clock's value out unconverted (here +05:30).
    india = timezone(timedelta(hours=5, minutes=30))
    instant = datetime(2024, 7, 1, 9, 0, tzinfo=india)
    svc = SessionService(ledger.unit_of_work, clock=lambda: instant)
    session = await svc.create_session("u1", "A")
    message = await svc.add_message(session.id, "user", "hi")
    batch = await svc.add_messages(session.id, [{"role": "user", "content": "again"}])
    keyed = await svc.add_messages(session.id, [{"role": "user", "content": "k"}], "key")
    for stamp in (
        session.created_at,
        session.updated_at,
        message.created_at,
        batch.created_at,
        keyed.created_at,
    ):
        assert_utc(stamp)
        assert stamp == instant
    record = await ledger.service.get_session(session.id)
    assert record is not None
    assert record.created_at == session.created_at
    assert record.messages[0].created_at == message.created_at


async def test_a_naive_clock_is_refused_before_writing(ledger: Ledger) -> None:
    svc = SessionService(ledger.unit_of_work, clock=lambda: datetime(2024, 1, 1))
    with pytest.raises(TypeError, match="aware"):
        await svc.create_session("u1", "A")
    assert list(await ledger.service.list_user_sessions("u1")) == []
