"""agentledger's Alembic history on PostgreSQL and SQLite.

Proves what docs/migrations.md promises: a single head on the ``agentledger`` branch;
upgrade from an empty database, idempotently, into agentledger's own version table; downgrade to
base and up again with data present; models and revisions agree (autogenerate finds no diff);
the repository-root ``alembic.ini`` works from a checkout; a database that is not at head fails
fast with the fix in the message; a host's own ``alembic_version`` is never touched.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    DefaultClause,
    Dialect,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    String,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import CreateTable

from agentledger import Ledger, LedgerError, LedgerSettings, SchemaNotReadyError, Usage
from agentledger.config import normalize_url
from agentledger.db.models import NAMING_CONVENTION, OWNED_TABLES, metadata
from agentledger.schema.alembic import (
    BRANCH_LABEL,
    HOST_VERSION_TABLE,
    VERSION_TABLE,
    alembic_config,
    head_revision,
    include_object,
    migrations_path,
)
from tests.support.processes import finished

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAD = head_revision()
#: Statements that change a database; a no-op upgrade must not run any of them.
WRITES = ("CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE")


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
async def empty_ledger(empty_database_url: str) -> AsyncIterator[Ledger]:
    """A Ledger on a fresh, never-migrated database (disposed before the database is dropped)."""
    opened = Ledger.from_url(empty_database_url)
    try:
        yield opened
    finally:
        await opened.dispose()


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    return set(names)


async def version_rows(engine: AsyncEngine, table: str) -> list[str]:
    async with engine.connect() as connection:
        result = await connection.execute(text(f"SELECT version_num FROM {table}"))
        return sorted(str(value) for value in result.scalars())


async def create_host_version_table(engine: AsyncEngine, revision: str) -> None:
    """What a host application's own Alembic leaves behind: ``alembic_version`` with its head."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                f"CREATE TABLE {HOST_VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"
            )
        )
        await connection.execute(
            text(f"INSERT INTO {HOST_VERSION_TABLE} (version_num) VALUES (:rev)"), {"rev": revision}
        )


def diff_against(connection: Connection, target: MetaData) -> list[Any]:
    """Autogenerate's comparison of the live database with ``target``, configured like env.py.

    ``compare_type`` and ``compare_server_default`` are on for both backends: neither produces
    noise on PostgreSQL or SQLite for agentledger's tables (``test_comparison_detects_drift``
    proves the options are effective, so an empty diff means something).
    """
    context = MigrationContext.configure(
        connection,
        opts={
            "version_table": VERSION_TABLE,
            "include_object": include_object,
            "compare_type": True,
            "compare_server_default": True,
            "target_metadata": target,
        },
    )
    return list(compare_metadata(context, target))


def operation_names(diff: list[Any]) -> set[str]:
    """``add_column``, ``modify_type``, ... of a compare_metadata result (column changes nest)."""
    names: set[str] = set()
    for entry in diff:
        for change in entry if isinstance(entry, list) else [entry]:
            names.add(str(change[0]))
    return names


def cli_url(url: str, *, plain: bool) -> str:
    """``url`` as a user would write it: ``plain`` (postgresql://, sqlite://) or async-driver."""
    parsed = normalize_url(url)
    if plain:
        parsed = parsed.set(drivername=parsed.get_backend_name())
    return parsed.render_as_string(hide_password=False)


def cli_env(variable: str, url: str) -> dict[str, str]:
    """The test process's environment with only ``variable`` naming the database."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AGENTLEDGER_") and key != "DATABASE_URL"
    }
    env[variable] = url
    return env


async def alembic_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run the venv's ``alembic`` from the repository root (its alembic.ini) as a subprocess."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "alembic",
        *args,
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return await finished(process)


async def alembic_ok(*args: str, env: dict[str, str]) -> str:
    code, stdout, stderr = await alembic_cli(*args, env=env)
    assert code == 0, (
        f"alembic {' '.join(args)} exited {code}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    )
    return stdout


# -- the history -----------------------------------------------------------------------------


def test_single_head_on_the_agentledger_branch() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    heads = script.get_heads()
    assert heads == [HEAD]
    assert [rev.revision for rev in script.get_revisions(f"{BRANCH_LABEL}@head")] == heads
    # One linear history, all of it on the branch (a host folds it in via version_locations).
    bases = script.get_bases()
    assert len(bases) == 1
    revisions = list(script.walk_revisions())
    assert revisions
    for revision in revisions:
        assert BRANCH_LABEL in revision.branch_labels, revision.revision
    base = script.get_revision(bases[0])
    assert base is not None
    assert BRANCH_LABEL in base._orig_branch_labels


def test_repository_alembic_ini_uses_the_shipped_revisions() -> None:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    script = ScriptDirectory.from_config(config)
    assert Path(script.dir).resolve() == Path(migrations_path()).resolve()
    assert script.get_heads() == [HEAD]
    # No URL in the file: it comes from the environment (no passwords in files).
    assert config.get_main_option("sqlalchemy.url") is None


def pg_dialect(driver: str) -> Dialect:
    """A PostgreSQL dialect for compiling DDL only (the driver itself is not imported)."""
    return make_url(f"postgresql+{driver}://").get_dialect()()


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg2", "psycopg"])
def test_postgresql_ddl_does_not_depend_on_the_driver(driver: str) -> None:
    """A host's Alembic may run on psycopg: the same revision must create the same columns."""
    dialect = pg_dialect(driver)
    for table in metadata.sorted_tables:
        reference = str(CreateTable(table).compile(dialect=pg_dialect("asyncpg")))
        assert str(CreateTable(table).compile(dialect=dialect)) == reference
    content = metadata.tables["conversation_messages"].c.content
    assert content.type.compile(dialect=dialect) == "TEXT"


