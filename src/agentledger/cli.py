"""The ``agentledger`` command line: schema rollout, inspection and cleanup for operators.

A thin layer over :class:`~agentledger.ledger.Ledger` and its service: it parses arguments,
calls one service operation and prints the result. Errors are one line on stderr with a
non-zero exit code, never a traceback:

* 0 — success;
* 1 — agentledger refused or failed the operation (the message says what to do);
* 2 — the command line itself was wrong (argparse's convention).

Tenant isolation: every command that reads or changes a session takes ``--user U`` and passes
it to the service's ``user_id=``, where the rule lives; another user's session then reads exactly
like a missing one (exit 1), and nothing is written. ``db``, ``cleanup`` and ``demo`` are
admin-wide by design (see docs/cli.md, "Tenant isolation").

The database URL comes from ``--database-url``, else ``AGENTLEDGER_DATABASE_URL``, else
``DATABASE_URL``, else the embedded default ``sqlite+aiosqlite:///agentledger.db``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TextIO

from pydantic import ValidationError

from . import cli_lifecycle
from .config import LedgerSettings, safe_url
from .errors import LedgerError
from .ledger import Ledger
from .records import ErasureReport, MessageRecord, SessionRecord, SessionSummary

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

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
    return timedelta(seconds=sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts))


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
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid JSON in {text!r}; after := write a JSON value such as 3, true, null, "
            '"text" or [1, 2]'
        ) from None


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """``--json``: one JSON document on stdout instead of the human-readable lines."""
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def emit(out: TextIO, args: argparse.Namespace, text: str, payload: dict[str, Any]) -> None:
    """Print ``payload`` as JSON with ``--json``, else ``text``."""
    if getattr(args, "json", False):
        print(json.dumps(payload, ensure_ascii=False), file=out)
    else:
        print(text, file=out)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentledger",
        description="Durable sessions and conversation history for AI agents.",
    )
    parser.add_argument(
        "--database-url",
        help="database URL (default: $AGENTLEDGER_DATABASE_URL, $DATABASE_URL, "
        "else sqlite+aiosqlite:///agentledger.db)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = commands.add_parser("db", help="roll the schema out (Alembic)")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_commands.add_parser("upgrade", help="upgrade to a revision (default: head)")
    upgrade.add_argument("revision", nargs="?", default="head")
    downgrade = db_commands.add_parser("downgrade", help="downgrade to REV ('base' drops all)")
    downgrade.add_argument("revision")
    current = db_commands.add_parser("current", help="show the applied agentledger revision")
    adopt = db_commands.add_parser(
        "adopt", help="upgrade a database on the seed's schema in place, keeping every row"
    )
    rls = db_commands.add_parser(
        "rls", help="PostgreSQL row-level security on agentledger's tables (docs/security.md)"
    )
    rls.add_argument(
        "rls_command",
        choices=["enable", "disable", "status"],
        metavar="{enable,disable,status}",
        help="switch it on or off (as the tables' owner), or report it",
    )
    for parser_ in (upgrade, downgrade, current, adopt, rls):
        add_json_flag(parser_)

    sessions = commands.add_parser("sessions", help="inspect sessions")
    session_commands = sessions.add_subparsers(
        dest="sessions_command", required=True, metavar="ACTION"
    )
    listing = session_commands.add_parser("list", help="a user's sessions, newest first")
    listing.add_argument("--user", required=True, help="user id")
    listing.add_argument("--limit", type=int, default=20, help="page size (default 20)")
    listing.add_argument("--cursor", help="next_cursor printed by the previous page")
    listing.add_argument("--agent", help="only this agent's sessions")
    listing.add_argument(
        "--meta",
        action="append",
        type=parse_meta_pair,
        default=[],
        metavar="KEY=VALUE",
        help="only sessions whose metadata has this top-level value (repeatable; KEY:=JSON "
        "for a number or boolean)",
    )
    listing.add_argument(
        "--archived", action="store_true", help="include sessions archived by retention"
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    show = session_commands.add_parser("show", help="one session with its history")
    show.add_argument("session_id", metavar="ID", help="session UUID (or name, with --user)")
    show.add_argument("--user", help="only if owned by this user id")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    fork = session_commands.add_parser(
        "fork", help="a new session sharing this one's history up to a seq"
    )
    fork.add_argument("session_id", metavar="ID", help="session UUID (or name, with --user)")
    fork.add_argument("--at", type=int, metavar="SEQ", help="last seq to share (default: all)")
    fork.add_argument("--title", help="title of the new session (default: the source's)")
    fork.add_argument("--user", help="only if owned by this user id")
    fork.add_argument("--json", action="store_true", help="machine-readable output")
    rewind = session_commands.add_parser("rewind", help="drop every message after a seq")
    rewind.add_argument("session_id", metavar="ID", help="session UUID (or name, with --user)")
    rewind.add_argument("--to", required=True, type=int, metavar="SEQ", help="last seq to keep")
    rewind.add_argument("--user", help="only if owned by this user id")
    rewind.add_argument("--json", action="store_true", help="machine-readable output")
    meta = session_commands.add_parser(
        "meta", help="show or merge-update a session's metadata, or set its title"
    )
    meta.add_argument("session_id", metavar="ID", help="session UUID (or name, with --user)")
    meta_change = meta.add_mutually_exclusive_group()
    meta_change.add_argument(
        "changes",
        nargs="*",
        default=[],
        type=parse_meta_pair,
        metavar="KEY=VALUE",
        help="set KEY to the text VALUE; KEY:=JSON sets a JSON value, KEY:=null removes KEY",
    )
    meta_change.add_argument("--title", help="set the session's title")
    meta_change.add_argument(
        "--clear-title",
        action="store_true",
        help="remove the title (pickers show the first user message)",
    )
    meta.add_argument("--user", help="only if owned by this user id")
    meta.add_argument("--json", action="store_true", help="machine-readable output")

    cli_lifecycle.add_session_commands(session_commands)
    cli_lifecycle.add_search_command(commands)

    cleanup = commands.add_parser(
        "cleanup", help="delete idle sessions, or apply retention policies per agent"
    )
    add_json_flag(cleanup)
    cleanup.add_argument(
        "--older-than",
        type=parse_duration,
        help="delete sessions idle this long, e.g. 30d, 12h, 1d12h (without it: --policy FILE, "
        "else the AGENTLEDGER_RETENTION policies)",
    )
    cleanup.add_argument("--dry-run", action="store_true", help="only count")
    cleanup.add_argument(
        "--batch-size", type=int, default=500, help="sessions per transaction (default 500)"
    )
    cli_lifecycle.add_cleanup_options(cleanup)

    erase = commands.add_parser(
        "erase-user", help="delete every session, message and usage record of a user"
    )
    erase.add_argument("user", metavar="USER", help="user id")
    erase.add_argument("--yes", action="store_true", help="really erase (cannot be undone)")
    erase.add_argument(
        "--batch-size", type=int, default=500, help="sessions per transaction (default 500)"
    )
    erase.add_argument("--json", action="store_true", help="machine-readable output")

    importing = commands.add_parser(
        "import", help="copy history from the Agents SDK's SQLiteSession / SQLAlchemySession"
    )
    importing.add_argument("source", help="path of an SDK SQLite file, or a database URL")
    add_json_flag(importing)
    importing.add_argument("--user", required=True, help="user id that will own the sessions")
    importing.add_argument("--agent-name", default="agent", help="agent name of new sessions")
    importing.add_argument(
        "--messages-table", default="agent_messages", help="source table (default agent_messages)"
    )

    demo = commands.add_parser("demo", help="the two-process memory demo on the default SQLite")
    demo.add_argument("--step", type=int, choices=(1, 2), help=argparse.SUPPRESS)

    chat = commands.add_parser("chat", help="interactive chat over a stored session")
    chat.add_argument("--session", required=True, help="session name or UUID")
    chat.add_argument("--user", default="default", help="user id (default: 'default')")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agentledger`` script; returns the process exit code."""
    args = _build_parser().parse_args(argv)
    try:
        settings = (
            LedgerSettings(database_url=args.database_url)
            if args.database_url
            else LedgerSettings()
        )
        return asyncio.run(_dispatch(args, settings))
    except LedgerError as error:
        _fail(str(error))
    except ValidationError as error:
        _fail(_settings_problem(error))
    except (ValueError, TypeError) as error:
        _fail(str(error))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return EXIT_FAILED


