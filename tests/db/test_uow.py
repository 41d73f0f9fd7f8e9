"""The transaction seam: UnitOfWork, and the service inside a host's transaction (``using``).

agentledger never commits, rolls back or closes a transaction it did not open: inside a host's
AsyncSession or AsyncConnection each operation runs in a SAVEPOINT, the host's commit makes it
durable, the host's rollback discards it, and a failed operation leaves the host's own work
(and its transaction) intact.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from agentledger import (
    InvalidInputError,
    Ledger,
    LedgerError,
    SessionNotFoundError,
    SessionService,
    UnitOfWork,
)

INSERT_NOTE = text("INSERT INTO host_notes (body) VALUES (:body)")


@pytest.fixture
async def host_ledger(ledger: Ledger) -> Ledger:
    """The ledger's database with a table of the host application's own."""
    async with ledger.engine.begin() as connection:
        await connection.execute(
            text("CREATE TABLE host_notes (id INTEGER PRIMARY KEY, body VARCHAR(100) NOT NULL)")
            if ledger.engine.dialect.name == "sqlite"
            else text("CREATE TABLE host_notes (id SERIAL PRIMARY KEY, body VARCHAR(100) NOT NULL)")
        )
    return ledger


async def notes(ledger: Ledger) -> list[str]:
    """The host's rows, read on a separate connection (committed data only)."""
    async with ledger.engine.connect() as connection:
        result = await connection.execute(text("SELECT body FROM host_notes ORDER BY id"))
        return [row[0] for row in result]


async def stored_contents(ledger: Ledger, session_id: uuid.UUID) -> list[str] | None:
    """What a separate connection sees of the session (None: no such session)."""
    record = await ledger.service.get_session(session_id)
    return None if record is None else [m.content for m in record.messages]


# -- UnitOfWork --------------------------------------------------------------------------------


async def test_unit_of_work_without_commit_rolls_back(ledger: Ledger) -> None:
    session_id = uuid.uuid4()
    async with ledger.unit_of_work() as uow:
        await uow.sessions.create(
            session_id=session_id, user_id="u1", agent_name="A", metadata={}, now=datetime.now(UTC)
        )
        assert await uow.sessions.owner_of(session_id) == "u1"  # visible inside
    assert await ledger.service.get_session(session_id) is None


async def test_unit_of_work_rolls_back_on_exception(ledger: Ledger) -> None:
    session_id = uuid.uuid4()

    async def fail_after_writing() -> None:
        async with ledger.unit_of_work() as uow:
            await uow.sessions.create(
                session_id=session_id,
                user_id="u1",
                agent_name="A",
                metadata={},
                now=datetime.now(UTC),
            )
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fail_after_writing()
    assert await ledger.service.get_session(session_id) is None


async def test_unit_of_work_commit_persists(ledger: Ledger) -> None:
    session_id = uuid.uuid4()
    async with ledger.unit_of_work() as uow:
        await uow.sessions.create(
            session_id=session_id, user_id="u1", agent_name="A", metadata={}, now=datetime.now(UTC)
        )
        await uow.commit()
    record = await ledger.service.get_session(session_id)
    assert record is not None
    assert record.user_id == "u1"


async def test_service_runs_on_any_unit_of_work_factory(ledger: Ledger) -> None:
    """The service depends only on a factory: a counting wrapper sees every unit of work."""
    opened: list[bool] = []

    def factory(*, autocommit: bool = False, tenant: str | None = None) -> UnitOfWork:
        opened.append(autocommit)
        return ledger.unit_of_work(autocommit=autocommit, tenant=tenant)

    svc = SessionService(factory)
    session = await svc.create_session("u1", "A")
    await svc.add_message(session.id, "user", "hi")
    assert len(opened) == 2
    assert await stored_contents(ledger, session.id) == ["hi"]


# -- using(AsyncSession) -----------------------------------------------------------------------


async def test_host_session_commit_persists_both(host_ledger: Ledger) -> None:
    ledger = host_ledger
    maker = async_sessionmaker(ledger.engine, expire_on_commit=False)
    async with maker() as host, host.begin():
        await host.execute(INSERT_NOTE, {"body": "host write"})
        chat = ledger.service.using(host)
        session = await chat.create_session("u1", "A")
        await chat.add_message(session.id, "user", "hello")
        await chat.add_messages(session.id, [{"role": "assistant", "content": "hi there"}])
        # Inside the host's transaction the writes are visible to the host...
        inside = await chat.get_session(session.id)
        assert inside is not None
        assert [m.content for m in inside.messages] == ["hello", "hi there"]
        # ...and the host's transaction is still the host's to finish.
        assert host.in_transaction()
    assert await notes(ledger) == ["host write"]
    assert await stored_contents(ledger, session.id) == ["hello", "hi there"]


