"""The core install pulls in no agent framework but the OpenAI Agents SDK; each other
framework comes with its extra, and the ``dev`` extra (what ``make test`` installs) has every
framework extra's requirements, so each adapter is tested in CI."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
#: Extra -> the distributions it installs that the core install must not.
FRAMEWORK_EXTRAS = {"langchain": {"langchain-core"}}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0] for requirement in requirements}


def test_frameworks_come_with_their_extras_and_dev_has_them_all() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    core = _names(project["dependencies"])
    extras = project["optional-dependencies"]
    dev = set(extras["dev"])
    for extra, frameworks in FRAMEWORK_EXTRAS.items():
        assert frameworks <= _names(extras[extra]), f"[{extra}] lacks {frameworks}"
        assert not frameworks & core, f"the core install pulls in {frameworks & core}"
        assert set(extras[extra]) <= dev, f"dev lacks the requirements of [{extra}]"
