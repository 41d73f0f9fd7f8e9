"""A host application with its own models and Alembic history embeds agentledger.

Each test builds a small host application in ``tmp_path``: a package ``hostapp`` with its own
``DeclarativeBase`` and a ``tickets`` table whose ``session_id`` references
``agent_sessions.id`` (``ON DELETE CASCADE``), and an ``alembic/`` made by ``alembic init`` whose
``env.py`` is then written to use the host's metadata and :func:`agentledger.host_include_object`.
Both histories are rolled out the two ways docs/guide-host-app.md describes, on PostgreSQL and
on SQLite, with the host's ``alembic`` command line as a subprocess:

* ``own-version-table``: ``ledger.upgrade()`` (its own version table), then the host's
  ``alembic revision --autogenerate`` / ``alembic upgrade head`` (the host's ``alembic_version``);
* ``one-history``: agentledger's revisions in the host's ``version_locations``
  (``agentledger:migrations/versions``), ``alembic upgrade heads`` moving both histories into the
  host's ``alembic_version``, and the Ledger told where the host's ``alembic.ini`` is.

Then, in this process: a session created through ``service.using(host_session)`` and a ticket
referencing it commit together, the host's relationship to ``AgentSession`` loads with
``selectinload``, and ``delete_session`` takes the ticket with it (a cascade across the two
metadatas).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import selectinload

from agentledger import (
    Ledger,
    LedgerError,
    LedgerSettings,
    configure_sqlite,
    host_include_object,
)
from agentledger.config import normalize_url
from agentledger.db.models import OWNED_TABLES
from agentledger.schema.alembic import (
    HOST_VERSION_TABLE,
    VERSION_TABLE,
    head_revision,
    versions_path,
)
from tests.support.processes import finished

HEAD = head_revision()
WAYS = ("own-version-table", "one-history")
#: Alembic operations in a revision, with the table each one works on.
TABLE_OPERATIONS = (
    r"\bop\.(?:create_table|drop_table|add_column|drop_column|alter_column|rename_table|"
    r"batch_alter_table|create_foreign_key|drop_constraint)\(\s*'(\w+)'"
)

HOST_MODELS = '''\
"""The host application's own models: a support ticket belongs to an agent session."""

from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from agentledger import AgentSession


class Base(DeclarativeBase):
    pass


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(AgentSession.id, ondelete="CASCADE"), index=True
    )
    session: Mapped[AgentSession] = relationship(AgentSession)
'''

HOST_ENV_PY = '''\
"""The host's Alembic environment: its own metadata; agentledger's tables are left alone."""

import asyncio
import os

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from agentledger import host_include_object
from hostapp.models import Base


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
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


