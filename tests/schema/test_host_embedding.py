"""A host application embedding agentledger: its transactions, its foreign keys, its Alembic.

* ``service.using(...)`` joins the host's transaction whatever state its connection is in
  (fresh, begun, autobegun) and for a borrowed ``AsyncSession``: the host's rollback discards
  agentledger's writes, its commit keeps them; agentledger never commits by itself.
* A host table whose foreign key to ``agent_sessions`` has no ``ON DELETE``: ``delete_session``
  raises :class:`SessionReferencedError` naming the table and the key; cleanup, retention and
  erasure delete everything else and report the sessions it kept (as does the CLI, exit 1).
* A host ``env.py`` that upgrades agentledger first and then runs its own revisions, in one
  ``alembic upgrade head``.
* agentledger's revisions inside the host's Alembic history: the schema check and
  ``agentledger db current`` see where they are and advise ``alembic upgrade heads``.
* ``agentledger db downgrade base`` refused by a host's foreign key reports the server's words.
* ``ensure_schema`` fails fast on a database that was never migrated.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from agentledger import Ledger, SessionService
from agentledger.cli import main
from agentledger.db.models import OWNED_TABLES
from agentledger.domain.records import BlockedSession
from agentledger.errors import SchemaNotReadyError, SessionReferencedError
from agentledger.schema.alembic import (
    HOST_VERSION_TABLE,
    VERSION_TABLE,
    head_revision,
    known_revisions,
)
from tests.conftest import run_sync
from tests.schema.test_host_alembic import alembic as run_alembic
from tests.schema.test_host_alembic import (
    host_env,
    make_project,
    open_engine,
    table_names,
    version_rows,
)
from tests.support.lifecycle import _sid, count_rows
from tests.support.results import returned
from tests.support.revisions import before_head

HEAD = head_revision()
#: The revision before head.
EARLIER = before_head()
HOST_INI_ENV = "AGENTLEDGER_HOST_ALEMBIC_INI"
TABLE = "tickets"
CONSTRAINT = "fk_tickets_session"
LONG_AGO = datetime.now(UTC) - timedelta(days=90)
#: Five sessions of user "u", ids in the order their times are (keyset order either way).
SESSION_IDS = [uuid.UUID(f"00000000-0000-4000-8000-{n:012d}") for n in range(1, 6)]
#: Referenced by tickets: with batches of two, each shares its batch with a deletable session.
REFERENCED = [SESSION_IDS[0], SESSION_IDS[3]]
UNREFERENCED = [sid for sid in SESSION_IDS if sid not in REFERENCED]


def cli(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    code = main(["--database-url", url, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- 1. agentledger inside the host's transaction ------------------------------------------------

HOST_STATES = ("fresh", "begun", "autobegun")


async def bring_to(connection: AsyncConnection, state: str) -> None:
    """The host's connection as it may be when handed to ``using()``."""
    if state == "begun":
        await connection.begin()
    elif state == "autobegun":
        await connection.execute(text("SELECT 1"))
        assert connection.in_transaction()
    else:
        assert not connection.in_transaction()


async def write_through(service: SessionService) -> uuid.UUID:
    created = await service.create_session("u1", "support")
    await service.add_message(created.id, role="user", content="The printer is on fire")
    await service.add_message(created.id, role="assistant", content="Stay calm")
    return created.id


async def assert_absent(ledger: Ledger, session_id: uuid.UUID) -> None:
    assert await ledger.service.get_session(session_id) is None
    assert await count_rows(ledger, "conversation_messages", session_id) == 0


async def assert_stored(ledger: Ledger, session_id: uuid.UUID) -> None:
    record = await ledger.service.get_session(session_id)
    assert record is not None
    assert [m.content for m in record.messages] == ["The printer is on fire", "Stay calm"]


