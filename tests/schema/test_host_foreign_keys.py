"""A host's tables that refer to agentledger's, and a host's transaction agentledger joins.

Regression tests of the second hostile review, on both backends: the foreign key that keeps a
session is named even with several candidate tables (SQLite does not say which), a key on
messages keeps a trim from cutting them, a deferrable key is named at the delete in
agentledger's transactions and left to the host's commit in the host's, the host's own
pending changes that cannot be flushed are not blamed on agentledger, a schema step down
keeps the messages on SQLite, and ``using()`` refuses a database that was never migrated.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Integer, String, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from agentledger import (
    Ledger,
    LedgerDatabaseError,
    SchemaNotReadyError,
    SessionReferencedError,
    SessionService,
)
from agentledger.domain.records import BlockedSession
from tests.support.lifecycle import _sid

LONG_AGO = datetime.now(UTC) - timedelta(days=90)


def id_type(ledger: Ledger) -> str:
    """How agentledger stores session ids on this backend."""
    return "uuid" if ledger.engine.dialect.name == "postgresql" else "CHAR(32)"


async def execute(ledger: Ledger, *statements: str, **values: object) -> None:
    async with ledger.engine.begin() as connection:
        for statement in statements:
            await connection.execute(text(statement), values)


async def session_with_messages(ledger: Ledger, count: int, *, at: datetime) -> uuid.UUID:
    service = SessionService(ledger.unit_of_work, clock=lambda: at)
    created = await service.create_session("u", "support")
    await service.add_messages(
        created.id, [{"role": "user", "content": f"m{n}"} for n in range(1, count + 1)]
    )
    return created.id


async def contents(ledger: Ledger, sid: uuid.UUID) -> list[str]:
    record = await ledger.service.get_session(sid)
    assert record is not None
    return [message.content for message in record.messages]


# -- naming the key --------------------------------------------------------------------------


async def test_the_key_named_is_the_one_whose_table_holds_a_row(ledger: Ledger) -> None:
    kind = id_type(ledger)
    await execute(
        ledger,
        f"CREATE TABLE invoices (id INTEGER PRIMARY KEY, session_id {kind} NOT NULL, "
        "CONSTRAINT fk_invoices_session FOREIGN KEY (session_id) REFERENCES agent_sessions (id))",
        f"CREATE TABLE tickets (id INTEGER PRIMARY KEY, session_id {kind} NOT NULL, "
        "CONSTRAINT fk_tickets_session FOREIGN KEY (session_id) REFERENCES agent_sessions (id))",
    )
    session = await session_with_messages(ledger, 1, at=LONG_AGO)
    await execute(ledger, "INSERT INTO tickets VALUES (1, :sid)", sid=_sid(ledger, session))

    with pytest.raises(SessionReferencedError) as caught:
        await ledger.service.delete_session(session)

    assert (caught.value.table, caught.value.constraint) == ("tickets", "fk_tickets_session")
    assert "tickets" in str(caught.value)
    assert "invoices" not in str(caught.value)
    assert await contents(ledger, session) == ["m1"]


# -- a key on messages -------------------------------------------------------------------------


async def create_citations(ledger: Ledger) -> None:
    await execute(
        ledger,
        f"CREATE TABLE citations (id INTEGER PRIMARY KEY, session_id {id_type(ledger)} NOT NULL, "
        "seq BIGINT NOT NULL, CONSTRAINT fk_citations_message FOREIGN KEY (session_id, seq) "
        "REFERENCES conversation_messages (session_id, seq))",
    )


async def cite(ledger: Ledger, sid: uuid.UUID, seq: int) -> None:
    await execute(
        ledger, "INSERT INTO citations VALUES (1, :sid, :seq)", sid=_sid(ledger, sid), seq=seq
    )


async def test_a_trim_skips_a_session_whose_messages_are_referenced(ledger: Ledger) -> None:
    await create_citations(ledger)
    cited = await session_with_messages(ledger, 3, at=LONG_AGO)
    free = await session_with_messages(ledger, 3, at=LONG_AGO + timedelta(minutes=1))
    await cite(ledger, cited, 1)

    report = await ledger.service.apply_retention({"*": {"max_messages": 1}})

    assert report.trimmed_sessions == 1
    assert report.trimmed_messages == 2
    assert report.blocked == (BlockedSession(cited, "citations", "fk_citations_message"),)
    assert await contents(ledger, cited) == ["m1", "m2", "m3"]
    assert await contents(ledger, free) == ["m3"]


async def test_deleting_a_session_whose_messages_are_referenced_names_the_key(
    ledger: Ledger,
) -> None:
    await create_citations(ledger)
    cited = await session_with_messages(ledger, 2, at=LONG_AGO)
    await cite(ledger, cited, 2)

    with pytest.raises(SessionReferencedError) as caught:
        await ledger.service.delete_session(cited)

    error = caught.value
    assert (error.table, error.constraint, error.messages) == (
        "citations",
        "fk_citations_message",
        True,
    )
    assert error.session_ids == (cited,)
    assert await contents(ledger, cited) == ["m1", "m2"]


# -- deferrable keys ---------------------------------------------------------------------------


async def create_deferred_tickets(ledger: Ledger) -> None:
    await execute(
        ledger,
        f"CREATE TABLE tickets (id INTEGER PRIMARY KEY, session_id {id_type(ledger)} NOT NULL, "
        "CONSTRAINT fk_tickets_session FOREIGN KEY (session_id) REFERENCES agent_sessions (id) "
        "DEFERRABLE INITIALLY DEFERRED)",
    )


async def test_a_deferred_key_is_named_at_the_delete(ledger: Ledger) -> None:
    await create_deferred_tickets(ledger)
    session = await session_with_messages(ledger, 1, at=LONG_AGO)
    await execute(ledger, "INSERT INTO tickets VALUES (1, :sid)", sid=_sid(ledger, session))

    with pytest.raises(SessionReferencedError) as caught:
        await ledger.service.delete_session(session)
    assert caught.value.table == "tickets"
    assert await contents(ledger, session) == ["m1"]

    # Cleanup, retention and erasure skip it, report it like any other key and delete the
    # rest (on SQLite the key refuses only at commit: the batch is redone one by one).
    other = await session_with_messages(ledger, 1, at=LONG_AGO + timedelta(minutes=1))
    blocked: list[BlockedSession] = []
    assert await ledger.service.cleanup_sessions(timedelta(0), on_blocked=blocked.append) == 1
    assert blocked == [BlockedSession(session, "tickets", "fk_tickets_session")]
    assert await ledger.service.get_session(other) is None
    third = await session_with_messages(ledger, 1, at=LONG_AGO + timedelta(minutes=2))
    report = await ledger.service.apply_retention({"*": {"days": 0}})
    assert (report.deleted_sessions, report.blocked) == (1, tuple(blocked))
    fourth = await session_with_messages(ledger, 1, at=LONG_AGO + timedelta(minutes=3))
    erased = await ledger.service.erase_user("u")
    assert (erased.sessions, erased.blocked) == (1, tuple(blocked))
    for gone in (third, fourth):
        assert await ledger.service.get_session(gone) is None
    assert await contents(ledger, session) == ["m1"]


async def test_the_hosts_transaction_keeps_its_constraint_timing(pg_database_url: str) -> None:
    # PostgreSQL only: SET CONSTRAINTS is how agentledger checks deferred keys early in its own
    # transactions, and what must not leak into the host's.
    async with Ledger.from_url(pg_database_url) as ledger:
        await create_deferred_tickets(ledger)
        unrelated = await session_with_messages(ledger, 1, at=LONG_AGO)
        planned = uuid.uuid4()
        async with ledger.engine.connect() as connection:
            await connection.begin()
            # The host's row refers to a session it creates later in the same transaction.
            await connection.execute(text("INSERT INTO tickets VALUES (1, :sid)"), {"sid": planned})
            inside = ledger.service.using(connection)
            assert await inside.delete_session(unrelated)  # no early check of the host's row
            await inside.create_session("u", "support", session_id=planned)
            await connection.commit()
        assert await ledger.service.get_session(unrelated) is None
        assert await ledger.service.get_session(planned) is not None


# -- the host's own pending changes --------------------------------------------------------------


class HostBase(DeclarativeBase):
    pass


class HostNote(HostBase):
    __tablename__ = "host_notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[str] = mapped_column(String(100))


async def test_pending_host_changes_that_cannot_be_flushed_are_named_as_the_hosts(
    ledger: Ledger,
) -> None:
    await execute(
        ledger, "CREATE TABLE host_notes (id INTEGER PRIMARY KEY, body VARCHAR(100) NOT NULL)"
    )
    sessions = async_sessionmaker(ledger.engine, expire_on_commit=False, class_=AsyncSession)
    async with sessions() as host:
        host.add(HostNote(id=1, body=None))  # NOT NULL: the flush fails
        with pytest.raises(LedgerDatabaseError) as caught:
            await ledger.service.using(host).create_session("u", "support")
        # A second call in the same failed state says the same: roll back first.
        with pytest.raises(LedgerDatabaseError, match="rollback"):
            await ledger.service.using(host).create_session("u", "support")
        await host.rollback()
    message = str(caught.value)
    assert "your session's pending changes could not be flushed" in message
    assert "nothing of agentledger's was written" in message
    assert "await session.rollback()" in message
    assert not isinstance(caught.value, SessionReferencedError)
    assert (await ledger.service.list_user_sessions("u")).sessions == ()


async def test_a_host_transaction_aborted_earlier_is_named_as_the_hosts(
    pg_database_url: str,
) -> None:
    # PostgreSQL only: SQLite has no aborted-transaction state (a failed statement leaves the
    # transaction usable).
    async with Ledger.from_url(pg_database_url) as ledger, ledger.engine.connect() as host:
        await host.begin()
        with pytest.raises(Exception):  # noqa: B017, PT011 - the host's own failure, swallowed
            await host.execute(text("SELECT 1/0"))
        with pytest.raises(LedgerDatabaseError) as caught:
            await ledger.service.using(host).create_session("u", "support")
        # A second call in the same failed state says the same: roll back first.
        with pytest.raises(LedgerDatabaseError, match="roll"):
            await ledger.service.using(host).create_session("u", "support")
        await host.rollback()
        assert "already aborted by an earlier failed statement" in str(caught.value)
        assert "your transaction" in str(caught.value)
        assert caught.value.sqlstate == "25P02"
        assert (await ledger.service.list_user_sessions("u")).sessions == ()


# -- schema ------------------------------------------------------------------------------------


async def test_one_step_down_and_up_keeps_every_message(empty_database_url: str) -> None:
    # On SQLite a step that rebuilds agent_sessions would cascade its messages away if
    # foreign keys stayed on while migrating.
    async with Ledger.from_url(empty_database_url) as ledger:
        await ledger.upgrade()
        session = await session_with_messages(ledger, 3, at=LONG_AGO)

        await ledger.downgrade("-1")
        async with ledger.engine.connect() as connection:
            count = await connection.execute(text("SELECT count(*) FROM conversation_messages"))
            assert count.scalar_one() == 3
        await ledger.upgrade()

        assert await contents(ledger, session) == ["m1", "m2", "m3"]


async def test_using_a_database_never_migrated_says_what_to_run(empty_database_url: str) -> None:
    async with Ledger.from_url(empty_database_url) as ledger, ledger.engine.connect() as connection:
        with pytest.raises(SchemaNotReadyError, match="agentledger db upgrade"):
            await ledger.service.using(connection).create_session("u", "support")
