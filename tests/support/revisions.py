"""agentledger's revision history as the tests need it."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from agentledger.schema.alembic import alembic_config, head_revision


def before_head() -> str:
    """The revision right before agentledger's head (where ``db downgrade -1`` lands)."""
    script = ScriptDirectory.from_config(alembic_config())
    down = script.get_revision(head_revision()).down_revision
    assert isinstance(down, str), down
    return down