@pytest.mark.parametrize("engine_kind", ["ledger", "host"])
@pytest.mark.parametrize("state", HOST_STATES)
async def test_using_a_host_connection_joins_its_transaction(
    ledger: Ledger, database_url: str, state: str, engine_kind: str
) -> None:
    # The host's own engine (configure_sqlite on SQLite), or the ledger's.
    engine: AsyncEngine = ledger.engine if engine_kind == "ledger" else open_engine(database_url)
    try:
        # The host rolls back: nothing of agentledger's writes is left.
        async with engine.connect() as connection:
            await bring_to(connection, state)
            discarded = await write_through(ledger.service.using(connection))
            assert connection.in_transaction()  # still the host's, still open
            await assert_absent(ledger, discarded)  # agentledger committed nothing itself
            await connection.rollback()
        await assert_absent(ledger, discarded)

        # The host commits: everything is there.
        async with engine.connect() as connection:
            await bring_to(connection, state)
            kept = await write_through(ledger.service.using(connection))
            assert connection.in_transaction()
            await assert_absent(ledger, kept)
            await connection.commit()
        await assert_stored(ledger, kept)
    finally:
        if engine is not ledger.engine:
            await engine.dispose()


@pytest.mark.parametrize("outcome", ["rollback", "commit"])
async def test_using_a_host_session_joins_its_transaction(ledger: Ledger, outcome: str) -> None:
    sessions = async_sessionmaker(ledger.engine, expire_on_commit=False)
    async with sessions() as db:
        session_id = await write_through(ledger.service.using(db))
        assert db.in_transaction()
        await assert_absent(ledger, session_id)
        if outcome == "commit":
            await db.commit()
        else:
            await db.rollback()
    if outcome == "commit":
        await assert_stored(ledger, session_id)
    else:
        await assert_absent(ledger, session_id)


# -- 2. a host foreign key without ON DELETE -----------------------------------------------------


async def create_tickets_table(ledger: Ledger) -> None:
    """The host's table, plain DDL, its foreign key to agent_sessions without ON DELETE."""
    postgres = ledger.engine.dialect.name == "postgresql"
    id_type = "uuid" if postgres else "CHAR(32)"  # how agentledger stores session ids
    async with ledger.engine.begin() as connection:
        await connection.execute(
            text(
                f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, session_id {id_type} NOT NULL, "
                f"CONSTRAINT {CONSTRAINT} FOREIGN KEY (session_id) REFERENCES agent_sessions (id))"
            )
        )


async def add_ticket(ledger: Ledger, ticket_id: int, session_id: uuid.UUID) -> None:
    async with ledger.engine.begin() as connection:
        await connection.execute(
            text(f"INSERT INTO {TABLE} (id, session_id) VALUES (:id, :sid)"),
            {"id": ticket_id, "sid": _sid(ledger, session_id)},
        )


async def ticket_count(ledger: Ledger) -> int:
    async with ledger.engine.connect() as connection:
        return int((await connection.execute(text(f"SELECT count(*) FROM {TABLE}"))).scalar_one())


async def seed_referenced(ledger: Ledger) -> None:
    """Five idle sessions of user "u" with a message each; tickets refer to two of them."""
    await create_tickets_table(ledger)
    for position, session_id in enumerate(SESSION_IDS):
        at = LONG_AGO + timedelta(minutes=position)

        def clock(at: datetime = at) -> datetime:
            return at

        service = SessionService(ledger.unit_of_work, clock=clock)
        await service.create_session("u", "support", session_id=session_id)
        await service.add_message(session_id, role="user", content=f"message {position}")
    for ticket_id, session_id in enumerate(REFERENCED, start=1):
        await add_ticket(ledger, ticket_id, session_id)


async def assert_only_referenced_remain(ledger: Ledger) -> None:
    for session_id in REFERENCED:
        record = await ledger.service.get_session(session_id)
        assert record is not None, session_id
        assert len(record.messages) == 1
    for session_id in UNREFERENCED:
        await assert_absent(ledger, session_id)
    assert await ticket_count(ledger) == len(REFERENCED)


def expected_blocked() -> set[BlockedSession]:
    return {BlockedSession(session_id, TABLE, CONSTRAINT) for session_id in REFERENCED}


