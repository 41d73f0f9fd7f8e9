"""Retention policies: how long sessions live and how much history they keep, per agent.

A policy set maps agent names to :class:`RetentionPolicy`; the key ``"*"`` is the default for
every agent not named. A named agent with an empty policy (``{}``) is exempt from the default.

* ``days`` — sessions not updated for longer are deleted (with their history), or, with
  ``archive``, marked archived: kept, but left out of listings and search by default.
* ``max_messages`` — the oldest messages are trimmed so that at most N remain, always. A cut
  never separates a ``function_call`` from its ``function_call_output`` (nor any other pair
  the history windows keep together, see :func:`agentledger.domain.windows.cut_points`): when the
  cut would fall inside such a pair, more is trimmed, so a session may keep a few fewer
  than N, never more.

Policies come from :class:`~agentledger.config.LedgerSettings` (``AGENTLEDGER_RETENTION``, JSON)
or a JSON file (``agentledger cleanup --policy FILE``), e.g.::

    {"*": {"days": 90}, "support": {"days": 365, "archive": true, "max_messages": 500},
     "audit": {}}

This module is pure (no database): the service applies the policies, see
:meth:`agentledger.SessionService.apply_retention`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentledger.domain.records import BlockedSession
from agentledger.domain.windows import cut_points, unanchored_end, unlinked
from agentledger.errors import InvalidInputError

#: The policy key that applies to every agent without a policy of its own.
DEFAULT_POLICY_KEY = "*"
_MAX_NAME_LENGTH = 255


class RetentionPolicy(BaseModel):
    """What to keep of one agent's sessions. Every field is optional: ``{}`` keeps everything."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    #: Sessions idle (not updated) for more than this many days are deleted or archived.
    days: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    #: Keep at most this many messages per session (the newest), never splitting a tool pair.
    max_messages: int | None = Field(default=None, ge=0, le=2**63 - 1)
    #: Archive idle sessions instead of deleting them (needs ``days``).
    archive: bool = False

    @model_validator(mode="after")
    def _archive_needs_days(self) -> RetentionPolicy:
        if self.archive and self.days is None:
            raise ValueError("archive applies to idle sessions: set days as well")
        return self

    def describe(self) -> str:
        parts = []
        if self.days is not None:
            action = "archive" if self.archive else "delete"
            parts.append(f"{action} after {self.days:g} idle days")
        if self.max_messages is not None:
            kept = self.max_messages
            parts.append(
                "keep no messages"
                if kept == 0
                else "keep the last message"
                if kept == 1
                else f"keep the last {kept} messages"
            )
        return ", ".join(parts) or "keep everything"


def parse_policies(value: object) -> dict[str, RetentionPolicy]:
    """Validate a policy set: a mapping (or JSON text) of agent name -> policy (or its dict)."""
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as error:
            problem = "nested too deeply" if isinstance(error, RecursionError) else str(error)
            raise InvalidInputError(
                f"retention policies are not valid JSON ({problem}); expected e.g. "
                '{"*": {"days": 30}}'
            ) from None
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            "retention policies must map agent names (or '*') to policies, e.g. "
            '{"*": {"days": 30}, "support": {"max_messages": 200}}'
        )
    policies: dict[str, RetentionPolicy] = {}
    for name, policy in value.items():
        if not isinstance(name, str) or not name or len(name) > _MAX_NAME_LENGTH:
            raise InvalidInputError(
                f"retention policy key {name!r} must be an agent name (1 to "
                f"{_MAX_NAME_LENGTH} characters) or '*'"
            )
        if isinstance(policy, RetentionPolicy):
            policies[name] = policy
            continue
        try:
            policies[name] = RetentionPolicy.model_validate(policy)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first.get("loc", ()))
            problem = first.get("msg", "invalid value")
            raise InvalidInputError(
                f"retention policy for {name!r}: {where + ': ' if where else ''}{problem}; "
                "allowed keys are days (>= 0), max_messages (an int from 0 to 2**63-1) and "
                "archive (bool)"
            ) from None
    return policies


