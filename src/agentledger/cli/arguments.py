"""Argument types and shared options of the command line."""

from __future__ import annotations

import argparse
import json
import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from agentledger.cli.output import UsageError
from agentledger.domain.naming import resolve_session_uuid, session_name
from agentledger.ledger import Ledger
from agentledger.services.facade import SessionService

_DURATION_PART = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``1d12h``, ``90m``, ``2w`` or ``45s`` as a timedelta."""
    compact = text.strip().lower()
    parts = _DURATION_PART.findall(compact)
    if not parts or _DURATION_PART.sub("", compact).strip():
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}; use a number with a unit: 30d, 12h, 90m, 2w, 1d12h"
        )
    seconds = sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if seconds > timedelta.max.total_seconds():
        raise argparse.ArgumentTypeError(
            f"duration {text!r} is longer than any date range ({timedelta.max.days} days at most)"
        )
    return timedelta(seconds=seconds)


def count_from(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (``--limit``,
    ``--batch-size``), refused as a command-line mistake (exit 2) naming the real range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {low} to {high}, got {text!r}"
            )
        return value

    return parse


def session_uuid(text: str) -> str:
    """An argparse type: a session UUID (``--session-id``)."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a session UUID, got {text!r}") from None


def format_duration(duration: timedelta) -> str:
    """The inverse of :func:`parse_duration` for display: ``1d12h``, ``30d``, ``0s``."""
    seconds = int(duration.total_seconds())
    parts = []
    for unit in ("d", "h", "m", "s"):
        amount, seconds = divmod(seconds, _UNIT_SECONDS[unit])
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"


def parse_meta_pair(text: str) -> tuple[str, Any]:
    """``key=value`` (the string ``value``) or ``key:=JSON`` (``n:=3``, ``vip:=true``,
    ``key:=null``) as a ``(key, value)`` pair."""
    key, sep, raw = text.partition("=")
    if not sep or not key or key == ":":
        raise argparse.ArgumentTypeError(
            f"invalid metadata pair {text!r}; use key=text or key:=JSON (e.g. tier=gold, n:=3)"
        )
    if not key.endswith(":"):
        return key, raw

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return key[:-1], json.loads(raw, parse_constant=refuse_constant)
    except (ValueError, RecursionError):
        raise argparse.ArgumentTypeError(
            f"invalid JSON in {text!r}; after := write a JSON value such as 3, true, null, "
            '"text" or [1, 2]'
        ) from None


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """``--json``: one JSON document on stdout instead of the human-readable lines."""
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def add_session_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session_id", metavar="ID", help="session UUID (or name, with --user)")


async def session_ref(
    service: SessionService, session_id: str, user: str | None
) -> str | uuid.UUID:
    """A command's session ID argument; with ``--user``, a session *name* (as used with
    ``ledger.agent_session`` or ``chat``) works too, looked up among that user's sessions."""
    name = None if user is None else session_name(session_id)
    if name is None or user is None:
        if session_name(session_id) is not None:  # not a UUID, and no --user to name it
            raise UsageError(
                f"ID {session_id!r} is not a session UUID; pass one, or --user USER to open "
                "that user's session by name"
            )
        return session_id
    found = await service.resolve_name(name, user_id=user)
    return found if found is not None else resolve_session_uuid(name, user)


def acting_for(ledger: Ledger, user: str | None) -> SessionService:
    """The service a command with ``--user U`` runs on: scoped to ``U``
    (:meth:`SessionService.for_user`), so that with PostgreSQL row-level security on it works
    from the application's role whatever the settings say (a command is not a hot path);
    without ``--user``, the unscoped service (the operator's)."""
    return ledger.service if user is None else ledger.service.for_user(user)