async def test_host_session_rollback_discards_both(host_ledger: Ledger) -> None:
    ledger = host_ledger
    maker = async_sessionmaker(ledger.engine, expire_on_commit=False)
    async with maker() as host:
        await host.execute(INSERT_NOTE, {"body": "host write"})
        chat = ledger.service.using(host)
        session = await chat.create_session("u1", "A")
        await chat.add_message(session.id, "user", "hello")
        await host.rollback()
    assert await notes(ledger) == []
    assert await stored_contents(ledger, session.id) is None


async def test_agentledger_never_commits_the_host_transaction(host_ledger: Ledger) -> None:
    ledger = host_ledger
    maker = async_sessionmaker(ledger.engine, expire_on_commit=False)
    async with maker() as host:
        await host.execute(INSERT_NOTE, {"body": "pending"})
        chat = ledger.service.using(host)
        session = await chat.create_session("u1", "A")
        await chat.add_message(session.id, "user", "hello")
        await chat.delete_session(uuid.uuid4())
        assert await chat.list_user_sessions("u1") is not None

        assert host.in_transaction()
        # Another connection sees none of it until the host commits.
        assert await stored_contents(ledger, session.id) is None
        assert await notes(ledger) == []

        await host.commit()
    assert await stored_contents(ledger, session.id) == ["hello"]
    assert await notes(ledger) == ["pending"]


async def test_failed_operation_keeps_the_hosts_earlier_writes(host_ledger: Ledger) -> None:
    ledger = host_ledger
    existing = await ledger.service.create_session("u1", "A")
    maker = async_sessionmaker(ledger.engine, expire_on_commit=False)
    async with maker() as host:
        await host.execute(INSERT_NOTE, {"body": "before"})
        chat = ledger.service.using(host)
        session = await chat.create_session("u1", "A")
        await chat.add_message(session.id, "user", "kept")

        # Refused before any statement runs.
        with pytest.raises(InvalidInputError):
            await chat.add_messages(
                session.id,
                [{"role": "user", "content": "ok"}, {"role": "bogus", "content": "x"}],
            )
        # Refused by the database: without a SAVEPOINT PostgreSQL would abort the host's
        # whole transaction here.
        with pytest.raises(LedgerError):
            await chat.create_session("u1", "A", session_id=existing.id)
        # Refused after a statement ran (missing session).
        with pytest.raises(SessionNotFoundError):
            await chat.add_message(uuid.uuid4(), "user", "nowhere")

        assert host.in_transaction()
        await host.execute(INSERT_NOTE, {"body": "after"})
        await chat.add_message(session.id, "assistant", "still works")
        await host.commit()

    assert await notes(ledger) == ["before", "after"]
    assert await stored_contents(ledger, session.id) == ["kept", "still works"]
    assert await stored_contents(ledger, existing.id) == []


# -- using(AsyncConnection) --------------------------------------------------------------------


async def _connection_work(ledger: Ledger, connection: AsyncConnection) -> uuid.UUID:
    await connection.execute(INSERT_NOTE, {"body": "host write"})
    chat = ledger.service.using(connection)
    session = await chat.create_session("u1", "A")
    await chat.add_message(session.id, "user", "hello")
    with pytest.raises(InvalidInputError):
        await chat.add_message(session.id, "user", "\ud800")
    with pytest.raises(LedgerError):
        await chat.create_session("u1", "A", session_id=session.id)  # duplicate key
    await chat.add_messages(session.id, [{"role": "assistant", "content": "hi"}])
    assert connection.in_transaction()
    assert await stored_contents(ledger, session.id) is None  # not committed yet
    return session.id


async def test_host_connection_commit_persists_both(host_ledger: Ledger) -> None:
    ledger = host_ledger
    async with ledger.engine.connect() as connection:
        await connection.begin()
        session_id = await _connection_work(ledger, connection)
        await connection.execute(INSERT_NOTE, {"body": "after failures"})
        await connection.commit()
    assert await notes(ledger) == ["host write", "after failures"]
    assert await stored_contents(ledger, session_id) == ["hello", "hi"]


async def test_host_connection_rollback_discards_both(host_ledger: Ledger) -> None:
    ledger = host_ledger
    async with ledger.engine.connect() as connection:
        await connection.begin()
        session_id = await _connection_work(ledger, connection)
        await connection.rollback()
    assert await notes(ledger) == []
    assert await stored_contents(ledger, session_id) is None


async def test_using_refuses_other_objects(ledger: Ledger) -> None:
    with pytest.raises(TypeError, match="AsyncSession or an AsyncConnection"):
        ledger.service.using(ledger.engine)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ledger.service.using(AsyncSession)  # type: ignore[arg-type]
