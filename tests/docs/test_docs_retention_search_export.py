"""docs/retention-search-export.md, run from top to bottom on each backend.

A simpler cousin of tests/docs/test_docs_host_guide.py. The document's fenced blocks are, in order:

* ``python``: written to a file and run by this venv's Python in the reader's folder;
* ``bash``: run by bash (``-euo pipefail``) there, after the ``export`` lines of earlier blocks;
* ``text`` right after one of those: what it must print on stdout, line by line, where ``...``
  stands for any text.

Any other block fails the test, so nothing in the document goes unexecuted. The document's one
database URL is replaced by a fresh database's (PostgreSQL or SQLite).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "retention-search-export.md"
DOC_URL = "sqlite+aiosqlite:///lifecycle.db"
TIMEOUT = 120.0

_FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass
class Block:
    language: str
    body: str
    line: int
    expected: str | None = None


def parse(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        found = _FENCE.match(lines[index])
        if found is None or not found.group(1):
            index += 1
            continue
        language, start = found.group(1), index + 1
        index += 1
        while index < len(lines) and not lines[index].startswith("```"):
            index += 1
        assert index < len(lines), f"{DOC.name}:{start}: the block is never closed"
        body = "\n".join(lines[start:index]) + "\n"
        if language == "text":
            assert blocks, f"{DOC.name}:{start}: a text block must follow a code block"
            assert blocks[-1].expected is None, f"{DOC.name}:{start}: two text blocks"
            blocks[-1].expected = body
        else:
            assert language in ("python", "bash"), f"{DOC.name}:{start}: cannot run {language!r}"
            blocks.append(Block(language, body, start))
        index += 1
    return blocks


def reader_env() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AGENTLEDGER_", "OPENAI_", "PYTHON", "VIRTUAL_ENV"))
        and key != "DATABASE_URL"
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    return env


def assert_output(block: Block, stdout: str) -> None:
    assert block.expected is not None
    wanted = block.expected.splitlines()
    got = stdout.rstrip("\n").splitlines()
    patterns = [".*".join(map(re.escape, line.split("..."))) for line in wanted]
    matches = len(got) == len(wanted) and all(
        re.fullmatch(pattern, line) for pattern, line in zip(patterns, got, strict=True)
    )
    assert matches, (
        f"{DOC.name}:{block.line}: printed\n{stdout}\nbut the document shows\n{block.expected}"
    )


def test_every_block_can_run() -> None:
    blocks = parse(DOC.read_text(encoding="utf-8"))
    assert {block.language for block in blocks} == {"python", "bash"}
    assert all(block.expected is not None for block in blocks)
    assert (
        sum(block.body.count(DOC_URL) for block in blocks)
        == len([b for b in blocks if b.language == "python"]) + 1
    )


def test_document_runs(database_url: str, tmp_path: Path) -> None:
    env = reader_env()
    exports: list[str] = []
    for number, block in enumerate(parse(DOC.read_text(encoding="utf-8"))):
        body = block.body.replace(DOC_URL, database_url)
        if block.language == "python":
            script = tmp_path / f"example_{number}.py"
            script.write_text(body, encoding="utf-8")
            command = [sys.executable, str(script)]
        else:
            command = ["bash", "-euo", "pipefail", "-c", "\n".join([*exports, body])]
            exports.extend(line for line in body.splitlines() if line.startswith("export "))
        result = subprocess.run(
            command,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, (
            f"{DOC.name}:{block.line}: exited {result.returncode}\n{body}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        assert_output(block, result.stdout)


def test_parse_refuses_unknown_blocks() -> None:
    with pytest.raises(AssertionError, match="cannot run 'json'"):
        parse("```json\n{}\n```\n")
