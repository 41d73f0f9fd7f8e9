"""docs/guide-host-app.md, run from top to bottom: every code block in it is executed.

The guide is the test script. Its fenced blocks are, in document order:

* ``python`` whose first line is ``# file: PATH``: written to PATH in the project folder;
* ``ini`` whose first line is ``# edit: PATH ...``: each ``key = value`` (with its indented
  continuation lines) replaces that key in the ``[alembic]`` section of PATH, or is added to it;
* ``bash``: run by bash (``-euo pipefail``) in the project folder; variables it exports carry
  over to the later blocks, as in the reader's shell;
* ``text`` right after a ``bash`` block: what that block must print on stdout, line by line,
  where ``...`` stands for any text.

Any other block fails the test, so nothing in the guide goes unexecuted. HTML comments
``<!-- guide-test: way-a -->`` / ``way-b`` / ``all`` mark the two alternative Alembic ways; each
scenario runs the common blocks and one way's. The reader's shell is imitated: this venv's
``bin`` first on PATH, no OpenAI key (the guide's agent runs offline), pip without any index (so
``pip install`` only passes when the package is already installed from the project's own
dependencies: nothing the guide needs can be a hidden requirement). On PostgreSQL the guide's one
database URL, ``sqlite+aiosqlite:///app.db``, is replaced by a fresh database's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentledger.config import normalize_url
from tests.conftest import create_pg_database, drop_pg_database, pg_url, run_sync

REPO_ROOT = Path(__file__).resolve().parents[2]
GUIDE = REPO_ROOT / "docs" / "guide-host-app.md"
#: The database URL the guide uses; the PostgreSQL scenario swaps it for its own database.
GUIDE_URL = "sqlite+aiosqlite:///app.db"
#: Each way on each backend: the guide's migrations (a downgrade included) differ between them.
SCENARIOS = [(way, database) for way in ("way-a", "way-b") for database in ("sqlite", "postgresql")]
BLOCK_TIMEOUT = 300.0

_FENCE = re.compile(r"^```(\S*)(.*)$")
_SCOPE = re.compile(r"^<!-- guide-test: (all|way-a|way-b) -->$")


class GuideError(Exception):
    """The guide has a block the test cannot run (or cannot tell how to run)."""


@dataclass
class Block:
    language: str
    body: str
    line: int
    scope: str
    expected: str | None = None

    @property
    def where(self) -> str:
        return f"{GUIDE.name}:{self.line}"


def parse_guide(text: str) -> list[Block]:
    """The guide's fenced blocks, each with the scope it is in and the output it must print."""
    blocks: list[Block] = []
    scope = "all"
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if found := _SCOPE.match(line):
            scope = found.group(1)
        elif found := _FENCE.match(line):
            language, start = found.group(1), index + 1
            index += 1
            while index < len(lines) and not lines[index].startswith("```"):
                index += 1
            if index == len(lines):
                raise GuideError(f"{GUIDE.name}:{start}: the block is never closed")
            body = "\n".join(lines[start:index]) + "\n"
            block = Block(language, body, start, scope)
            if language == "text":
                previous = blocks[-1] if blocks else None
                if (
                    previous is None
                    or previous.language != "bash"
                    or previous.expected is not None
                    or previous.scope != scope
                ):
                    raise GuideError(f"{block.where}: a text block must follow its bash block")
                previous.expected = body
            elif language not in ("python", "ini", "bash"):
                raise GuideError(f"{block.where}: no way to run a {language!r} block")
            else:
                blocks.append(block)
        index += 1
    return blocks


# -- what each kind of block does -------------------------------------------------------------


def write_file(block: Block, project: Path) -> None:
    first = block.body.splitlines()[0]
    assert first.startswith("# file: "), f"{block.where}: python blocks start with # file: PATH"
    target = project / first.removeprefix("# file: ").strip()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(block.body)


