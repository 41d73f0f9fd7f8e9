"""Every revision's SQL is linted for statements that lock tables for long (squawk).

squawk (``squawk-cli`` from PyPI, in the ``dev`` extra) reads the offline PostgreSQL SQL of each
revision, ``agentledger db upgrade --sql PREVIOUS:REVISION``. Its findings on released
revisions are justified, per revision and rule, in ``tests/schema/migration_lint.toml`` (those
revisions are never edited); any other finding fails, and so does a justification squawk no
longer needs. ``make migrations-lint`` runs this file alone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from agentledger.cli import main
from agentledger.schema.alembic import alembic_config

ALLOWANCES = Path(__file__).with_name("migration_lint.toml")
#: Offline SQL needs a dialect, never a server: nothing listens on port 1.
REVIEW_URL = "postgresql://agentledger@127.0.0.1:1/review"
SQUAWK_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.rule}: {self.message}"


def squawk() -> str:
    """The squawk of the venv running the tests (else one on PATH)."""
    beside = Path(sys.executable).with_name("squawk")
    found = str(beside) if beside.is_file() else shutil.which("squawk")
    assert found, "squawk is missing: pip install -e '.[dev]' (it brings squawk-cli)"
    return found


def lint(sql: str, name: str) -> list[Finding]:
    done = subprocess.run(
        [squawk(), "--reporter", "json", "--stdin-filepath", f"{name}.sql"],
        input=sql,
        capture_output=True,
        text=True,
        check=False,
        timeout=SQUAWK_TIMEOUT,
    )
    # 0: nothing found, 1: findings (listed as JSON); anything else is squawk failing.
    assert done.returncode in (0, 1), done.stderr
    return [
        Finding(str(item["rule_name"]), int(item["line"]) + 1, str(item["message"]))
        for item in json.loads(done.stdout or "[]")
    ]


def unjustified(
    findings: list[Finding], revision: str, allowances: dict[str, dict[str, str]]
) -> list[Finding]:
    allowed = allowances.get(revision, {})
    return [finding for finding in findings if finding.rule not in allowed]


def offline_sql(capsys: pytest.CaptureFixture[str], revision_range: str) -> str:
    code = main(["--database-url", REVIEW_URL, "db", "upgrade", "--sql", revision_range])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def load_allowances() -> dict[str, dict[str, str]]:
    with ALLOWANCES.open("rb") as file:
        loaded = tomllib.load(file)
    return {revision: dict(rules) for revision, rules in loaded.items()}


def revision_steps() -> list[tuple[str, str]]:
    """``(previous, revision)`` for every revision, oldest first (``base`` before the first)."""
    script = ScriptDirectory.from_config(alembic_config())
    steps = []
    for revision in reversed(list(script.walk_revisions())):
        previous = revision.down_revision
        assert previous is None or isinstance(previous, str), "the history is linear"
        steps.append((previous or "base", revision.revision))
    return steps


STEPS = revision_steps()


@pytest.mark.parametrize(("previous", "revision"), STEPS, ids=[step[1] for step in STEPS])
def test_revision_sql_passes_squawk_or_is_justified(
    capsys: pytest.CaptureFixture[str], previous: str, revision: str
) -> None:
    sql = offline_sql(capsys, f"{previous}:{revision}")
    assert f"-> {revision}\n" in sql  # exactly this revision's step
    findings = lint(sql, revision)
    allowances = load_allowances()

    new = unjustified(findings, revision, allowances)
    assert not new, (
        f"squawk finds statements in {revision} that may lock tables for long; fix them or "
        f"justify each rule under [{revision}] in {ALLOWANCES.name}:\n"
        + "\n".join(str(finding) for finding in new)
    )
    stale = set(allowances.get(revision, {})) - {finding.rule for finding in findings}
    assert not stale, f"squawk no longer reports {sorted(stale)} in {revision}: remove them"


def test_every_justification_names_a_revision_and_gives_a_reason() -> None:
    revisions = {revision for _previous, revision in STEPS}
    for revision, rules in load_allowances().items():
        assert revision in revisions, f"{ALLOWANCES.name}: {revision} is not a revision"
        for rule, reason in rules.items():
            assert len(reason.split()) >= 5, f"{revision}.{rule}: say why it is acceptable"


def test_a_new_revision_with_a_blocking_index_fails_the_lint() -> None:
    """What the check is for: a plain CREATE INDEX on an existing table, in a revision that
    has no justification, is reported."""
    sql = (
        "BEGIN;\n"
        "CREATE INDEX ix_conversation_messages_role ON conversation_messages (role);\n"
        "COMMIT;\n"
    )
    findings = lint(sql, "agentledger_9999")
    new = unjustified(findings, "agentledger_9999", load_allowances())
    assert "require-concurrent-index-creation" in {finding.rule for finding in new}
    assert all(finding.line == 2 for finding in new)
    # The same finding in a released revision whose entry justifies the rule passes.
    assert not [
        finding
        for finding in unjustified(findings, "agentledger_0004", load_allowances())
        if finding.rule == "require-concurrent-index-creation"
    ]