async def test_delete_session_names_the_foreign_key_that_keeps_it(ledger: Ledger) -> None:
    await create_tickets_table(ledger)
    session = await ledger.service.create_session("u", "support")
    await ledger.service.add_message(session.id, role="user", content="hello")
    await add_ticket(ledger, 1, session.id)

    with pytest.raises(SessionReferencedError) as caught:
        await ledger.service.delete_session(session.id)

    error = caught.value
    assert (error.table, error.constraint) == (TABLE, CONSTRAINT)
    assert TABLE in str(error)
    assert "ON DELETE" in str(error)
    record = await ledger.service.get_session(session.id)
    assert record is not None
    assert [m.content for m in record.messages] == ["hello"]
    assert await ticket_count(ledger) == 1

    # Once the host's row is gone, the session deletes as usual.
    async with ledger.engine.begin() as connection:
        await connection.execute(text(f"DELETE FROM {TABLE}"))
    assert await ledger.service.delete_session(session.id) is True
    await assert_absent(ledger, session.id)


async def test_delete_session_error_lists_the_session_it_kept(ledger: Ledger) -> None:
    """``SessionReferencedError.session_ids``: the sessions the foreign key kept."""
    await create_tickets_table(ledger)
    session = await ledger.service.create_session("u", "support")
    await add_ticket(ledger, 1, session.id)

    with pytest.raises(SessionReferencedError) as caught:
        await ledger.service.delete_session(session.id)

    assert caught.value.session_ids == (session.id,)
    assert await ledger.service.get_session(session.id) is not None


async def test_cleanup_skips_and_reports_referenced_sessions(ledger: Ledger) -> None:
    await seed_referenced(ledger)
    blocked: list[BlockedSession] = []

    deleted = await ledger.service.cleanup_sessions(
        timedelta(0), batch_size=2, on_blocked=blocked.append
    )

    assert deleted == len(UNREFERENCED)
    assert len(blocked) == len(REFERENCED)
    assert set(blocked) == expected_blocked()
    await assert_only_referenced_remain(ledger)


async def test_retention_skips_and_reports_referenced_sessions(ledger: Ledger) -> None:
    await seed_referenced(ledger)

    report = await ledger.service.apply_retention({"*": {"days": 0}}, batch_size=2)

    assert report.deleted_sessions == len(UNREFERENCED)
    assert report.deleted_messages == len(UNREFERENCED)
    assert len(report.blocked) == len(REFERENCED)
    assert set(report.blocked) == expected_blocked()
    assert report.totals.blocked_sessions == len(REFERENCED)
    await assert_only_referenced_remain(ledger)


async def test_erase_user_skips_and_reports_referenced_sessions(ledger: Ledger) -> None:
    await seed_referenced(ledger)

    report = await ledger.service.erase_user("u", batch_size=2)

    assert report.sessions == len(UNREFERENCED)
    assert report.messages == len(UNREFERENCED)
    assert len(report.blocked) == len(REFERENCED)
    assert set(report.blocked) == expected_blocked()
    await assert_only_referenced_remain(ledger)


async def test_dry_runs_count_what_the_real_runs_delete(ledger: Ledger) -> None:
    await seed_referenced(ledger)
    svc = ledger.service
    kept: list[BlockedSession] = []

    assert await svc.cleanup_sessions(timedelta(0), dry_run=True, on_blocked=kept.append) == 3
    assert set(kept) == expected_blocked()
    assert await svc.count_idle_sessions(timedelta(0)) == (3, 3)
    retention = await svc.apply_retention({"*": {"days": 0}}, dry_run=True)
    assert (retention.deleted_sessions, retention.deleted_messages) == (3, 3)
    assert set(retention.blocked) == expected_blocked()
    erasure = await svc.erase_user("u", dry_run=True)
    assert (erasure.sessions, erasure.messages) == (3, 3)
    assert set(erasure.blocked) == expected_blocked()

    report = await svc.erase_user("u")  # the real run agrees
    assert (report.sessions, report.messages, set(report.blocked)) == (3, 3, expected_blocked())