def edit_ini(block: Block, project: Path) -> None:
    first, *rest = block.body.splitlines()
    assert first.startswith("# edit: "), f"{block.where}: ini blocks start with # edit: PATH"
    target = project / first.removeprefix("# edit: ").split()[0]
    settings: dict[str, list[str]] = {}
    for line in rest:
        if line[:1].isspace():
            settings[next(reversed(settings))].append(line)
        elif line.strip():
            settings[line.split("=", 1)[0].strip()] = [line]
    lines = target.read_text().splitlines()
    for key, replacement in settings.items():
        lines = set_ini_key(lines, key, replacement, block)
    target.write_text("\n".join(lines) + "\n")


def set_ini_key(lines: list[str], key: str, replacement: list[str], block: Block) -> list[str]:
    """``lines`` with ``key`` (and its continuation lines) in [alembic] set to ``replacement``."""
    start = lines.index("[alembic]") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    pattern = re.compile(rf"^{re.escape(key)}\s*=")
    found = [i for i in range(start, end) if pattern.match(lines[i])]
    assert len(found) <= 1, f"{block.where}: {key} is set more than once"
    if not found:
        while end > start and not lines[end - 1].strip():
            end -= 1
        return [*lines[:end], *replacement, *lines[end:]]
    first = last = found[0]
    while last + 1 < end and lines[last + 1][:1].isspace() and lines[last + 1].strip():
        last += 1
    return [*lines[:first], *replacement, *lines[last + 1 :]]


def run_bash(block: Block, project: Path, env: dict[str, str], env_file: Path) -> str:
    """Run the block; its stdout. ``env`` is updated with what the block exported."""
    script = f"{block.body}\nenv -0 > {env_file}\n"
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"{block.where}: exited {result.returncode}\n{block.body}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    exported = env_file.read_bytes().decode().split("\0")
    env.clear()
    env.update(dict(item.split("=", 1) for item in exported if "=" in item))
    return result.stdout


def assert_output(block: Block, stdout: str) -> None:
    assert block.expected is not None
    wanted = block.expected.splitlines()
    got = stdout.rstrip("\n").splitlines()
    patterns = [".*".join(map(re.escape, line.split("..."))) for line in wanted]
    matches = len(got) == len(wanted) and all(
        re.fullmatch(pattern, line) for pattern, line in zip(patterns, got, strict=True)
    )
    assert matches, f"{block.where}: printed\n{stdout}\nbut the guide shows\n{block.expected}"


# -- the scenarios ----------------------------------------------------------------------------


def test_every_block_is_run_by_some_scenario() -> None:
    blocks = parse_guide(GUIDE.read_text())
    scopes = {block.scope for block in blocks}
    assert scopes == {"all", "way-a", "way-b"}
    assert {way for way, _ in SCENARIOS} == {"way-a", "way-b"}
    assert sum(block.body.count(GUIDE_URL) for block in blocks) == 1
    assert any(block.expected for block in blocks if block.scope == "all")


def reader_env() -> dict[str, str]:
    """The reader's shell: this venv first on PATH, nothing of the test run's own settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AGENTLEDGER_", "OPENAI_", "PIP_", "PYTHON", "VIRTUAL_ENV"))
        and key != "DATABASE_URL"
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # pip may only find what is already installed: the guide's installs add nothing.
    env.update(PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A folder outside the checkout for the project; removed afterwards, pass or fail."""
    root = Path(tempfile.mkdtemp(prefix="agentledger-guide-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(("way", "database"), SCENARIOS)
def test_guide_runs_from_an_empty_folder(way: str, database: str, workspace: Path) -> None:
    project = workspace / "project"
    project.mkdir()
    env_file = workspace / "env"
    pg_name = run_sync(create_pg_database()) if database == "postgresql" else None
    try:
        url = GUIDE_URL
        if pg_name is not None:
            url = normalize_url(pg_url(pg_name)).render_as_string(hide_password=False)
        env = reader_env()
        for block in parse_guide(GUIDE.read_text()):
            if block.scope not in ("all", way):
                continue
            if block.language == "python":
                write_file(block, project)
            elif block.language == "ini":
                edit_ini(block, project)
            else:
                block.body = block.body.replace(GUIDE_URL, url)
                stdout = run_bash(block, project, env, env_file)
                if block.expected is not None:
                    assert_output(block, stdout)
    finally:
        if pg_name is not None:
            run_sync(drop_pg_database(pg_name))
