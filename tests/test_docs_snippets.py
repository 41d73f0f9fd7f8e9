"""Every code block of the README and the concept docs runs, in order, like a notebook.

Python blocks of one page share a namespace and may use top-level ``await``; the page may rely
on three names the reader is told about: ``url`` (a database at head), ``ledger`` (a Ledger on
it) and ``agent`` (an ``agents.Agent``). No OpenAI key is needed: the SDK's default model is
replaced by the demo's offline model, built on ``agents.testing.ScriptedModel``. Bash blocks run
in a shell with ``AGENTLEDGER_DATABASE_URL`` set, from the repository root. Pages with their own
executed examples (the host-app guide, ...) are tested by their own files.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, set_tracing_disabled
from agents.models.multi_provider import MultiProvider

from agentledger import Ledger
from agentledger.demo import OfflineModel

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/index.md", "docs/agents-sdk.md", "docs/migrations.md"]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
#: The README's commands for a newcomer; .ci/run executes them (they set up a whole venv).
NEWCOMER_COMMANDS = ["make demo", "make test"]


def blocks(page: str) -> list[tuple[str, str]]:
    return [(kind, body) for kind, body in BLOCK.findall((REPO_ROOT / page).read_text())]


def test_every_block_is_of_a_kind_this_test_runs() -> None:
    for page in PAGES:
        for kind, body in blocks(page):
            assert kind in ("python", "bash", "text", "sql"), f"{page}: unknown block {kind!r}"
            if kind == "bash" and page == "README.md":
                commands = [line.split("#")[0].strip() for line in body.splitlines()]
                assert commands == NEWCOMER_COMMANDS


@pytest.mark.parametrize("page", PAGES)
def test_page_runs(
    page: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("AGENTLEDGER_DATABASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr(MultiProvider, "get_model", lambda self, name: OfflineModel())
    set_tracing_disabled(True)

    loop = asyncio.new_event_loop()
    try:
        ledger = Ledger.from_url(database_url)
        namespace: dict[str, Any] = {
            "url": database_url,
            "ledger": ledger,
            "agent": Agent(name="Helper", instructions="Be brief."),
            "__name__": "__doc_snippet__",
        }
        ran = 0
        for index, (kind, body) in enumerate(blocks(page)):
            if kind == "python":
                code = compile(
                    body, f"{page}:block{index}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
                )
                result = eval(code, namespace)
                if inspect.iscoroutine(result):
                    loop.run_until_complete(result)
                ran += 1
            elif kind == "bash" and page != "README.md":
                env = {**os.environ, "AGENTLEDGER_DATABASE_URL": database_url}
                env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
                done = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", body],
                    cwd=REPO_ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert done.returncode == 0, f"{page} block {index}: {done.stderr}"
                ran += 1
        assert ran, f"{page} has no runnable block"
        loop.run_until_complete(ledger.dispose())
    finally:
        loop.close()
    if page == "README.md":
        out = capsys.readouterr().out
        assert "(1, 'user', 'Where is my order?')" in out
        assert "Alice" in out


def test_schema_page_shows_the_append_statement_the_library_runs() -> None:
    from agentledger.repositories import pg_append_statement

    (sql,) = [body for kind, body in blocks("docs/schema.md") if kind == "sql"]
    running = str(pg_append_statement(create=False, owned=True))
    assert " ".join(sql.split()) == " ".join(running.split())