def _fail(message: str) -> None:
    print(f"agentledger: error: {message}", file=sys.stderr)


def _settings_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "settings"
    return f"invalid setting {where}: {first.get('msg', 'invalid value')}"


async def _dispatch(args: argparse.Namespace, settings: LedgerSettings) -> int:
    if args.command == "demo":
        from .demo import run_demo

        await run_demo(settings.database_url, step=args.step)
        return EXIT_OK
    if args.command == "chat":
        from .demo import run_chat

        await run_chat(settings.database_url, args.session, args.user)
        return EXIT_OK
    if args.command == "import":
        async with Ledger.from_settings(settings) as ledger:
            return await _import(ledger, args, sys.stdout)
    handler = _HANDLERS[(args.command, _action_of(args))]
    async with Ledger.from_settings(settings) as ledger:
        return await handler(ledger, args, sys.stdout)


def _action_of(args: argparse.Namespace) -> str | None:
    return getattr(args, "db_command", None) or getattr(args, "sessions_command", None)


# -- handlers -------------------------------------------------------------------------------

Handler = Callable[[Ledger, argparse.Namespace, TextIO], Awaitable[int]]


async def _report_revision(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    from .schema import head_revision

    current = await ledger.current_revisions()
    url = safe_url(ledger.engine.url)
    emit(
        out,
        args,
        f"{url} is at {', '.join(current) or 'base'}",
        {"database": url, "current": list(current), "head": head_revision()},
    )
    return EXIT_OK


async def _db_upgrade(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    await ledger.upgrade(args.revision)
    return await _report_revision(ledger, args, out)


async def _db_downgrade(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    await ledger.downgrade(args.revision)
    return await _report_revision(ledger, args, out)


async def _db_current(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    from .schema import head_revision

    current = await ledger.current_revisions()
    head = head_revision()
    state = "(head)" if head in current else f"(head is {head}; run `agentledger db upgrade`)"
    emit(
        out,
        args,
        f"{', '.join(current) or 'base'} {state}",
        {"current": list(current), "head": head, "at_head": head in current},
    )
    return EXIT_OK


async def _db_rls(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    if args.rls_command == "status":
        status = await ledger.row_level_security()
    else:
        status = await ledger.set_row_level_security(args.rls_command == "enable")
    off = sorted(table for table, on in status.tables.items() if not on)
    if status.enabled:
        state = f"row-level security is on for all {len(status.tables)} agentledger tables"
    elif len(off) == len(status.tables):
        state = "row-level security is off"
    else:
        state = f"row-level security is off for {', '.join(off)}"
    if status.enabled and status.exempt_because is not None:
        state += f"; it does not bind this connection: {status.exempt_because}"
    emit(
        out,
        args,
        state,
        {
            "enabled": status.enabled,
            "tables": status.tables,
            "role": status.role,
            "protects_role": status.protects_role,
            "exempt_because": status.exempt_because,
        },
    )
    return EXIT_OK


async def _db_adopt(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    def progress(done: int, total: int) -> None:
        if out.isatty():
            print(f"\rconverting messages: {done}/{total}", end="", file=out, flush=True)

    report = await ledger.adopt(on_progress=progress)
    if out.isatty():
        print("\r", end="", file=out)
    current = await ledger.current_revisions()
    emit(
        out,
        args,
        f"adopted {report.sessions} sessions and {report.messages} messages; "
        f"{safe_url(ledger.engine.url)} is at {', '.join(current)}",
        {"sessions": report.sessions, "messages": report.messages, "current": list(current)},
    )
    return EXIT_OK


async def _sessions_list(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    page = await ledger.service_for(args.user).list_user_sessions(
        args.user,
        args.limit,
        cursor=args.cursor,
        agent_name=args.agent,
        metadata=dict(args.meta) or None,
        include_archived=args.archived,
    )
    if args.json:
        payload = {
            "sessions": [_summary_json(summary) for summary in page],
            "next_cursor": page.next_cursor,
        }
        print(json.dumps(payload, ensure_ascii=False), file=out)
        return EXIT_OK
    if not page.sessions:
        print(f"no sessions for user {args.user!r}", file=out)
    for summary in page:
        title = f"  {summary.title}" if summary.title else ""
        print(
            f"{summary.id}  {summary.updated_at:%Y-%m-%d %H:%M:%S}Z  "
            f"{summary.message_count:>6} msgs  {summary.agent_name}{title}",
            file=out,
        )
    if page.next_cursor:
        print(f"more: --cursor {page.next_cursor}", file=out)
    return EXIT_OK


async def _sessions_show(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    record = await ledger.service_for(args.user).get_session(_session_ref(args), user_id=args.user)
    if record is None:
        raise _no_session(args)
    if args.json:
        print(json.dumps(_record_json(record), ensure_ascii=False), file=out)
        return EXIT_OK
    print(f"session {record.id}  user {record.user_id}  agent {record.agent_name}", file=out)
    print(
        f"created {record.created_at.isoformat()}  updated {record.updated_at.isoformat()}",
        file=out,
    )
    if record.title is not None:
        print(f"title {record.title}", file=out)
    if record.metadata:
        print(f"metadata {json.dumps(record.metadata, ensure_ascii=False)}", file=out)
    for message in record.messages:
        print(_message_line(message), file=out)
    return EXIT_OK


def _session_ref(args: argparse.Namespace) -> str | uuid.UUID:
    """The ID argument of a session command (see :func:`cli_lifecycle.session_ref`)."""
    return cli_lifecycle.session_ref(args.session_id, args.user)


def _no_session(args: argparse.Namespace) -> LedgerError:
    """What reading a session that is missing (or another user's) reports: the same text."""
    owner = f" for user {args.user!r}" if args.user else ""
    return LedgerError(
        f"no session {args.session_id}{owner}; list them with "
        "`agentledger sessions list --user USER`"
    )


async def _sessions_fork(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    record = await ledger.service_for(args.user).fork_session(
        _session_ref(args), args.at, user_id=args.user, title=args.title
    )
    if args.json:
        print(json.dumps(_head_json(record), ensure_ascii=False), file=out)
        return EXIT_OK
    at = "" if args.at is None else f" at seq {args.at}"
    print(
        f"forked {args.session_id}{at} into {record.id} ({len(record.messages)} messages)",
        file=out,
    )
    return EXIT_OK


async def _sessions_rewind(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    removed = await ledger.service_for(args.user).rewind_session(
        _session_ref(args), args.to, user_id=args.user
    )
    if args.json:
        payload = {"session_id": args.session_id, "to_seq": args.to, "removed": removed}
        print(json.dumps(payload, ensure_ascii=False), file=out)
        return EXIT_OK
    print(f"removed {removed} messages; {args.session_id} now ends at seq {args.to}", file=out)
    return EXIT_OK


async def _sessions_meta(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    service = ledger.service_for(args.user)
    session_id = _session_ref(args)
    record: SessionRecord | None
    if args.changes:
        record = await service.update_metadata(session_id, dict(args.changes), user_id=args.user)
    elif args.title is not None or args.clear_title:
        record = await service.set_title(session_id, args.title, user_id=args.user)
    else:
        record = await service.get_session(session_id, user_id=args.user)
        if record is None:
            raise _no_session(args)
    if args.json:
        payload = {"id": str(record.id), "title": record.title, "metadata": record.metadata}
        print(json.dumps(payload, ensure_ascii=False), file=out)
        return EXIT_OK
    print(f"title {record.title if record.title is not None else '(none)'}", file=out)
    print(f"metadata {json.dumps(record.metadata, ensure_ascii=False)}", file=out)
    return EXIT_OK


async def _erase_user(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    service = ledger.service_for(args.user)
    if not args.yes:
        report = await service.erase_user(args.user, batch_size=args.batch_size, dry_run=True)
        if args.json:
            print(json.dumps(_erasure_json(args.user, report, erased=False)), file=out)
        else:
            print(f"would erase {_erasure_text(report)} of user {args.user!r}", file=out)
        _fail("erasing cannot be undone; rerun with --yes to erase")
        return EXIT_FAILED

    def progress(total: ErasureReport) -> None:
        if out.isatty():
            print(f"\rerased {_erasure_text(total)}...", end="", file=out, flush=True)

    report = await service.erase_user(args.user, batch_size=args.batch_size, on_progress=progress)
    if out.isatty():
        print("\r", end="", file=out)
    if args.json:
        print(json.dumps(_erasure_json(args.user, report, erased=True)), file=out)
    else:
        print(f"erased {_erasure_text(report)} of user {args.user!r}", file=out)
    return EXIT_OK


async def _cleanup(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    await _require_every_tenant(ledger, "cleanup")
    if args.older_than is None:
        return await cli_lifecycle.cleanup_by_policy(ledger, args, out)
    if args.policy is not None:
        raise LedgerError("use either --older-than or --policy, not both")
    if args.dry_run:
        sessions, messages = await ledger.service.count_idle_sessions(args.older_than)
        emit(
            out,
            args,
            f"would delete {sessions} sessions ({messages} messages) idle for more than "
            f"{format_duration(args.older_than)}",
            {
                "dry_run": True,
                "sessions": sessions,
                "messages": messages,
                "older_than": format_duration(args.older_than),
            },
        )
        return EXIT_OK

    def progress(total: int) -> None:
        if out.isatty():
            print(f"\rdeleted {total} sessions...", end="", file=out, flush=True)

    deleted = await ledger.service.cleanup_sessions(
        args.older_than, batch_size=args.batch_size, on_progress=progress
    )
    if out.isatty():
        print("\r", end="", file=out)
    emit(
        out,
        args,
        f"deleted {deleted} sessions idle for more than {format_duration(args.older_than)}",
        {"dry_run": False, "sessions": deleted, "older_than": format_duration(args.older_than)},
    )
    return EXIT_OK


async def _require_every_tenant(ledger: Ledger, command: str) -> None:
    """Refuse maintenance across tenants from a role that row-level security confines: it
    would see no session at all and report success while doing nothing."""
    if ledger.engine.dialect.name != "postgresql":
        return
    status = await ledger.row_level_security()
    if status.protects_role:
        raise LedgerError(
            f"`{command}` acts on every tenant's sessions, but row-level security confines role "
            f"{status.role} to one tenant's, so it would find none; run it as the tables' owner "
            "(the role that runs `agentledger db upgrade`) or a role with BYPASSRLS"
        )


async def _import(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    from .importer import import_sdk_store

    def progress(done: int, total: int) -> None:
        if out.isatty():
            print(f"\rimporting: {done}/{total} rows", end="", file=out, flush=True)

    report = await import_sdk_store(
        ledger.service_for(args.user),
        args.source,
        user_id=args.user,
        agent_name=args.agent_name,
        messages_table=args.messages_table,
        on_progress=progress,
    )
    if out.isatty():
        print("\r", end="", file=out)
    emit(
        out,
        args,
        f"imported {report.items} new items into {report.sessions} sessions for user {args.user!r}",
        {"sessions": report.sessions, "items": report.items, "unreadable": report.unreadable},
    )
    if report.unreadable:
        print(
            f"agentledger: warning: {report.unreadable} source rows were not valid JSON and "
            "were left out",
            file=sys.stderr,
        )
    return EXIT_OK


_HANDLERS: dict[tuple[str, str | None], Handler] = {
    ("db", "upgrade"): _db_upgrade,
    ("db", "downgrade"): _db_downgrade,
    ("db", "current"): _db_current,
    ("db", "adopt"): _db_adopt,
    ("db", "rls"): _db_rls,
    ("sessions", "list"): _sessions_list,
    ("sessions", "show"): _sessions_show,
    ("sessions", "fork"): _sessions_fork,
    ("sessions", "rewind"): _sessions_rewind,
    ("sessions", "meta"): _sessions_meta,
    ("erase-user", None): _erase_user,
    ("cleanup", None): _cleanup,
}
_HANDLERS.update(cli_lifecycle.HANDLERS)


# -- rendering --------------------------------------------------------------------------------


def _message_line(message: MessageRecord) -> str:
    text = message.content.replace("\x00", "\\0")
    if message.tool_calls:
        calls = ", ".join(_call_label(call) for call in message.tool_calls)
        text = f"{text} [calls: {calls}]" if text else f"[calls: {calls}]"
    if message.tool_call_id:
        text = f"[result of {message.tool_call_id}] {text}"
    return f"{message.seq:>5}  {message.role:<9} {text}"


def _call_label(call: dict[str, Any]) -> str:
    function = call.get("function")
    name = function.get("name") if isinstance(function, dict) else call.get("type")
    return f"{name}({call.get('id')})"


def _summary_json(summary: SessionSummary) -> dict[str, Any]:
    return {
        "id": str(summary.id),
        "user_id": summary.user_id,
        "agent_name": summary.agent_name,
        "metadata": summary.metadata,
        "created_at": summary.created_at.isoformat(),
        "updated_at": summary.updated_at.isoformat(),
        "message_count": summary.message_count,
        "title": summary.title,
        "archived_at": None if summary.archived_at is None else summary.archived_at.isoformat(),
    }


def _session_fields(record: SessionRecord) -> dict[str, Any]:
    """The session's own fields, as every JSON output shows them."""
    return {
        "id": str(record.id),
        "user_id": record.user_id,
        "agent_name": record.agent_name,
        "title": record.title,
        "metadata": record.metadata,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


def _head_json(record: SessionRecord) -> dict[str, Any]:
    """A session without its messages (how many there are instead)."""
    return {**_session_fields(record), "message_count": len(record.messages)}


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
    }


def _record_json(record: SessionRecord) -> dict[str, Any]:
    return {
        **_session_fields(record),
        "messages": [
            {
                "seq": message.seq,
                "role": message.role,
                "content": message.content,
                "tool_calls": message.tool_calls,
                "tool_call_id": message.tool_call_id,
                "created_at": message.created_at.isoformat(),
            }
            for message in record.messages
        ],
    }


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