# -- upgrade, downgrade ----------------------------------------------------------------------


async def test_upgrade_from_empty_is_idempotent_and_uses_own_version_table(
    empty_ledger: Ledger,
) -> None:
    engine = empty_ledger.engine
    assert await empty_ledger.current_revisions() == ()

    await empty_ledger.upgrade()

    tables = await table_names(engine)
    assert tables >= OWNED_TABLES
    assert VERSION_TABLE in tables
    assert HOST_VERSION_TABLE not in tables
    assert await version_rows(engine, VERSION_TABLE) == [HEAD]
    assert await empty_ledger.current_revisions() == (HEAD,)
    created = await empty_ledger.service.create_session("user-1", "agent")
    await empty_ledger.service.add_message(created.id, "user", "hello")

    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        await empty_ledger.upgrade()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)

    assert statements, "the second upgrade did not even read the version table"
    writes = [s for s in statements if s.lstrip().upper().startswith(WRITES)]
    assert writes == []
    assert await table_names(engine) == tables
    assert await version_rows(engine, VERSION_TABLE) == [HEAD]
    assert await empty_ledger.current_revisions() == (HEAD,)
    stored = await empty_ledger.service.get_session(created.id)
    assert stored is not None
    assert [m.content for m in stored.messages] == ["hello"]


async def test_downgrade_to_base_and_up_again_with_data(empty_ledger: Ledger) -> None:
    service = empty_ledger.service
    engine = empty_ledger.engine
    await empty_ledger.upgrade()
    first = await service.create_session("user-1", "agent", {"topic": "migrations"})
    second = await service.create_session("user-2", "agent")
    await service.add_messages(
        first.id,
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        idempotency_key="batch-1",
    )
    await service.add_message(
        second.id,
        "assistant",
        "",
        tool_calls=[{"id": "call_1", "type": "function", "function": {"name": "f"}}],
    )
    await service.add_message(second.id, "tool", "result\x00with nul", tool_call_id="call_1")
    await service.record_usage(first.id, Usage(requests=1, input_tokens=3, total_tokens=3))
    stored = await service.get_session(first.id)
    assert stored is not None
    assert [m.seq for m in stored.messages] == [1, 2]

    await empty_ledger.downgrade("base")

    tables = await table_names(engine)
    assert tables & OWNED_TABLES == set()
    assert HOST_VERSION_TABLE not in tables
    assert await version_rows(engine, VERSION_TABLE) == []
    assert await empty_ledger.current_revisions() == ()
    with pytest.raises(SchemaNotReadyError, match="agentledger db upgrade"):
        await service.get_session(first.id)

    await empty_ledger.upgrade()

    assert await table_names(engine) >= OWNED_TABLES
    assert await empty_ledger.current_revisions() == (HEAD,)
    assert await service.get_session(first.id) is None
    again = await service.create_session("user-1", "agent")
    result = await service.add_messages(
        again.id,
        [{"role": "user", "content": "back"}, {"role": "assistant", "content": "again"}],
        idempotency_key="batch-1",
    )
    assert list(result.seqs) == [1, 2]
    reloaded = await service.get_session(again.id)
    assert reloaded is not None
    assert [m.content for m in reloaded.messages] == ["back", "again"]
    page = await service.list_user_sessions("user-1")
    assert [summary.id for summary in page] == [again.id]


# -- models and revisions agree -------------------------------------------------------------


async def test_models_and_migrations_agree(empty_ledger: Ledger) -> None:
    await empty_ledger.upgrade()
    async with empty_ledger.engine.begin() as connection:
        # A host's table in the same database: include_object keeps it out of the comparison.
        await connection.execute(text("CREATE TABLE host_orders (id INTEGER PRIMARY KEY)"))
    async with empty_ledger.engine.connect() as connection:
        diff = await connection.run_sync(diff_against, metadata)
    assert diff == []


