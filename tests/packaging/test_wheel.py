"""The wheel carries the migrations: installed outside the checkout, `agentledger db` works.

Uses the wheel ``make package`` built (``make test`` builds it first), else builds one from the
repository (``pip wheel``, the build backend in pip's isolated build
environment), installs it with its dependencies into one fresh virtualenv outside the checkout,
and from a working directory outside the checkout runs the installed ``agentledger db upgrade``,
``db current``, ``sessions list`` and ``db downgrade base`` against a new PostgreSQL database,
checking the output and the tables. Everything it creates (folders, venv, database) is removed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from agentledger.config import normalize_url, safe_url
from agentledger.db.models import OWNED_TABLES
from agentledger.schema.alembic import VERSION_TABLE, head_revision
from tests.conftest import create_pg_database, drop_pg_database, pg_url, run_sync

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAD = head_revision()
#: Building the wheel and installing its dependencies take a while on a cold pip cache.
INSTALL_TIMEOUT = 600.0
CLI_TIMEOUT = 120.0


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    workdir: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float) -> str:
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    command = " ".join(map(str, args))
    assert result.returncode == 0, (
        f"{command} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def made_by_make_package() -> Path | None:
    """The wheel ``make package`` left in ``dist/`` (``make test`` builds it first), when it
    is newer than every source file that goes into it; else ``None``."""
    wheels = list((REPO_ROOT / "dist").glob("agentledger-*.whl"))
    if len(wheels) != 1:
        return None
    sources = [REPO_ROOT / "pyproject.toml", REPO_ROOT / "README.md"] + [
        path
        for path in (REPO_ROOT / "src").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    newest = max(path.stat().st_mtime for path in sources)
    return wheels[0] if wheels[0].stat().st_mtime >= newest else None


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    """The wheel, and one fresh virtualenv outside the checkout with it installed."""
    root = Path(tempfile.mkdtemp(prefix="agentledger-wheel-"))
    try:
        assert not root.is_relative_to(REPO_ROOT)
        dist, venv, workdir = root / "dist", root / "venv", root / "work"
        workdir.mkdir()
        pip = (sys.executable, "-m", "pip", "--disable-pip-version-check")
        wheel = made_by_make_package()
        if wheel is None:  # not built yet (pytest run by hand), or older than the sources
            run(
                *pip,
                "wheel",
                "--no-deps",
                "-q",
                "-w",
                dist,
                REPO_ROOT,
                cwd=root,
                timeout=INSTALL_TIMEOUT,
            )
            (wheel,) = dist.glob("agentledger-*.whl")
        # No pip inside the venv (ensurepip is slow); this pip installs into it instead.
        run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root, timeout=INSTALL_TIMEOUT)
        run(
            *pip,
            *("--python", venv / "bin" / "python", "install", "-q", wheel),
            cwd=root,
            timeout=INSTALL_TIMEOUT,
        )
        yield Installed(wheel=wheel, venv=venv, workdir=workdir)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_wheel_ships_migrations_and_type_information(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    source_versions = REPO_ROOT / "src" / "agentledger" / "migrations" / "versions"
    revisions = {
        f"agentledger/migrations/versions/{path.name}" for path in source_versions.glob("*.py")
    }
    assert revisions, "no revision files in the checkout"
    assert revisions <= names
    assert {
        "agentledger/py.typed",
        "agentledger/migrations/env.py",
        "agentledger/migrations/script.py.mako",
    } <= names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_wheel_ships_the_transcript_browsers_templates_and_assets(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    ui = REPO_ROOT / "src" / "agentledger" / "web" / "ui"
    assets = {
        f"agentledger/web/ui/{path.relative_to(ui).as_posix()}"
        for folder in ("templates", "static")
        for path in (ui / folder).iterdir()
    }
    assert {"agentledger/web/ui/templates/session.html", "agentledger/web/ui/static/app.js"} <= (
        assets
    )
    assert assets <= names


def test_no_symlinked_folder_in_the_checkout() -> None:
    """The build walks the checkout once per folder: hatchling visits a folder reached through a
    symlink only the first time, so a symlink to ``src/agentledger/migrations`` (once ``alembic/``
    at the root) dropped the revisions from the sdist and the wheel whenever the file system
    listed the link first."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.decode()
    linked = [
        name
        for name in tracked.split("\0")
        if name and (REPO_ROOT / name).is_symlink() and (REPO_ROOT / name).is_dir()
    ]
    assert not linked, f"symlinked folders in the checkout: {linked}"


def cli_env(url: str) -> dict[str, str]:
    """A user's shell: no trace of the checkout or of the test's own settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AGENTLEDGER_", "PYTHON", "VIRTUAL_ENV")) and key != "DATABASE_URL"
    }
    env["AGENTLEDGER_DATABASE_URL"] = url
    return env


async def pg_tables(url: str) -> set[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}


def test_installed_cli_migrates_a_new_postgresql_database(installed: Installed) -> None:
    name = run_sync(create_pg_database())
    try:
        url = pg_url(name)
        shown = safe_url(normalize_url(url))  # how the CLI names the database (asyncpg driver)
        env = cli_env(url)
        cwd = installed.workdir
        agentledger = installed.bin / "agentledger"

        # The package (and the revisions it finds) come from the venv, not from the checkout.
        where = run(
            installed.bin / "python",
            "-c",
            "import agentledger.schema.alembic as s; print(s.__file__); print(s.versions_path()); "
            "print(s.head_revision())",
            cwd=cwd,
            env=env,
            timeout=CLI_TIMEOUT,
        ).split()
        site_packages = installed.venv / "lib"
        assert [Path(where[0]).is_relative_to(site_packages), where[2]] == [True, HEAD]
        assert Path(where[1]).is_relative_to(site_packages)

        assert run(agentledger, "db", "upgrade", cwd=cwd, env=env, timeout=CLI_TIMEOUT).strip() == (
            f"{shown} is at {HEAD}"
        )
        assert run_sync(pg_tables(url)) >= OWNED_TABLES | {VERSION_TABLE}
        assert run(agentledger, "db", "current", cwd=cwd, env=env, timeout=CLI_TIMEOUT).strip() == (
            f"{HEAD} (head)"
        )
        listing = run(
            agentledger,
            "sessions",
            "list",
            "--user",
            "nobody",
            cwd=cwd,
            env=env,
            timeout=CLI_TIMEOUT,
        )
        assert listing.strip() == "no sessions for user 'nobody'"

        downgraded = run(
            agentledger, "db", "downgrade", "base", cwd=cwd, env=env, timeout=CLI_TIMEOUT
        )
        assert downgraded.strip() == f"{shown} is at base"
        assert run_sync(pg_tables(url)) & OWNED_TABLES == set()
        assert list(cwd.iterdir()) == [], "the CLI left files in the working directory"
    finally:
        run_sync(drop_pg_database(name))