async def seed_url(url: str) -> None:
    async with Ledger.from_url(url) as ledger:
        await seed_referenced(ledger)


async def check_only_referenced_remain(url: str) -> None:
    async with Ledger.from_url(url) as ledger:
        await assert_only_referenced_remain(ledger)


def assert_one_blocked_line(err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("agentledger: error: "), err
    assert TABLE in lines[0], err
    assert CONSTRAINT in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (("cleanup", "--older-than", "0d", "--batch-size", "2"), "deleted 3 sessions"),
        (("erase-user", "u", "--yes", "--batch-size", "2"), "erased 3 sessions"),
    ],
)
def test_cli_reports_referenced_sessions_and_exits_1(
    database_url: str, capsys: pytest.CaptureFixture[str], command: tuple[str, ...], said: str
) -> None:
    run_sync(seed_url(database_url))

    code, out, err = cli(capsys, database_url, *command)

    assert code == 1, (out, err)
    assert said in out, out
    assert_one_blocked_line(err)
    run_sync(check_only_referenced_remain(database_url))


# -- 3. a host env.py that upgrades agentledger, then runs its own revisions ---------------------

ENV_PY_HEAD = '''\
"""The host's Alembic environment: agentledger's schema first, then the host's revisions."""

import asyncio
import os

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import agentledger.schema.alembic
from agentledger import Ledger, host_include_object
from hostapp.models import Base

'''

ENV_PY_LEDGER_UPGRADE = (
    ENV_PY_HEAD
    + """
def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_object=host_include_object,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def main() -> None:
    engine = create_async_engine(os.environ["DATABASE_URL"])
    try:
        async with engine.connect() as connection:
            await Ledger(engine).upgrade(connection=connection)
            await connection.run_sync(run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


asyncio.run(main())
"""
)

ENV_PY_SCHEMA_UPGRADE = (
    ENV_PY_HEAD
    + """
def run_migrations(connection: Connection) -> None:
    agentledger.schema.alembic.upgrade(connection)
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_object=host_include_object,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def main() -> None:
    engine = create_async_engine(os.environ["DATABASE_URL"])
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


asyncio.run(main())
"""
)

TICKETS_REVISION = '''\
"""tickets: a support ticket belongs to an agent session."""

import sqlalchemy as sa
from alembic import op

revision = "host_0001"
down_revision = None
branch_labels = {branch_labels}
depends_on = {depends_on}


def upgrade() -> None:
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column(
            "session_id",
            sa.Uuid(),
            sa.ForeignKey("agent_sessions.id", name="fk_tickets_session", ondelete="CASCADE"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_table("tickets")
'''

NOTES_REVISION = '''\
"""ticket notes (needs agentledger's head)."""

import sqlalchemy as sa
from alembic import op

revision = "host_0002"
down_revision = "host_0001"
branch_labels = None
depends_on = {depends_on}


def upgrade() -> None:
    op.create_table(
        "ticket_notes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id"), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ticket_notes")
'''


@pytest.fixture
def host_root(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    root.mkdir()
    return root


async def session_and_ticket_cascade(engine: AsyncEngine) -> None:
    """A session, a ticket referencing it; deleting the session takes the ticket along."""
    ledger = Ledger(engine)
    session = await ledger.service.create_session("u1", "support")
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO tickets (id, title, session_id) VALUES (1, 'fire', :sid)"),
            {"sid": _sid(ledger, session.id)},
        )
    assert await ledger.service.delete_session(session.id) is True
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM tickets"))).scalar() == 0