asyncio.run(main())
'''

#: What `alembic init` writes, and what the one-history way puts in its place.
INI_SEPARATOR = "path_separator = os\n"
INI_ONE_HISTORY = """\
path_separator = newline
version_locations =
    %(here)s/alembic/versions
    agentledger:migrations/versions
"""


# -- the host project ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostapp() -> Iterator[ModuleType]:
    """The host's models imported into this process (the same source the projects get)."""
    with tempfile.TemporaryDirectory(prefix="hostapp-") as folder:
        write_package(Path(folder))
        sys.path.insert(0, folder)
        try:
            yield importlib.import_module("hostapp.models")
        finally:
            sys.path.remove(folder)
            for name in [name for name in sys.modules if name.split(".")[0] == "hostapp"]:
                del sys.modules[name]


def write_package(root: Path) -> None:
    package = root / "hostapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(HOST_MODELS)


def host_env(url: str) -> dict[str, str]:
    """This process's environment with only DATABASE_URL (async driver) naming the database."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AGENTLEDGER_") and key != "DATABASE_URL"
    }
    env["DATABASE_URL"] = async_url(url)
    return env


def async_url(url: str) -> str:
    return normalize_url(url).render_as_string(hide_password=False)


async def run_ok(*args: str | Path, cwd: Path, env: dict[str, str]) -> str:
    """Run a command as a subprocess; its stdout and stderr, after asserting it succeeded."""
    process = await asyncio.create_subprocess_exec(
        *map(str, args),
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    code, out, err = await finished(process)
    command = " ".join(map(str, args))
    assert code == 0, f"{command} exited {code}\n{out}\n{err}"
    return out + err


async def alembic(project: Path, env: dict[str, str], *args: str) -> str:
    return await run_ok(sys.executable, "-m", "alembic", *args, cwd=project, env=env)


@pytest.fixture
def project_root(tmp_path: Path) -> Iterator[Path]:
    """The folder the host project is made in; removed afterwards, pass or fail."""
    root = tmp_path / "host"
    root.mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


async def make_project(project: Path, way: str, env: dict[str, str]) -> Path:
    """The host project: its package, `alembic init`, its env.py, and for one history the ini."""
    write_package(project)
    await alembic(project, env, "init", "-t", "async", "alembic")
    (project / "alembic" / "env.py").write_text(HOST_ENV_PY)
    if way == "one-history":
        ini = project / "alembic.ini"
        source = ini.read_text()
        assert source.count(INI_SEPARATOR) == 1, "alembic init's alembic.ini has changed"
        ini.write_text(source.replace(INI_SEPARATOR, INI_ONE_HISTORY))
    return project


def new_revision(project: Path, before: set[Path]) -> Path:
    """The one revision file that appeared in the host's versions folder."""
    created = set((project / "alembic" / "versions").glob("*.py")) - before
    assert len(created) == 1, created
    return created.pop()


def revision_id(path: Path) -> str:
    found = re.search(r"^revision: str = '(\w+)'", path.read_text(), re.MULTILINE)
    assert found, path.read_text()
    return found.group(1)


def shipped_revisions() -> list[Path]:
    return sorted(Path(versions_path()).iterdir())


def upgrade_body(path: Path) -> str:
    source = path.read_text()
    return source[source.index("def upgrade()") : source.index("def downgrade()")]


def assert_creates_only_tickets(path: Path) -> None:
    """The host's first autogenerated revision touches its own table and nothing of ours."""
    source = path.read_text()
    body = upgrade_body(path)
    touched = set(re.findall(TABLE_OPERATIONS, source))
    touched |= set(re.findall(r"\bop\.(?:create|drop)_index\(\s*[^,]+,\s*'(\w+)'", source))
    touched |= set(re.findall(r"table_name='(\w+)'", source))
    assert touched == {"tickets"}, source
    assert "op.create_table('tickets'" in body, source
    # The one mention of agentledger's tables: the foreign key across the two metadatas.
    assert (
        "sa.ForeignKeyConstraint(['session_id'], ['agent_sessions.id'], ondelete='CASCADE')" in body
    ), source
    assert source.count("agent_sessions") == 1, source
    for table in [*sorted(OWNED_TABLES - {"agent_sessions"}), VERSION_TABLE, HOST_VERSION_TABLE]:
        assert table not in source, (table, source)


def assert_proposes_nothing(path: Path) -> None:
    code = [
        line.strip()
        for line in upgrade_body(path).splitlines()[1:]
        if line.strip() and not line.strip().startswith(("#", '"""'))
    ]
    assert code == ["pass"], path.read_text()


# -- the database, seen from this process ----------------------------------------------------


def open_engine(url: str) -> AsyncEngine:
    engine = create_async_engine(async_url(url))
    if engine.dialect.name == "sqlite":
        configure_sqlite(engine)  # foreign keys on: the cascade needs them
    return engine


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    return set(names)


async def version_rows(engine: AsyncEngine, table: str) -> list[str]:
    async with engine.connect() as connection:
        result = await connection.execute(text(f"SELECT version_num FROM {table}"))
        return sorted(result.scalars())


def autogenerate_diff(connection: Connection, metadata: Any, filtered: bool) -> list[Any]:
    opts = {"include_object": host_include_object} if filtered else {}
    diff: list[Any] = compare_metadata(MigrationContext.configure(connection, opts=opts), metadata)
    return diff


async def assert_host_and_ledger_work_together(
    engine: AsyncEngine, ledger: Ledger, hostapp: ModuleType
) -> None:
    ticket_class: Any = hostapp.Ticket
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    # One transaction of the host's: agentledger's rows and the host's commit together.
    async with sessions() as db:
        chat = ledger.service.using(db)
        created = await chat.create_session(user_id="u1", agent_name="support")
        await chat.add_message(created.id, role="user", content="The printer is on fire")
        db.add(ticket_class(title="Printer on fire", session_id=created.id))
        await db.commit()

    # The host's relationship to AgentSession, loaded eagerly (no lazy loads in async code).
    async with sessions() as db:
        ticket = (
            await db.execute(select(ticket_class).options(selectinload(ticket_class.session)))
        ).scalar_one()
        assert ticket.session.id == created.id
        assert (ticket.session.user_id, ticket.session.agent_name) == ("u1", "support")
    record = await ledger.service.get_session(created.id)
    assert record is not None
    assert [message.content for message in record.messages] == ["The printer is on fire"]

    # Deleting the session through agentledger cascades into the host's table.
    await ledger.service.delete_session(created.id)
    async with sessions() as db:
        assert await db.scalar(select(func.count()).select_from(ticket_class)) == 0
    assert await ledger.service.get_session(created.id) is None


# -- the two ways ----------------------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
async def test_host_application_embeds_agentledger(
    way: str, empty_database_url: str, project_root: Path, hostapp: ModuleType
) -> None:
    env = host_env(empty_database_url)
    project = await make_project(project_root, way, env)
    versions = project / "alembic" / "versions"
    shipped = shipped_revisions()
    engine = open_engine(empty_database_url)
    try:
        if way == "own-version-table":
            ledger = await roll_out_with_own_version_table(project, env, engine)
        else:
            ledger = await roll_out_in_one_history(project, env, engine)
        try:
            # The host's autogenerate, filtered, sees nothing; unfiltered it would drop ours.
            async with engine.connect() as connection:
                metadata = hostapp.Base.metadata
                assert await connection.run_sync(autogenerate_diff, metadata, True) == []
                unfiltered = await connection.run_sync(autogenerate_diff, metadata, False)
            dropped = {diff[1].name for diff in unfiltered if diff[0] == "remove_table"}
            assert dropped >= OWNED_TABLES

            await assert_host_and_ledger_work_together(engine, ledger, hostapp)
        finally:
            await ledger.dispose()
    finally:
        await engine.dispose()
    # Nothing was ever written into agentledger's own versions folder.
    assert shipped_revisions() == shipped
    assert versions.is_dir()


async def roll_out_with_own_version_table(
    project: Path, env: dict[str, str], engine: AsyncEngine
) -> Ledger:
    """agentledger's history in its own version table, then the host's in alembic_version."""
    versions = project / "alembic" / "versions"
    ledger = Ledger(engine)
    await (
        ledger.upgrade()
    )  # what `agentledger db upgrade` runs (tests/packaging/test_wheel.py runs that)
    assert await version_rows(engine, VERSION_TABLE) == [HEAD]

    await alembic(project, env, "revision", "--autogenerate", "-m", "tickets")
    tickets = new_revision(project, set())
    assert_creates_only_tickets(tickets)
    await alembic(project, env, "upgrade", "head")

    before = set(versions.glob("*.py"))
    await alembic(project, env, "revision", "--autogenerate", "-m", "nothing to do")
    empty = new_revision(project, before)
    assert_proposes_nothing(empty)
    empty.unlink()

    assert await table_names(engine) >= OWNED_TABLES | {"tickets", VERSION_TABLE}
    assert await version_rows(engine, HOST_VERSION_TABLE) == [revision_id(tickets)]
    assert await version_rows(engine, VERSION_TABLE) == [HEAD]
    assert await ledger.current_revisions() == (HEAD,)
    return ledger


async def roll_out_in_one_history(
    project: Path, env: dict[str, str], engine: AsyncEngine
) -> Ledger:
    """agentledger's revisions in the host's version_locations, all in alembic_version."""
    versions = project / "alembic" / "versions"
    await alembic(project, env, "upgrade", "heads")
    assert await version_rows(engine, HOST_VERSION_TABLE) == [HEAD]

    # The host's own branch, based on nothing, depending on the revision making agent_sessions.
    await alembic(
        project,
        env,
        *("revision", "--autogenerate", "-m", "tickets", "--head", "base"),
        *("--branch-label", "hostapp", "--version-path", str(versions), "--depends-on", HEAD),
    )
    tickets = new_revision(project, set())
    assert_creates_only_tickets(tickets)
    host_head = revision_id(tickets)

    # From an empty database both histories roll out in dependency order, and back.
    await alembic(project, env, "downgrade", "base")
    assert await table_names(engine) & (OWNED_TABLES | {"tickets"}) == set()
    await alembic(project, env, "upgrade", "heads")

    before = set(versions.glob("*.py"))
    await alembic(
        project,
        env,
        *("revision", "--autogenerate", "-m", "nothing to do", "--head", "hostapp@head"),
    )
    empty = new_revision(project, before)
    assert_proposes_nothing(empty)
    empty.unlink()

    assert await table_names(engine) >= OWNED_TABLES | {"tickets"}
    assert VERSION_TABLE not in await table_names(engine)
    # Alembic keeps only the dependent head: agentledger's revision is implied, not listed...
    assert await version_rows(engine, HOST_VERSION_TABLE) == [host_head]
    # ...yet without AGENTLEDGER_HOST_ALEMBIC_INI the tables that exist show it is at head.
    unaware = Ledger(engine)
    assert await unaware.service.get_session("0b0e7c9e-9d1f-4c43-9b2e-8f7d6a5c4b3a") is None
    state = await unaware.schema_state()
    assert (state.current, state.source, state.in_host_history) == ((HEAD,), "tables", True)
    misconfigured = Ledger(
        engine, settings=LedgerSettings(host_alembic_ini=str(project / "missing.ini"))
    )
    with pytest.raises(LedgerError, match="AGENTLEDGER_HOST_ALEMBIC_INI"):
        await misconfigured.current_revisions()
    # ...so the Ledger follows the host's history to find it.
    ledger = Ledger(engine, settings=LedgerSettings(host_alembic_ini=str(project / "alembic.ini")))
    assert await ledger.current_revisions() == (HEAD,)
    return ledger
