"""The layers import one way (docs/index.md, "Architecture"), and the Agents SDK stays out of
``import agentledger`` and of naming a session.

Read from the source's import statements, so a new module that reaches up a layer fails here
rather than in a review.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import agentledger

PACKAGE = Path(agentledger.__file__).parent

#: What each part of the package may import from agentledger (besides itself).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "translation": {"errors"},
    "domain": {"errors", "domain"},
    "db": {"errors", "translation", "domain", "db"},
    "schema": {"errors", "translation", "domain", "db", "schema", "migrations", "_version"},
    "services": {"errors", "translation", "domain", "db", "services", "_version"},
    "integrations": {"errors", "domain", "integrations"},
    "web": {"errors", "translation", "domain", "services", "ledger", "web", "_version"},
}

#: Third-party packages a part must not import.
FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {
    "errors": {"sqlalchemy", "agents", "google"},
    "translation": {"sqlalchemy", "agents", "google"},
    "domain": {"sqlalchemy", "agents", "alembic", "google"},
    "services": {"agents", "fastapi", "starlette", "uvicorn", "google"},
    "db": {"agents", "fastapi", "starlette", "uvicorn", "google"},
}

#: Each framework adapter imports its own framework only (an extra may be missing).
ADAPTER_FRAMEWORKS: dict[str, set[str]] = {
    "openai_agents": {"google", "langchain_core"},
    "adk": {"agents", "langchain_core"},
    "langchain": {"agents", "google"},
}


def part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


#: Agent frameworks installed by an extra: each is imported only inside its own adapter.
FRAMEWORK_ADAPTERS: dict[str, str] = {
    "langchain_core": "integrations/langchain",
    "google": "integrations/adk",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "agentledger":
                found.update(f"agentledger.{alias.name}" for alias in node.names)
    return found


SOURCES = sorted(
    path
    for path in PACKAGE.rglob("*.py")
    if part_of(path) in ALLOWED and "migrations" not in path.parts
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_each_module_imports_only_the_layers_below_it(path: Path) -> None:
    part = part_of(path)
    for module in imported_modules(path):
        top = module.split(".")[0]
        if top == "agentledger":
            target = module.split(".")[1] if "." in module else ""
            assert target in ALLOWED[part] or target == "", (
                f"{path.relative_to(PACKAGE)} ({part}) imports {module}"
            )
        else:
            assert top not in FORBIDDEN_THIRD_PARTY.get(part, set()), (
                f"{path.relative_to(PACKAGE)} ({part}) imports {module}"
            )


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_an_extras_framework_is_imported_only_by_its_adapter(path: Path) -> None:
    where = path.relative_to(PACKAGE).as_posix()
    for module in imported_modules(path):
        adapter = FRAMEWORK_ADAPTERS.get(module.split(".")[0])
        assert adapter is None or where.startswith(adapter + "/"), f"{where} imports {module}"


def test_importing_agentledger_loads_no_extras_framework() -> None:
    frameworks = sorted(FRAMEWORK_ADAPTERS)
    script = (
        "import sys, agentledger, agentledger.integrations.openai_agents\n"
        "from agentledger import Ledger\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {frameworks})\n"
        "print(loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_importing_agentledger_and_naming_a_session_leave_the_agents_sdk_unloaded() -> None:
    script = (
        "import sys, agentledger\n"
        "from agentledger.domain.naming import resolve_session_uuid, session_name\n"
        "resolve_session_uuid('support-chat', 'alice'); session_name('support-chat')\n"
        "from agentledger import Ledger, SessionService, LedgerSettings\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('agents', 'openai'))\n"
        "print(loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_the_core_install_does_not_need_the_web_extra() -> None:
    script = (
        "import sys, agentledger\n"
        "from agentledger import Ledger, SessionService\n"
        "import agentledger.cli.app\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


ADAPTER_SOURCES = sorted(
    path
    for path in (PACKAGE / "integrations").rglob("*.py")
    if len(path.relative_to(PACKAGE / "integrations").parts) > 1
)


@pytest.mark.parametrize("path", ADAPTER_SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_adapter_imports_no_other_framework(path: Path) -> None:
    adapter = path.relative_to(PACKAGE / "integrations").parts[0]
    for module in imported_modules(path):
        assert module.split(".")[0] not in ADAPTER_FRAMEWORKS.get(adapter, set()), (
            f"{path.relative_to(PACKAGE)} imports {module}"
        )
