"""docs/lifecycle.md, executed: its ``python`` blocks run in order, as in an asyncio REPL.

The blocks share one namespace and may ``await`` at top level. The page's database URL,
``sqlite+aiosqlite:///lifecycle.db``, is replaced by a fresh database's on each backend, so the
examples (and the ``assert`` statements in them) hold on SQLite and on PostgreSQL. ``text``
blocks (command lines and their output) are shown, not run; any other kind of block fails the
test, so no example silently goes unexecuted.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from agentledger import Ledger

PAGE = Path(__file__).resolve().parents[2] / "docs" / "lifecycle.md"
PAGE_URL = "sqlite+aiosqlite:///lifecycle.db"

_FENCE = re.compile(r"^```(\S*)\s*$")


def code_blocks(text: str) -> list[tuple[int, str, str]]:
    """``(line, language, body)`` of every fenced block of the page, in order."""
    blocks: list[tuple[int, str, str]] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        found = _FENCE.match(lines[index])
        index += 1
        if not found:
            continue
        start = index
        while index < len(lines) and lines[index] != "```":
            index += 1
        assert index < len(lines), f"{PAGE.name}:{start}: the block is never closed"
        blocks.append((start, found.group(1), "\n".join(lines[start:index]) + "\n"))
        index += 1
    return blocks


def test_page_blocks_are_python_or_text() -> None:
    blocks = code_blocks(PAGE.read_text())
    assert {language for _, language, _ in blocks} == {"python", "text"}
    python = [body for _, language, body in blocks if language == "python"]
    assert len(python) >= 8
    assert PAGE_URL in python[0]
    # Every example after the setup checks what it shows.
    assert all("assert " in body for body in python[1:])


async def test_page_examples_run(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "lifecycle_page"}
    try:
        for line, language, body in code_blocks(PAGE.read_text()):
            if language != "python":
                continue
            source = body.replace(PAGE_URL, database_url)
            code = compile(
                source, f"{PAGE.name}:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
            )
            result = eval(code, namespace)
            if inspect.iscoroutine(result):
                await result
    finally:
        ledger = namespace.get("ledger")
        if isinstance(ledger, Ledger):
            await ledger.dispose()
    # The page ran to its end: the erasure example removed alice's three sessions.
    assert namespace["report"].sessions == 3