async def test_check_constraints_and_cascades_agree(empty_ledger: Ledger) -> None:
    """What autogenerate does not compare: CHECK constraints and ON DELETE of foreign keys."""
    await empty_ledger.upgrade()

    def reflect(connection: Connection) -> dict[str, tuple[set[str], set[tuple[str, str]]]]:
        inspector = inspect(connection)
        return {
            name: (
                {str(ck["name"]) for ck in inspector.get_check_constraints(name)},
                {
                    (str(fk["name"]), str(fk["options"].get("ondelete", "")).upper())
                    for fk in inspector.get_foreign_keys(name)
                },
            )
            for name in OWNED_TABLES
        }

    async with empty_ledger.engine.connect() as connection:
        reflected = await connection.run_sync(reflect)

    expected = {
        name: (
            {str(c.name) for c in table.constraints if isinstance(c, CheckConstraint)},
            {
                (str(c.name), str(c.ondelete or "").upper())
                for c in table.constraints
                if isinstance(c, ForeignKeyConstraint)
            },
        )
        for name, table in metadata.tables.items()
    }
    assert reflected == expected
    assert any(checks for checks, _ in expected.values())
    assert any(fks for _, fks in expected.values())


async def test_comparison_detects_drift(empty_ledger: Ledger) -> None:
    """The comparison above is not vacuous: each kind of drift shows up on this backend."""
    await empty_ledger.upgrade()
    drifted = MetaData(naming_convention=NAMING_CONVENTION)
    for table in metadata.sorted_tables:
        table.to_metadata(drifted)
    sessions = drifted.tables["agent_sessions"]
    sessions.append_column(Column("extra", Integer, nullable=True))
    sessions.indexes.remove(
        next(ix for ix in sessions.indexes if ix.name == "ix_agent_sessions_updated_at")
    )
    drifted.tables["conversation_messages"].c.role.type = String(80)
    drifted.tables["session_usage"].c.requests.server_default = DefaultClause(text("1"))

    async with empty_ledger.engine.connect() as connection:
        diff = await connection.run_sync(diff_against, drifted)
    assert operation_names(diff) == {"add_column", "remove_index", "modify_type", "modify_default"}


# -- fail fast, or migrate on start ----------------------------------------------------------


async def test_database_not_at_head_fails_fast_unless_migrate_on_start(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTLEDGER_MIGRATE_ON_START", raising=False)
    strict = Ledger.from_url(empty_database_url)
    try:
        assert strict.settings.migrate_on_start is False
        with pytest.raises(SchemaNotReadyError, match="agentledger db upgrade"):
            await strict.service.create_session("user-1", "agent")
        assert await table_names(strict.engine) & (OWNED_TABLES | {VERSION_TABLE}) == set()
        assert await strict.current_revisions() == ()
    finally:
        await strict.dispose()

    settings = LedgerSettings(database_url=empty_database_url, migrate_on_start=True)
    migrating = Ledger.from_settings(settings)
    try:
        created = await migrating.service.create_session("user-1", "agent")
        assert await migrating.service.get_session(created.id) is not None
        assert await migrating.current_revisions() == (HEAD,)
    finally:
        await migrating.dispose()


# -- a host's own Alembic ---------------------------------------------------------------------


async def test_host_alembic_version_is_left_alone(empty_ledger: Ledger) -> None:
    engine = empty_ledger.engine
    await create_host_version_table(engine, "hostrev1")

    await empty_ledger.upgrade()
    assert await version_rows(engine, HOST_VERSION_TABLE) == ["hostrev1"]
    assert await version_rows(engine, VERSION_TABLE) == [HEAD]
    assert await empty_ledger.current_revisions() == (HEAD,)

    await empty_ledger.downgrade("base")
    assert HOST_VERSION_TABLE in await table_names(engine)
    assert await version_rows(engine, HOST_VERSION_TABLE) == ["hostrev1"]
    assert await version_rows(engine, VERSION_TABLE) == []
    assert await empty_ledger.current_revisions() == ()


async def test_migration_errors_are_ledger_errors(empty_ledger: Ledger) -> None:
    await empty_ledger.upgrade()
    with pytest.raises(LedgerError, match="nonexistent"):
        await empty_ledger.downgrade("nonexistent")
    with pytest.raises(LedgerError, match="nonexistent"):
        await empty_ledger.upgrade("nonexistent")
    assert await empty_ledger.current_revisions() == (HEAD,)
    assert await version_rows(empty_ledger.engine, VERSION_TABLE) == [HEAD]


# -- the alembic command line from a checkout -------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "plain"),
    [("AGENTLEDGER_DATABASE_URL", False), ("DATABASE_URL", True)],
    ids=["AGENTLEDGER_DATABASE_URL", "DATABASE_URL-plain"],
)
async def test_alembic_command_line_from_repository_root(
    empty_ledger: Ledger, empty_database_url: str, variable: str, plain: bool
) -> None:
    url = cli_url(empty_database_url, plain=plain)
    assert ("+" not in make_url(url).drivername) is plain
    env = cli_env(variable, url)
    engine = empty_ledger.engine

    assert HEAD not in await alembic_ok("current", env=env)

    await alembic_ok("upgrade", "head", env=env)
    tables = await table_names(engine)
    assert tables >= OWNED_TABLES | {VERSION_TABLE}
    assert HOST_VERSION_TABLE not in tables
    assert await version_rows(engine, VERSION_TABLE) == [HEAD]
    assert f"{HEAD} (head)" in await alembic_ok("current", env=env)
    # env.py's own autogenerate configuration finds nothing to do either.
    assert "No new upgrade operations detected" in await alembic_ok("check", env=env)

    await alembic_ok("downgrade", "base", env=env)
    assert await table_names(engine) & OWNED_TABLES == set()
    assert await version_rows(engine, VERSION_TABLE) == []
    assert HEAD not in await alembic_ok("current", env=env)


