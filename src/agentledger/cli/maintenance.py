"""``agentledger cleanup``, ``agentledger erase-user`` and ``agentledger retire-partition``:
deleting at scale."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from datetime import timedelta
from typing import Any

from agentledger.cli.arguments import add_json_flag, count_from, format_duration, parse_duration
from agentledger.cli.output import EXIT_FAILED, EXIT_OK, Output, error_line
from agentledger.domain.records import BlockedSession, ErasureReport
from agentledger.domain.retention import RetentionPolicy, RetentionReport, load_policy_file
from agentledger.errors import LedgerError
from agentledger.ledger import Ledger
from agentledger.services.base import MAX_BATCH_SIZE


def register(commands: Any) -> None:
    cleanup = commands.add_parser(
        "cleanup", help="delete idle sessions, or apply retention policies per agent"
    )
    add_json_flag(cleanup)
    chosen = cleanup.add_mutually_exclusive_group()
    chosen.add_argument(
        "--older-than",
        type=parse_duration,
        help="delete sessions idle this long, e.g. 30d, 12h, 1d12h (without it: --policy FILE, "
        "else the AGENTLEDGER_RETENTION policies)",
    )
    cleanup.add_argument("--dry-run", action="store_true", help="only count")
    cleanup.add_argument(
        "--batch-size",
        type=count_from(1, MAX_BATCH_SIZE),
        default=500,
        help="sessions per transaction (default 500)",
    )
    chosen.add_argument(
        "--policy",
        metavar="FILE",
        help="JSON retention policies per agent (default: the AGENTLEDGER_RETENTION setting)",
    )
    cleanup.set_defaults(handler=cleanup_sessions)

    erase = commands.add_parser(
        "erase-user", help="delete every session, message and usage record of a user"
    )
    erase.add_argument("user", metavar="USER", help="user id")
    erase.add_argument("--yes", action="store_true", help="really erase (cannot be undone)")
    erase.add_argument(
        "--batch-size",
        type=count_from(1, MAX_BATCH_SIZE),
        default=500,
        help="sessions per transaction (default 500)",
    )
    add_json_flag(erase)
    erase.set_defaults(handler=erase_user)

    retire = commands.add_parser(
        "retire-partition",
        help="drop a time partition of the messages (PostgreSQL), cutting each history it held",
    )
    retire.add_argument("partition", metavar="PARTITION", help="e.g. conversation_messages_2025_01")
    retire.add_argument("--dry-run", action="store_true", help="only count")
    retire.add_argument(
        "--lock-timeout",
        type=parse_duration,
        default=timedelta(seconds=2),
        help="how long to wait for the tables' lock before trying again, e.g. 5s (default 2s)",
    )
    add_json_flag(retire)
    retire.set_defaults(handler=retire_partition)


# -- retire-partition ---------------------------------------------------------------------------


async def retire_partition(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    report = await ledger.service.retire_message_partition(
        args.partition, dry_run=args.dry_run, lock_timeout=args.lock_timeout
    )
    out.result(report.describe(), dataclasses.asdict(report))
    return EXIT_OK


# -- cleanup ------------------------------------------------------------------------------------


async def cleanup_sessions(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    if args.older_than is None:
        return await _cleanup_by_policy(ledger, args, out)
    age = format_duration(args.older_than)
    if args.dry_run:
        sessions, messages = await ledger.service.count_idle_sessions(args.older_than)
        out.result(
            f"would delete {sessions} sessions ({messages} messages) idle for more than {age}",
            {"dry_run": True, "sessions": sessions, "messages": messages, "older_than": age},
        )
        return EXIT_OK
    blocked: list[BlockedSession] = []
    with out.progress(None, "sessions deleted") as progress:
        deleted = await ledger.service.cleanup_sessions(
            args.older_than,
            batch_size=args.batch_size,
            on_progress=progress.update,
            on_blocked=blocked.append,
        )
    out.result(
        f"deleted {deleted} sessions idle for more than {age}",
        {
            "dry_run": False,
            "sessions": deleted,
            "older_than": age,
            "blocked": [_blocked_json(session) for session in blocked],
        },
    )
    return _report_blocked(blocked)


async def _cleanup_by_policy(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    policies: dict[str, RetentionPolicy]
    if args.policy is not None:
        policies = load_policy_file(args.policy)
    else:
        policies = dict(ledger.settings.retention)
    if not policies:
        raise LedgerError(
            "nothing to clean up: pass --older-than 30d, or --policy FILE, or set "
            'AGENTLEDGER_RETENTION (e.g. {"*": {"days": 90}})'
        )
    with out.progress(None, "") as progress:

        def show(report: RetentionReport) -> None:
            progress.update(f"{report.describe()}...")

        report = await ledger.service.apply_retention(
            policies, dry_run=args.dry_run, batch_size=args.batch_size, on_progress=show
        )
    if out.json_mode:
        out.json(
            {
                "dry_run": report.dry_run,
                "policies": {
                    name: dataclasses.asdict(counts) for name, counts in report.policies.items()
                },
                "blocked": [_blocked_json(session) for session in report.blocked],
            }
        )
    else:
        out.line(report.describe())
        for name, counts in report.policies.items():
            label = "every other agent" if name == "*" else f"agent {name!r}"
            out.line(
                f"  {label} ({policies[name].describe()}): {counts.describe(dry_run=args.dry_run)}"
            )
    return _report_blocked(list(report.blocked))


# -- erase-user ---------------------------------------------------------------------------------


def _erasure_text(report: ErasureReport) -> str:
    return (
        f"{report.sessions} sessions, {report.messages} messages and "
        f"{report.usage_records} usage records"
    )


def _erasure_json(user_id: str, report: ErasureReport, *, erased: bool) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "erased": erased,
        "sessions": report.sessions,
        "messages": report.messages,
        "usage_records": report.usage_records,
        "blocked": [_blocked_json(session) for session in report.blocked],
    }


def _blocked_json(session: BlockedSession) -> dict[str, Any]:
    return {
        "session_id": str(session.session_id),
        "table": session.table,
        "constraint": session.constraint,
    }


def _report_blocked(blocked: list[BlockedSession]) -> int:
    """Warn about sessions that other tables kept, once per foreign key; exit 1 if any."""
    by_key: dict[tuple[str | None, str | None], list[BlockedSession]] = {}
    for session in blocked:
        by_key.setdefault((session.table, session.constraint), []).append(session)
    for (table, constraint), sessions in by_key.items():
        shown = ", ".join(str(session.session_id) for session in sessions[:3])
        more = f" and {len(sessions) - 3} more" if len(sessions) > 3 else ""
        print(
            error_line(
                f"{len(sessions)} session(s) were left in place ({shown}{more}): table "
                f"{table or '(unknown)'} refers to them through the foreign key "
                f"{constraint or '(unnamed)'} without ON DELETE; delete or re-point those "
                'rows, or declare the key with ondelete="CASCADE" or "SET NULL"'
            ),
            file=sys.stderr,
        )
    return EXIT_FAILED if blocked else EXIT_OK


async def erase_user(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    service = ledger.service
    if not args.yes:
        report = await service.erase_user(args.user, batch_size=args.batch_size, dry_run=True)
        out.result(
            f"would erase {_erasure_text(report)} of user {args.user!r}",
            _erasure_json(args.user, report, erased=False),
        )
        print(error_line("erasing cannot be undone; rerun with --yes to erase"), file=sys.stderr)
        return EXIT_FAILED
    with out.progress(None, "") as progress:
        report = await service.erase_user(
            args.user,
            batch_size=args.batch_size,
            on_progress=lambda total: progress.update(f"erased {_erasure_text(total)}..."),
        )
    out.result(
        f"erased {_erasure_text(report)} of user {args.user!r}",
        _erasure_json(args.user, report, erased=True),
    )
    return _report_blocked(list(report.blocked))
