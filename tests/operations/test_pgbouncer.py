"""agentledger behind PgBouncer in transaction mode (``pgbouncer=True``).

Through a real PgBouncer (see conftest: 4 server connections per database and user, shared by
every client): without the mode the driver's prepared statements break and the error names the
fix; with it the service, the SDK session, SQLAlchemy's path (fast path stepped aside),
row-level security's tenant setting and the ordering invariants under 32 concurrent writers all
hold. Migrations run on the direct URL; through PgBouncer they are refused with the fix.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import socket
import subprocess
import sys
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

from agentledger import (
    ConfigurationError,
    DatabaseUnavailableError,
    Ledger,
    LedgerSettings,
    SchemaNotReadyError,
)
from agentledger.testing import create_pg_database, drop_pg_database, pg_url
from agentledger.testing_pgbouncer import running_pgbouncer
from tests.conftest import run_sync
from tests.operations.conftest import BouncedDatabase, Bouncer
from tests.services import test_ordering_concurrency as ordering
from tests.support.docs import blocks, run_doc_shell

TENANT = "agentledger.user_id"


async def _busy(ledger: Ledger, *, writers: int = 16, rounds: int = 10) -> None:
    """Concurrent appends and tail reads on one session: more clients than PgBouncer has
    server connections, so each client's statements land on different ones."""
    svc = ledger.service
    session = await svc.create_session("u1", "A")

    async def work(number: int) -> None:
        for turn in range(rounds):
            await svc.add_message(session.id, "user", f"{number}-{turn}")
            await svc.get_items(session.id, limit=50)

    await asyncio.gather(*(work(number) for number in range(writers)))
    record = await svc.get_session(session.id)
    assert record is not None
    assert [m.seq for m in record.messages] == list(range(1, writers * rounds + 1))


# -- the mode's settings ----------------------------------------------------------------------


async def _named_statements(ledger: Ledger) -> int:
    async with ledger.engine.connect() as connection:
        count = await connection.scalar(text("SELECT count(*) FROM pg_prepared_statements"))
    assert isinstance(count, int)
    return count


async def test_the_mode_leaves_no_prepared_statement_on_the_server_connection(
    pg_database_url: str,
) -> None:
    """One pooled connection, straight to PostgreSQL: by default the driver keeps named
    statements on it for reuse (what breaks behind a transaction pooler); with the mode,
    none, on the fast path and SQLAlchemy's path alike."""
    counts: dict[bool, int] = {}
    for mode in (False, True):
        async with Ledger.from_url(
            pg_database_url, pgbouncer=mode, pool_size=1, max_overflow=0
        ) as ledger:
            assert ledger.settings.pgbouncer is mode
            await _busy(ledger, writers=2, rounds=3)
            await ledger.service.list_user_sessions("u1")
            counts[mode] = await _named_statements(ledger)
    assert counts[False] > 0
    assert counts[True] == 0


async def test_the_environment_turns_the_mode_on(
    monkeypatch: pytest.MonkeyPatch, pg_database_url: str
) -> None:
    monkeypatch.setenv("AGENTLEDGER_PGBOUNCER", "true")
    assert LedgerSettings().pgbouncer is True
    async with Ledger.from_url(pg_database_url) as ledger:
        assert ledger.settings.pgbouncer is True
        await _busy(ledger, writers=2, rounds=2)
        assert await _named_statements(ledger) == 0
    async with Ledger.from_url(pg_database_url, pgbouncer=False) as ledger:
        assert ledger.settings.pgbouncer is False  # the argument wins over the environment


@pytest.mark.parametrize(
    ("query", "kwargs", "names"),
    [
        ("?statement_cache_size=100", {}, "statement_cache_size=100"),
        ("", {"connect_args": {"prepared_statement_cache_size": 10}}, "prepared_statement_"),
        ("", {"connect_args": {"prepared_statement_name_func": lambda: "x"}}, "name_func"),
        ("?options=-c%20statement_timeout%3D5s", {}, "ALTER ROLE"),
    ],
)
def test_contradicting_settings_are_refused(query: str, kwargs: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names):
        Ledger.from_url(pg_url("anything") + query, pgbouncer=True, **kwargs)