async def test_alembic_offline_sql_does_not_connect(backend: str, tmp_path: Path) -> None:
    if backend == "postgresql":
        # Nothing listens on port 1: connecting would fail.
        url = "postgresql://agentledger@127.0.0.1:1/never_created"
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'never_created.db'}"

    sql = await alembic_ok("upgrade", "head", "--sql", env=cli_env("AGENTLEDGER_DATABASE_URL", url))

    for table in sorted(OWNED_TABLES | {VERSION_TABLE}):
        assert f"CREATE TABLE {table} (" in sql
    # The version table ends at head: inserted as such, or stamped forward revision by revision.
    stamps = re.findall(
        rf"(?:INSERT INTO {VERSION_TABLE} \(version_num\) VALUES \('"
        rf"|UPDATE {VERSION_TABLE} SET version_num=')([^']+)'",
        sql,
    )
    assert stamps
    assert stamps[-1] == HEAD
    assert f"CREATE TABLE {HOST_VERSION_TABLE} " not in sql
    assert not (tmp_path / "never_created.db").exists()


async def test_a_database_migrated_by_a_newer_agentledger_says_to_install_it(
    empty_ledger: Ledger,
) -> None:
    await empty_ledger.upgrade()
    async with empty_ledger.engine.begin() as connection:
        await connection.execute(
            text(f"UPDATE {VERSION_TABLE} SET version_num = 'agentledger_9999'")
        )
    fresh = Ledger(empty_ledger.engine)  # a new process: the schema is checked again
    with pytest.raises(SchemaNotReadyError) as refused:
        await fresh.service.create_session("user-1", "agent")
    message = str(refused.value)
    assert "agentledger_9999" in message
    assert "a newer agentledger migrated this database" in message
    assert "agentledger db upgrade" not in message
    # Migrating with this version is refused with the same advice, before Alembic fails.
    with pytest.raises(SchemaNotReadyError, match="newer agentledger"):
        await fresh.upgrade()
    assert await fresh.current_revisions() == ("agentledger_9999",)


async def test_trimmed_sessions_keep_their_start_through_a_downgrade_and_upgrade(
    empty_ledger: Ledger,
) -> None:
    await empty_ledger.upgrade()
    service = empty_ledger.service
    trimmed = await service.create_session("user-1", "agent")
    await service.add_messages(
        trimmed.id, [{"role": "user", "content": f"m{n}"} for n in range(1, 7)]
    )
    emptied = await service.create_session("user-1", "agent")
    await service.add_messages(emptied.id, [{"role": "user", "content": "gone"}])
    async with empty_ledger.engine.begin() as connection:  # the front of each, trimmed
        for sid, through in ((trimmed.id, 4), (emptied.id, 1)):
            key = sid if connection.dialect.name == "postgresql" else sid.hex
            await connection.execute(
                text("DELETE FROM conversation_messages WHERE session_id = :s AND seq <= :t"),
                {"s": key, "t": through},
            )
            await connection.execute(
                text("UPDATE agent_sessions SET trimmed_seq = :t WHERE id = :s"),
                {"s": key, "t": through},
            )
    before = await service.export_session(trimmed.id)

    await empty_ledger.downgrade("agentledger_0001")
    await empty_ledger.upgrade()

    after = await service.export_session(trimmed.id)
    assert (after.trimmed_seq, after.messages) == (4, before.messages)
    page = await service.list_user_sessions("user-1")
    counts = {summary.id: summary.message_count for summary in page.sessions}
    assert counts == {trimmed.id: 2, emptied.id: 0}
    # Its own export imports again, elsewhere under a new id.
    copy = await service.import_session(after, user_id="user-1", session_id=uuid.uuid4())
    assert copy.items_added == 2
