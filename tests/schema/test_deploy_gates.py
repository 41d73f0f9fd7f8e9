"""Deploys that gate themselves: ``db current --check``, ``db upgrade --sql`` and the migration
lock, through the command line an operator's pipeline runs (docs/migrations.md, "Deploying").

* ``db current --check`` exits 1 on an empty database and on one behind head, 0 at head;
* ``db upgrade --sql`` never connects, and its script, applied with ``psql`` to an empty
  database, builds the schema ``db upgrade`` builds (compared with ``pg_dump --schema-only``);
* two ``agentledger db upgrade`` processes started together on a fresh PostgreSQL database both
  succeed and migrate once, and a migration that cannot get the lock in time gives up with
  the way to find its holder.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from agentledger import Ledger, LedgerError
from agentledger.cli import main
from agentledger.errors import LedgerTimeoutError, UnsupportedBackendError
from agentledger.schema import MIGRATION_LOCK_TIMEOUT, migration_lock, upgrade
from agentledger.schema.alembic import (
    MIGRATION_LOCK_KEYS,
    VERSION_TABLE,
    head_revision,
)
from tests.conftest import create_pg_database, drop_pg_database, pg_url, run_sync
from tests.support.processes import SUBPROCESS_TIMEOUT, finished
from tests.support.revisions import before_head

HEAD = head_revision()
#: The revision before head (the last step of an upgrade).
SRC = Path(__file__).resolve().parents[2] / "src"
#: Nothing listens on port 1: anything that tried to connect would fail.
UNREACHABLE = "postgresql://agentledger@127.0.0.1:1/never_created"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def agentledger_env(url: str) -> dict[str, str]:
    """The environment of a deploy step: only ``AGENTLEDGER_DATABASE_URL`` names the database,
    and this checkout's ``src`` comes first on the path (not whatever the venv installed)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AGENTLEDGER_") and key != "DATABASE_URL"
    }
    env["AGENTLEDGER_DATABASE_URL"] = url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