@pytest.mark.parametrize("env_py", ["ledger-upgrade", "schema-upgrade"])
async def test_host_env_py_rolls_out_both_histories_in_one_upgrade(
    empty_database_url: str, host_root: Path, env_py: str
) -> None:
    env = host_env(empty_database_url)
    project = await make_project(host_root, "own-version-table", env)
    source = ENV_PY_LEDGER_UPGRADE if env_py == "ledger-upgrade" else ENV_PY_SCHEMA_UPGRADE
    (project / "alembic" / "env.py").write_text(source)
    (project / "alembic" / "versions" / "host_0001_tickets.py").write_text(
        TICKETS_REVISION.format(branch_labels=None, depends_on=None)
    )
    engine = open_engine(empty_database_url)
    try:
        assert await table_names(engine) == set()

        await run_alembic(project, env, "upgrade", "head")  # one command, both histories

        assert await table_names(engine) >= OWNED_TABLES | {
            "tickets",
            VERSION_TABLE,
            HOST_VERSION_TABLE,
        }
        assert await version_rows(engine, VERSION_TABLE) == [HEAD]
        assert await version_rows(engine, HOST_VERSION_TABLE) == ["host_0001"]
        async with engine.connect() as connection:
            keys = await connection.run_sync(lambda sync: inspect(sync).get_foreign_keys("tickets"))
        assert [key["referred_table"] for key in keys] == ["agent_sessions"]
        assert str(keys[0]["options"].get("ondelete")).upper() == "CASCADE"
        assert await Ledger(engine).current_revisions() == (HEAD,)

        current = await run_alembic(project, env, "current")
        assert "host_0001 (head)" in current, current
        # Running it again changes nothing and still works.
        await run_alembic(project, env, "upgrade", "head")
        assert await version_rows(engine, VERSION_TABLE) == [HEAD]
        assert await version_rows(engine, HOST_VERSION_TABLE) == ["host_0001"]

        await session_and_ticket_cascade(engine)
    finally:
        await engine.dispose()


# -- 4. agentledger's revisions inside the host's history -----------------------------------------


async def ledger_works(url: str) -> None:
    async with Ledger.from_url(url) as ledger:
        assert await returned(ledger.ensure_schema()) is None
        created = await ledger.service.create_session("u9", "support")
        assert await ledger.service.get_session(created.id) is not None


async def ledger_refuses(url: str) -> str:
    async with Ledger.from_url(url) as ledger:
        with pytest.raises(SchemaNotReadyError) as caught:
            await ledger.ensure_schema()
    return str(caught.value)


async def host_version_rows(url: str) -> list[str]:
    engine = open_engine(url)
    try:
        return await version_rows(engine, HOST_VERSION_TABLE)
    finally:
        await engine.dispose()


async def build_one_history(root: Path, url: str) -> Path:
    """agentledger's revisions in the host's version_locations; the host's branch depends on
    ``EARLIER`` (host_0001) and on agentledger's head (host_0002); everything applied."""
    env = host_env(url)
    project = await make_project(root, "one-history", env)
    versions = project / "alembic" / "versions"
    (versions / "host_0001_tickets.py").write_text(
        TICKETS_REVISION.format(branch_labels=("hostapp",), depends_on=repr(EARLIER))
    )
    (versions / "host_0002_notes.py").write_text(NOTES_REVISION.format(depends_on=repr(HEAD)))
    await run_alembic(project, env, "upgrade", "heads")
    return project


def assert_at_head(output: str) -> None:
    """``agentledger_0004 (head)``, possibly with a note that it was inferred from the tables."""
    line = output.strip()
    assert line.startswith(f"{HEAD} "), output
    assert line.endswith("(head)"), output


def assert_advises_host_upgrade(output: str) -> None:
    assert "alembic upgrade heads" in output, output
    assert "run `agentledger db upgrade`" not in output, output