def test_the_mode_is_for_postgresql_only() -> None:
    with pytest.raises(ConfigurationError, match="PostgreSQL URLs behind PgBouncer"):
        Ledger.from_url("sqlite+aiosqlite:///:memory:", pgbouncer=True)


# -- through PgBouncer ------------------------------------------------------------------------


async def test_without_the_mode_prepared_statements_break_and_the_error_names_the_fix(
    bounced: BouncedDatabase,
) -> None:
    async def busy_until_it_breaks(ledger: Ledger) -> None:
        for _attempt in range(5):
            await _busy(ledger)

    async with Ledger.from_url(bounced.url, pgbouncer=False) as ledger:
        with pytest.raises(ConfigurationError, match=r"pgbouncer=True") as caught:
            await busy_until_it_breaks(ledger)
    assert isinstance(caught.value.__cause__, asyncpg.PostgresError)
    assert caught.value.__cause__.sqlstate in ("26000", "42P05")


async def test_service_crud_through_pgbouncer(bounced: BouncedDatabase) -> None:
    async with Ledger.from_url(bounced.url, pgbouncer=True) as ledger:
        svc = ledger.service
        chat = await svc.create_session("u1", "A", metadata={"topic": "pgbouncer"})
        await svc.add_message(chat.id, "user", "hi")
        await svc.add_messages(
            chat.id,
            [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}],
            idempotency_key="turn-2",
        )
        again = await svc.add_messages(
            chat.id,
            [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}],
            idempotency_key="turn-2",
        )
        assert list(again.seqs) == [2, 3]
        record = await svc.get_session(chat.id, user_id="u1")
        assert record is not None
        assert record.metadata == {"topic": "pgbouncer"}
        assert [(m.seq, m.content) for m in record.messages] == [
            (1, "hi"),
            (2, "hello"),
            (3, "bye"),
        ]
        assert await svc.get_session(chat.id, user_id="someone else") is None
        page = await svc.list_user_sessions("u1", limit=10)
        assert [s.id for s in page.sessions] == [chat.id]
        assert (await svc.get_usage(chat.id)).requests == 0
        await _busy(ledger)
        await svc.delete_session(chat.id)
        assert await svc.get_session(chat.id) is None
        assert await svc.cleanup_sessions(older_than=timedelta(days=0)) == 1


async def test_sdk_session_through_pgbouncer(bounced: BouncedDatabase) -> None:
    async with Ledger.from_url(bounced.url, pgbouncer=True) as ledger:
        session = ledger.agent_session("support-chat", user_id="u1", agent_name="A")
        items: list[Any] = [
            {"role": "user", "content": "What is PgBouncer?"},
            {"role": "assistant", "content": "A connection pooler."},
            {"role": "user", "content": "Thanks"},
        ]
        await session.add_items(items[:1])
        await session.add_items(items[1:])
        assert await session.get_items() == items
        assert await session.get_items(limit=2) == items[1:]
        assert await session.pop_item() == items[2]
        assert await session.get_items() == items[:2]
        await session.clear_session()
        assert await session.get_items() == []
        await session.add_items(items[:1])
        assert await session.get_items() == items[:1]


async def test_sqlalchemy_path_through_pgbouncer(bounced: BouncedDatabase) -> None:
    """A statement listener (tracing) makes the fast path step aside: every statement goes
    through SQLAlchemy's asyncpg dialect, in AUTOCOMMIT for the single statements."""
    async with Ledger.from_url(bounced.url, pgbouncer=True) as ledger:
        seen: list[str] = []

        @event.listens_for(ledger.engine.sync_engine, "before_cursor_execute")
        def _traced(*args: Any) -> None:
            seen.append(args[2])

        await _busy(ledger)
        session = ledger.agent_session("traced", user_id="u1")
        await session.add_items([{"role": "user", "content": "x"}])
        assert await session.get_items() == [{"role": "user", "content": "x"}]
        assert await session.pop_item() == {"role": "user", "content": "x"}
        assert len(seen) > 16 * 10 * 2  # every append and read went through SQLAlchemy


async def test_ordering_invariants_through_pgbouncer(bounced: BouncedDatabase) -> None:
    """The suite's ordering test, as is: 32 writers on one session, 4 readers, gap-free
    contiguous order, batches in place, readers see prefixes."""
    assert ordering.WRITERS == 32
    async with Ledger.from_url(bounced.url, pgbouncer=True) as ledger:
        await ordering.test_concurrent_writers_and_readers_on_one_session(ledger)