def libpq_url(url: str) -> str:
    """``url`` as psql and pg_dump take it (no SQLAlchemy driver name)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


async def version_rows(url: str) -> list[str]:
    async with Ledger.from_url(url) as ledger, ledger.engine.connect() as connection:
        result = await connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
        return [str(value) for value in result.scalars()]


async def library_works(url: str) -> None:
    async with Ledger.from_url(url) as ledger:
        await ledger.ensure_schema()
        created = await ledger.service.create_session("user-1", "agent")
        await ledger.service.add_message(created.id, "user", "hello")
        record = await ledger.service.get_session(created.id)
        assert record is not None
        assert [m.content for m in record.messages] == ["hello"]


# -- db current --check ----------------------------------------------------------------------


def test_current_check_gates_on_head(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = empty_database_url
    code, out, err = cli(capsys, "--database-url", url, "db", "current", "--check")
    assert code == 1, (out, err)
    assert out.startswith(f"base (head is {HEAD}; ")
    assert "agentledger db upgrade" in out
    code, out, _ = cli(capsys, "--database-url", url, "db", "current", "--check", "--json")
    assert code == 1
    assert json.loads(out)["at_head"] is False

    code, _, err = cli(capsys, "--database-url", url, "db", "upgrade", "agentledger_0004")
    assert code == 0, err
    code, out, _ = cli(capsys, "--database-url", url, "db", "current", "--check")
    assert code == 1
    assert out.startswith(f"agentledger_0004 (head is {HEAD}; ")
    # Without --check the same state is only reported.
    code, out, _ = cli(capsys, "--database-url", url, "db", "current")
    assert code == 0
    assert out.startswith("agentledger_0004 (head is ")

    code, _, err = cli(capsys, "--database-url", url, "db", "upgrade")
    assert code == 0, err
    code, out, _ = cli(capsys, "--database-url", url, "db", "current", "--check")
    assert code == 0
    assert out.strip() == f"{HEAD} (head)"


# -- db upgrade --sql ------------------------------------------------------------------------


def test_upgrade_sql_prints_postgresql_sql_without_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, sql, err = cli(capsys, "--database-url", UNREACHABLE, "db", "upgrade", "--sql")
    assert code == 0, err
    assert sql.startswith("BEGIN;")
    assert sql.rstrip().endswith("COMMIT;")
    assert f"CREATE TABLE {VERSION_TABLE} (" in sql
    assert "CREATE TABLE agent_sessions (" in sql
    assert f"-- Running upgrade {before_head()} -> {HEAD}" in sql

    code, sql, err = cli(
        capsys, "--database-url", UNREACHABLE, "db", "upgrade", "--sql", f"{before_head()}:{HEAD}"
    )
    assert code == 0, err
    assert re.findall(r"-- Running upgrade (\S+) -> (\S+)", sql) == [(before_head(), HEAD)]
    assert f"CREATE TABLE {VERSION_TABLE}" not in sql
    assert f"UPDATE {VERSION_TABLE} SET version_num='{HEAD}'" in sql

    code, out, _ = cli(
        capsys,
        "--database-url",
        UNREACHABLE,
        "db",
        "upgrade",
        "--sql",
        "agentledger_0004",
        "--json",
    )
    assert code == 0
    payload = json.loads(out)
    assert payload["revision"] == "agentledger_0004"
    assert "-- Running upgrade agentledger_0003 -> agentledger_0004" in payload["sql"]
    assert HEAD not in payload["sql"]


def test_upgrade_sql_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sqlite = f"sqlite+aiosqlite:///{tmp_path / 'never_created.db'}"
    code, out, err = cli(capsys, "--database-url", sqlite, "db", "upgrade", "--sql")
    assert code == 1
    assert out == ""
    assert "PostgreSQL only" in err
    assert "agentledger --database-url postgresql:///review db upgrade --sql" in err
    assert not (tmp_path / "never_created.db").exists()

    code, out, err = cli(capsys, "--database-url", UNREACHABLE, "db", "upgrade", "--sql", "nosuch")
    assert code == 1
    assert "Can't locate revision identified by 'nosuch'" in err

    # A range is for printing only: migrating names the revision to reach.
    code, out, err = cli(capsys, "--database-url", sqlite, "db", "upgrade", "base:head")
    assert code == 2
    assert "only makes sense with --sql" in err
    assert "`agentledger db upgrade head`" in err
    assert not (tmp_path / "never_created.db").exists()


@pytest.mark.parametrize(
    ("revision", "said"),
    [
        ("agentledger_0004:", "needs both ends"),
        (":head", "needs both ends"),
        ("agentledger_0005:agentledger_0004", "runs backwards"),
        ("head:head", "is empty"),
        ("agentledger_0003:agentledger_0003", "is empty"),
        ("head:base", "ends at base"),
    ],
)
def test_upgrade_sql_refuses_ranges_that_would_print_nothing_or_crash(
    revision: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Regression: half a range crashed with an AssertionError, and an empty or backwards one
    # printed BEGIN; COMMIT; with exit 0, which a reviewer reads as "nothing to migrate".
    code, out, err = cli(capsys, "--database-url", UNREACHABLE, "db", "upgrade", "--sql", revision)
    assert (code, out) == (2, ""), err
    assert said in err
    assert "bug" not in err


def test_the_reviewed_script_takes_the_migration_lock(capsys: pytest.CaptureFixture[str]) -> None:
    # Applied by hand with psql, the script must not run alongside a deploy's migration.
    classid, objid = MIGRATION_LOCK_KEYS
    for revision in ("head", f"agentledger_0003:{HEAD}"):
        code, sql, err = cli(
            capsys, "--database-url", UNREACHABLE, "db", "upgrade", "--sql", revision
        )
        assert code == 0, err
        lock = f"SELECT pg_advisory_xact_lock({classid}, {objid});"
        assert sql.index("BEGIN;") < sql.index(lock) < sql.index("-- Running upgrade")


def test_current_check_refuses_a_version_table_holding_head_beside_another_revision(
    database_url: str, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def add_row() -> None:
        async with Ledger.from_url(database_url) as ledger, ledger.engine.begin() as connection:
            await connection.execute(
                text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES ('agentledger_0004')")
            )

    run_sync(add_row())
    code, out, _ = cli(capsys, "--database-url", database_url, "db", "current", "--check")
    assert code == 1
    assert "several revisions" in out


def test_current_check_of_a_missing_sqlite_file_does_not_create_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.db"
    url = f"sqlite+aiosqlite:///{missing}"
    code, out, _ = cli(capsys, "--database-url", url, "db", "current", "--check")
    assert code == 1
    assert "no database file" in out
    assert not missing.exists()
    code, _, _ = cli(capsys, "--database-url", url, "db", "current")
    assert code == 0
    assert not missing.exists()


def test_offline_sql_refuses_sqlite_from_the_api() -> None:
    from agentledger.schema import offline_upgrade_sql

    with pytest.raises(UnsupportedBackendError, match="PostgreSQL only"):
        offline_upgrade_sql("sqlite+aiosqlite:///ledger.db")
    with pytest.raises(LedgerError, match="nosuch"):
        offline_upgrade_sql(UNREACHABLE, "nosuch")


def psql(url: str, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["psql", "--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", *args, libpq_url(url)],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert "ERROR" not in done.stderr, done.stderr
    return done.stdout


def schema_dump(url: str) -> str:
    done = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", "--no-privileges", libpq_url(url)],
        capture_output=True,
        text=True,
        check=False,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    # Drop comments, the session settings and the psql meta-commands (``\restrict KEY``, a
    # random key per dump) that pg_dump prints: they name nothing of the schema.
    return "\n".join(
        line
        for line in done.stdout.splitlines()
        if line and not line.startswith(("--", "SET ", "SELECT pg_catalog.set_config", "\\"))
    )


def test_offline_sql_applied_with_psql_builds_the_schema_upgrade_builds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    by_script, by_upgrade = run_sync(create_pg_database()), run_sync(create_pg_database())
    try:
        url, reference = pg_url(by_script), pg_url(by_upgrade)
        # The script is printed without touching the database it names.
        code, sql, err = cli(capsys, "--database-url", url, "db", "upgrade", "--sql")
        assert code == 0, err
        assert psql(url, "-Atc", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == (
            "0\n"
        )

        psql(url, stdin=sql)
        code, _, err = cli(capsys, "--database-url", reference, "db", "upgrade")
        assert code == 0, err

        assert schema_dump(url) == schema_dump(reference)
        assert "CREATE TABLE public.agent_sessions" in schema_dump(url)
        code, out, _ = cli(capsys, "--database-url", url, "db", "current", "--check")
        assert code == 0, out
        assert out.strip() == f"{HEAD} (head)"
        run_sync(library_works(url))
        # The script continues from a revision too: applied over agentledger_0003, it
        # reaches head with the same schema.
        code, _, err = cli(
            capsys, "--database-url", reference, "db", "downgrade", "agentledger_0003"
        )
        assert code == 0, err
        code, sql, _ = cli(
            capsys, "--database-url", reference, "db", "upgrade", "--sql", "agentledger_0003:head"
        )
        psql(reference, stdin=sql)
        assert schema_dump(reference) == schema_dump(url)
        code, _, _ = cli(capsys, "--database-url", reference, "db", "current", "--check")
        assert code == 0
    finally:
        run_sync(drop_pg_database(by_script))
        run_sync(drop_pg_database(by_upgrade))


# -- the migration lock ----------------------------------------------------------------------


async def start_upgrade(url: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentledger",
        "db",
        "upgrade",
        env=agentledger_env(url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def test_the_subprocess_runs_this_checkout() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import agentledger; print(agentledger.__file__)"],
        env=agentledger_env(UNREACHABLE),
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(done.stdout.strip()).is_relative_to(SRC)


@pytest.mark.parametrize("attempt", range(3))
async def test_two_deploys_racing_migrate_once(attempt: int) -> None:
    name = await create_pg_database()
    url = pg_url(name)
    try:
        first, second = await start_upgrade(url), await start_upgrade(url)
        results = await asyncio.gather(finished(first), finished(second))
        for code, out, err in results:
            assert code == 0, err
            assert err == ""
            assert out.strip().endswith(f"is at {HEAD}"), out
        assert await version_rows(url) == [HEAD]
        assert psql(
            url, "-Atc", "SELECT count(*) FROM pg_tables WHERE tablename = 'agent_sessions'"
        ) == ("1\n")
        await library_works(url)
    finally:
        await drop_pg_database(name)


def hold_the_lock_and(url: str, body: str) -> None:
    """Hold agentledger's migration lock in a psql transaction while ``body`` runs there."""
    classid, objid = MIGRATION_LOCK_KEYS
    psql(url, stdin=f"BEGIN;\nSELECT pg_advisory_xact_lock({classid}, {objid});\n{body}\nCOMMIT;\n")