def test_schema_state_inside_the_host_history(
    empty_database_url: str,
    host_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = empty_database_url
    monkeypatch.delenv(HOST_INI_ENV, raising=False)
    project = run_sync(build_one_history(host_root, url))
    ini = str(project / "alembic.ini")
    # Alembic lists only the host's head: agentledger's head is implied by its dependency.
    assert run_sync(host_version_rows(url)) == ["host_0002"]

    # At head, without AGENTLEDGER_HOST_ALEMBIC_INI and with it.
    for setting in (None, ini):
        if setting is None:
            monkeypatch.delenv(HOST_INI_ENV, raising=False)
        else:
            monkeypatch.setenv(HOST_INI_ENV, setting)
        run_sync(ledger_works(url))
        code, out, err = cli(capsys, url, "db", "current")
        assert code == 0, (out, err)
        assert_at_head(out)
        code, out, err = cli(capsys, url, "db", "current", "--check")
        assert code == 0, (out, err)
        assert_at_head(out)

    # agentledger's branch of the host history back at an earlier revision.
    monkeypatch.delenv(HOST_INI_ENV, raising=False)
    run_sync(run_alembic(project, host_env(url), "downgrade", EARLIER))
    assert run_sync(host_version_rows(url)) == ["host_0001"]

    for setting in (None, ini):
        if setting is None:
            monkeypatch.delenv(HOST_INI_ENV, raising=False)
        else:
            monkeypatch.setenv(HOST_INI_ENV, setting)
        code, out, err = cli(capsys, url, "db", "current")
        assert code == 0, (out, err)
        assert out.startswith(EARLIER), out
        assert not out.strip().endswith("(head)"), out
        assert_advises_host_upgrade(out)
        code, out, err = cli(capsys, url, "db", "current", "--check")
        assert code == 1, (out, err)
        assert_advises_host_upgrade(out)

    # agentledger's own history commands must not migrate a database whose revisions run in
    # the host's history: they refuse, pointing at the host's Alembic, and change nothing.
    for command in (("db", "upgrade"), ("db", "downgrade", "base")):
        code, out, err = cli(capsys, url, *command)
        assert code == 1, (command, out, err)
        assert "must not migrate this database" in err, err
        assert "alembic upgrade heads" in err, err
        assert run_sync(host_version_rows(url)) == ["host_0001"]
        assert_advises_host_upgrade(run_sync(ledger_refuses(url)))


# -- 5. a downgrade refused by the server says why ------------------------------------------------


async def add_host_table(url: str) -> None:
    async with Ledger.from_url(url) as ledger:
        await create_tickets_table(ledger)
        session = await ledger.service.create_session("u", "support")
        await add_ticket(ledger, 1, session.id)


async def revisions_of(url: str) -> tuple[str, ...]:
    async with Ledger.from_url(url) as ledger:
        return await ledger.current_revisions()


def test_db_downgrade_refused_while_a_host_table_refers_to_ours(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # On PostgreSQL the server would refuse the DROP; on SQLite (foreign keys off while
    # migrating) it would succeed and leave tickets pointing at nothing. Both refuse first.
    run_sync(add_host_table(database_url))

    code, out, err = cli(capsys, database_url, "db", "downgrade", "base")

    assert code == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"{TABLE}.{CONSTRAINT} -> agent_sessions" in err, err
    assert "drop those keys" in err, err
    assert "Traceback" not in err
    # The refused downgrade left the schema and the rows as they were.
    assert run_sync(revisions_of(database_url)) == (HEAD,)
    assert OWNED_TABLES | {TABLE} <= run_sync(tables_of(database_url))
    # A relative step as deep as the history is refused too; one that keeps the tables is not.
    code, _, err = cli(capsys, database_url, "db", "downgrade", f"-{len(known_revisions())}")
    assert code == 1, err
    assert "drop those keys" in err
    code, _, err = cli(capsys, database_url, "db", "downgrade", "-1")
    assert code == 0, err
    assert run_sync(revisions_of(database_url)) == (before_head(),)
    assert cli(capsys, database_url, "db", "upgrade")[0] == 0


async def tables_of(url: str) -> set[str]:
    engine = open_engine(url)
    try:
        return await table_names(engine)
    finally:
        await engine.dispose()


# -- 6. ensure_schema ----------------------------------------------------------------------------


async def test_ensure_schema_refuses_a_database_never_migrated(empty_database_url: str) -> None:
    async with Ledger.from_url(empty_database_url) as ledger:
        with pytest.raises(SchemaNotReadyError) as caught:
            await ledger.ensure_schema()
    assert "agentledger db upgrade" in str(caught.value)


async def test_ensure_schema_passes_at_head(ledger: Ledger) -> None:
    assert await returned(ledger.ensure_schema()) is None