def load_policy_file(path: str | Path) -> dict[str, RetentionPolicy]:
    """Read a policy set from a JSON file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidInputError(
            f"cannot read the policy file {str(path)!r} ({error.strerror or error}); check the path"
        ) from None
    try:
        return parse_policies(text)
    except InvalidInputError as error:
        raise InvalidInputError(f"{path}: {error}") from None


def trim_cut(items: Sequence[Any], max_messages: int) -> int:
    """How many of the oldest ``items`` to trim so that at most ``max_messages`` remain.

    The limit always holds, whatever the items say: when the cut would split a call from its
    output (or a reasoning item from what follows it), the cut moves *later*, trimming a few
    more, never earlier. (Moving it earlier let content dodge the policy: one ``call_id``
    reused at both ends of a history made every cut "split a pair", and nothing was ever
    trimmed.) In the worst case everything is trimmed; 0 when nothing need be.
    """
    excess = len(items) - max_messages
    if excess <= 0:
        return 0
    return front_cut(items, excess)


def front_cut(items: Sequence[Any], at_least: int, *, history_starts: bool = True) -> int:
    """How many of the oldest ``items`` to cut so that at least ``at_least`` go and no call is
    separated from its output (nor a reasoning item from what follows it): the cut only ever
    moves later. ``len(items)`` (everything) when no earlier cut keeps the pairs whole.

    ``history_starts=False``: ``items`` are a stretch from the middle of a history whose earlier
    part goes as well, so an output among them whose call lies before them goes too (with
    everything before it). The one rule for cutting a history's front: retention's
    ``max_messages`` and retiring a time partition
    (:meth:`agentledger.SessionService.retire_message_partition`) both use it.
    """
    if not 0 <= at_least <= len(items):
        raise ValueError(f"at_least must be between 0 and {len(items)}, got {at_least}")
    cut = at_least
    if not history_starts:
        return _cut_after_gone(items, cut)
    allowed = cut_points(items)  # allowed[len(items)] is always True
    while not allowed[cut]:
        cut += 1
    return cut


def _cut_after_gone(items: Sequence[Any], cut: int) -> int:
    """:func:`front_cut` when what lies before ``items`` has gone: whatever goes binds nothing
    that stays (a call id reused by a later, complete pair must not tie it to an output that
    goes), except that an output staying without its call goes too, and with it everything
    before it, which may leave other outputs without their calls: repeated until it holds."""
    while True:
        orphaned = unanchored_end(items[cut:])
        if orphaned:
            cut += orphaned
            continue
        allowed = cut_points([unlinked(item) for item in items[:cut]] + list(items[cut:]))
        moved = cut
        while not allowed[moved]:
            moved += 1
        if moved == cut:
            return cut
        cut = moved


# -- reports -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetentionCounts:
    """What one policy did (or, in a dry run, would do)."""

    deleted_sessions: int = 0
    deleted_messages: int = 0
    archived_sessions: int = 0
    trimmed_sessions: int = 0
    trimmed_messages: int = 0
    #: Sessions left in place because rows of another table refer to them (see ``blocked``
    #: of :class:`RetentionReport`).
    blocked_sessions: int = 0

    def __add__(self, other: RetentionCounts) -> RetentionCounts:
        return RetentionCounts(
            self.deleted_sessions + other.deleted_sessions,
            self.deleted_messages + other.deleted_messages,
            self.archived_sessions + other.archived_sessions,
            self.trimmed_sessions + other.trimmed_sessions,
            self.trimmed_messages + other.trimmed_messages,
            self.blocked_sessions + other.blocked_sessions,
        )

    def describe(self, *, dry_run: bool) -> str:
        """``deleted 3 sessions (12 messages), archived 1 session, trimmed 40 messages from
        2 sessions`` (``would delete ...`` in a dry run); ``nothing to do`` when empty."""
        parts = []
        if self.deleted_sessions:
            parts.append(
                f"delete {_count(self.deleted_sessions, 'session')} "
                f"({_count(self.deleted_messages, 'message')})"
            )
        if self.archived_sessions:
            parts.append(f"archive {_count(self.archived_sessions, 'session')}")
        if self.trimmed_sessions:
            parts.append(
                f"trim {_count(self.trimmed_messages, 'message')} from "
                f"{_count(self.trimmed_sessions, 'session')}"
            )
        blocked = (
            f"; skipped {_count(self.blocked_sessions, 'session')} that other tables refer to"
            if self.blocked_sessions
            else ""
        )
        if not parts:
            return "nothing to do" + blocked
        if dry_run:
            return "would " + ", ".join(parts) + blocked
        done = {"delete": "deleted", "archive": "archived", "trim": "trimmed"}
        described = (done[part.split(" ", 1)[0]] + part[part.index(" ") :] for part in parts)
        return ", ".join(described) + blocked


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What :meth:`~agentledger.SessionService.apply_retention` did, per policy key."""

    dry_run: bool
    policies: Mapping[str, RetentionCounts] = field(default_factory=dict)
    #: Sessions left in place because rows of another table refer to them.
    blocked: tuple[BlockedSession, ...] = ()

    @property
    def totals(self) -> RetentionCounts:
        total = RetentionCounts()
        for counts in self.policies.values():
            total = total + counts
        return total

    @property
    def deleted_sessions(self) -> int:
        return self.totals.deleted_sessions

    @property
    def deleted_messages(self) -> int:
        return self.totals.deleted_messages

    @property
    def archived_sessions(self) -> int:
        return self.totals.archived_sessions

    @property
    def trimmed_sessions(self) -> int:
        return self.totals.trimmed_sessions

    @property
    def trimmed_messages(self) -> int:
        return self.totals.trimmed_messages

    def describe(self) -> str:
        """One line for the totals."""
        return self.totals.describe(dry_run=self.dry_run)