# -- row-level security: the tenant setting stays in its transaction ------------------------


async def _probe(url: str, bouncer: Bouncer) -> list[tuple[str | None, int]]:
    """From fresh clients, one transaction on each of PgBouncer's server connections at once
    (all of them held together, so each is a different one): the tenant setting each finds,
    and the sessions it can see."""
    clients = [
        await asyncpg.connect(url, statement_cache_size=0)
        for _ in range(bouncer.pgbouncer.pool_size)
    ]
    try:
        transactions = [client.transaction() for client in clients]
        await asyncio.gather(*(transaction.start() for transaction in transactions))
        found = []
        pids = set()
        for client in clients:
            pids.add(await client.fetchval("SELECT pg_backend_pid()"))
            found.append(
                (
                    await client.fetchval("SELECT current_setting($1, true)", TENANT),
                    await client.fetchval("SELECT count(*) FROM agent_sessions"),
                )
            )
        assert len(pids) == bouncer.pgbouncer.pool_size
        await asyncio.gather(*(transaction.rollback() for transaction in transactions))
        return found
    finally:
        await asyncio.gather(*(client.close() for client in clients))


async def test_the_tenant_setting_never_leaks_to_the_next_client(
    bounced: BouncedDatabase, bouncer: Bouncer
) -> None:
    async with Ledger.from_url(bounced.direct_url) as owner:
        assert (await owner.set_row_level_security(True)).enabled
    settings = LedgerSettings(database_url=bounced.app_url, pgbouncer=True, row_level_security=True)
    async with Ledger.from_settings(settings) as app:
        assert (await app.row_level_security()).protects_role
        alice, bob = app.service.for_user("alice"), app.service.for_user("bob")
        alice_chat = await alice.create_session("alice", "A")
        bob_chat = await bob.create_session("bob", "A")

        async def tenant_work(number: int) -> None:
            mine, theirs = (alice, bob) if number % 2 else (bob, alice)
            own, other = (alice_chat, bob_chat) if number % 2 else (bob_chat, alice_chat)
            for turn in range(5):
                await mine.add_message(own.id, "user", f"{number}-{turn}")
                assert await mine.get_session(own.id) is not None
                assert await theirs.get_session(own.id) is None
                assert await mine.get_session(other.id) is None
                # The shared service names no tenant: it must see nothing, whichever server
                # connection a tenant's transaction used just before.
                assert await app.service.get_session(own.id) is None

        await asyncio.gather(*(tenant_work(number) for number in range(16)))
        sdk = app.agent_session("alice-sdk", user_id="alice")
        await sdk.add_items([{"role": "user", "content": "secret"}])
        assert await app.agent_session("alice-sdk", user_id="bob").get_items() == []

    assert await _probe(bounced.app_url, bouncer) == [("", 0)] * bouncer.pgbouncer.pool_size

    # The probe can see a leak: a session-level setting (what set_config(..., false) or SET
    # would make) stays on its server connection for whichever client comes next.
    leaker = await asyncpg.connect(bounced.app_url, statement_cache_size=0)
    try:
        await leaker.execute("SELECT set_config('agentledger.user_id', 'alice', false)")
    finally:
        await leaker.close()
    assert ("alice", 2) in await _probe(bounced.app_url, bouncer)


# -- migrations run on the direct URL -------------------------------------------------------