async def test_a_migration_waits_for_the_lock_at_most_its_timeout(
    empty_database_url: str, backend: str
) -> None:
    """A migration while another holds the lock gives up after ``lock_timeout``, unchanged,
    saying how to find the holder; on SQLite there is no lock to wait for."""
    assert MIGRATION_LOCK_TIMEOUT > 0
    ledger = Ledger.from_url(empty_database_url)
    try:
        if backend == "postgresql":
            holder = asyncio.create_task(
                asyncio.to_thread(hold_the_lock_and, empty_database_url, "SELECT pg_sleep(3);")
            )
            await asyncio.sleep(1.0)  # psql has taken the lock by now
            async with ledger.engine.connect() as connection:
                with pytest.raises(LedgerTimeoutError) as gave_up:
                    await connection.run_sync(lambda sync: upgrade(sync, lock_timeout=0.2))
                await connection.rollback()
            message = str(gave_up.value)
            assert "for more than 0.2 s" in message
            assert "agentledger db current --check" in message
            assert f"classid = {MIGRATION_LOCK_KEYS[0]}" in message
            assert gave_up.value.sqlstate == "55P03"
            assert await ledger.current_revisions() == ()
            await holder
        # Nobody holds it now (or never can, on SQLite): the host's own env.py way works, and
        # the lock is released with the transaction.
        async with ledger.engine.begin() as connection:
            await connection.run_sync(lambda sync: migration_lock(sync, timeout=1.0))
            await connection.run_sync(upgrade)
        assert await ledger.current_revisions() == (HEAD,)
        if backend == "postgresql":
            hold_the_lock_and(empty_database_url, "")  # free again: returns at once
    finally:
        await ledger.dispose()


def test_the_documented_lock_and_timeout_are_the_code_s() -> None:
    page = (SRC.parent / "docs" / "migrations.md").read_text(encoding="utf-8")
    classid, objid = MIGRATION_LOCK_KEYS
    assert f"pg_advisory_xact_lock({classid}, {objid})" in page
    assert MIGRATION_LOCK_TIMEOUT == 600.0
    assert "at most 10 minutes" in " ".join(page.split())