def _cli(*args: str, pgbouncer: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "AGENTLEDGER_PGBOUNCER": pgbouncer}
    return subprocess.run(
        [sys.executable, "-m", "agentledger", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


async def test_migrations_are_refused_through_pgbouncer_and_run_on_the_direct_url(
    bouncer: Bouncer,
) -> None:
    name = await create_pg_database()
    try:
        through = bouncer.pgbouncer.url(name)
        async with Ledger.from_url(through, pgbouncer=True) as ledger:
            for attempt in (ledger.upgrade(), ledger.downgrade("base"), ledger.adopt()):
                with pytest.raises(ConfigurationError, match="direct URL"):
                    await attempt
            with pytest.raises(SchemaNotReadyError, match="agentledger db upgrade"):
                await ledger.service.create_session("u1", "A")
        with pytest.raises(ConfigurationError, match="migrate_on_start"):
            Ledger.from_settings(
                LedgerSettings(database_url=through, pgbouncer=True, migrate_on_start=True)
            )

        refused = await asyncio.to_thread(
            _cli, "--database-url", through, "db", "upgrade", pgbouncer="true"
        )
        assert refused.returncode != 0
        assert "direct URL" in refused.stderr
        assert "AGENTLEDGER_PGBOUNCER=false agentledger --database-url" in refused.stderr

        # The documented way: on the direct URL.
        upgraded = await asyncio.to_thread(
            _cli, "--database-url", pg_url(name), "db", "upgrade", pgbouncer="false"
        )
        assert upgraded.returncode == 0, upgraded.stderr

        async with Ledger.from_url(through, pgbouncer=True) as ledger:
            await ledger.ensure_schema()
            assert (await ledger.schema_state()).at_head
            await _busy(ledger)
    finally:
        await drop_pg_database(name)


# -- the page --------------------------------------------------------------------------------


async def test_the_operations_page_runs(bounced: BouncedDatabase) -> None:
    """docs/operations.md's blocks as a reader runs them: the Python one through PgBouncer,
    the shell one (migrations) on the direct URL."""
    page = "docs/operations.md"
    ran = 0
    for index, block in enumerate(blocks(page)):
        if block.kind == "python":
            code = compile(
                block.body, f"{page}:block{index}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
            )
            result = eval(code, {"pgbouncer_url": bounced.url, "__name__": "__doc_snippet__"})
            if inspect.iscoroutine(result):
                await result
            ran += 1
        elif block.kind == "bash":
            done = await asyncio.to_thread(
                run_doc_shell, block.body, bounced.url, DIRECT_URL=bounced.direct_url
            )
            assert "(head)" in done.stdout
            ran += 1
    assert ran == 2
    async with Ledger.from_url(bounced.url, pgbouncer=True) as ledger:
        chat = ledger.agent_session("support-42", user_id="u1")
        assert len(await chat.get_items()) == 1


# -- the launcher ---------------------------------------------------------------------------


def test_the_launcher_stops_pgbouncer_when_the_block_fails() -> None:
    ports: list[int] = []

    def fail_inside() -> None:
        with running_pgbouncer() as pgbouncer:
            ports.append(pgbouncer.port)
            assert make_url(pgbouncer.url("db")).port == pgbouncer.port
            socket.create_connection((pgbouncer.host, pgbouncer.port), timeout=2).close()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", ports[0]), timeout=2)


async def test_the_poolers_own_refusals_name_the_fix_and_are_not_retryable(
    bouncer: Bouncer, bounced: BouncedDatabase
) -> None:
    # PgBouncer answers refusals with SQLSTATE 08P01, which otherwise means a lost connection
    # worth retrying: an unknown user or database must not look like a network blip.
    unknown_user = bouncer.pgbouncer.url(bounced.name, user="nobody_here")
    async with Ledger.from_url(unknown_user, pgbouncer=True) as ledger:
        with pytest.raises(DatabaseUnavailableError, match="rejected the credentials") as caught:
            await ledger.service.list_user_sessions("u1", 5)
    assert not caught.value.retryable

    missing = bouncer.pgbouncer.url(f"{bounced.name}_missing")
    async with Ledger.from_url(missing, pgbouncer=True) as ledger:
        with pytest.raises(DatabaseUnavailableError, match="database") as caught:
            await ledger.service.list_user_sessions("u1", 5)
    assert not caught.value.retryable


def test_a_statement_mode_pooler_is_refused_with_the_mode_to_use(
    bounced: BouncedDatabase,
) -> None:
    async def use(url: str) -> None:
        async with Ledger.from_url(url, pgbouncer=True) as ledger:
            chat = ledger.agent_session("statement-mode", user_id="u1")
            await chat.add_items([{"role": "user", "content": "a"}])
            await chat.pop_item()  # two statements in one transaction

    with (
        running_pgbouncer(pool_size=2, pool_mode="statement") as statement_mode,
        pytest.raises(ConfigurationError, match="pool_mode = transaction"),
    ):
        run_sync(use(statement_mode.url(bounced.name)))
