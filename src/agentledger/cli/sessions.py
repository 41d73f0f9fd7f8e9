"""``agentledger sessions list|show|fork|rewind|meta``: one user's sessions, one session."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agentledger.cli.arguments import (
    acting_for,
    add_json_flag,
    add_session_argument,
    count_from,
    parse_meta_pair,
    session_ref,
)
from agentledger.cli.output import EXIT_OK, Output
from agentledger.domain.records import MessageRecord, SessionRecord, SessionSummary
from agentledger.domain.validation import MAX_PAGE_SIZE
from agentledger.errors import LedgerError
from agentledger.ledger import Ledger


def register(session_commands: Any) -> None:
    listing = session_commands.add_parser("list", help="a user's sessions, newest first")
    listing.add_argument("--user", required=True, help="user id")
    listing.add_argument(
        "--limit", type=count_from(1, MAX_PAGE_SIZE), default=20, help="page size (default 20)"
    )
    listing.add_argument("--cursor", help="next_cursor printed by the previous page")
    listing.add_argument("--agent", help="only this agent's sessions")
    listing.add_argument(
        "--framework", help="only this agent framework's sessions (openai-agents, adk, ...)"
    )
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
    add_json_flag(listing)
    listing.set_defaults(handler=list_sessions)

    show = session_commands.add_parser("show", help="one session with its history")
    add_session_argument(show)
    show.add_argument("--user", help="only if owned by this user id")
    add_json_flag(show)
    show.set_defaults(handler=show_session)

    fork = session_commands.add_parser(
        "fork", help="a new session sharing this one's history up to a seq"
    )
    add_session_argument(fork)
    fork.add_argument("--at", type=int, metavar="SEQ", help="last seq to share (default: all)")
    fork.add_argument("--title", help="title of the new session (default: the source's)")
    fork.add_argument("--user", help="only if owned by this user id")
    add_json_flag(fork)
    fork.set_defaults(handler=fork_session)

    rewind = session_commands.add_parser("rewind", help="drop every message after a seq")
    add_session_argument(rewind)
    rewind.add_argument("--to", required=True, type=int, metavar="SEQ", help="last seq to keep")
    rewind.add_argument("--user", help="only if owned by this user id")
    add_json_flag(rewind)
    rewind.set_defaults(handler=rewind_session)

    meta = session_commands.add_parser(
        "meta", help="show or merge-update a session's metadata, or set its title"
    )
    add_session_argument(meta)
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
    add_json_flag(meta)
    meta.set_defaults(handler=session_meta)


async def list_sessions(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    page = await acting_for(ledger, args.user).list_user_sessions(
        args.user,
        args.limit,
        cursor=args.cursor,
        agent_name=args.agent,
        metadata=dict(args.meta) or None,
        include_archived=args.archived,
        framework=args.framework,
    )
    if out.json_mode:
        out.json(
            {
                "sessions": [summary_json(summary) for summary in page],
                "next_cursor": page.next_cursor,
            }
        )
        return EXIT_OK
    if not page.sessions:
        out.line(f"no sessions for user {args.user!r}")
    for summary in page:
        title = f"  {summary.title}" if summary.title else ""
        out.line(
            f"{summary.id}  {summary.updated_at:%Y-%m-%d %H:%M:%S}Z  "
            f"{summary.message_count:>6} msgs  {summary.framework}  {summary.agent_name}{title}"
        )
    if page.next_cursor:
        out.line(f"more: --cursor {page.next_cursor}")
    return EXIT_OK


async def show_session(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    service = acting_for(ledger, args.user)
    session_id = await session_ref(service, args.session_id, args.user)
    record = await service.get_session(session_id, user_id=args.user)
    if record is None:
        raise no_session(args)
    if out.json_mode:
        out.json(record_json(record))
        return EXIT_OK
    out.line(
        f"session {record.id}  user {record.user_id}  agent {record.agent_name}  "
        f"framework {record.framework}"
    )
    out.line(f"created {record.created_at.isoformat()}  updated {record.updated_at.isoformat()}")
    if record.title is not None:
        out.line(f"title {record.title}")
    if record.metadata:
        out.line(f"metadata {json.dumps(record.metadata, ensure_ascii=False)}")
    for message in record.messages:
        out.line(message_line(message))
    return EXIT_OK


def no_session(args: argparse.Namespace) -> LedgerError:
    """What reading a session that is missing (or another user's) reports: the same text."""
    owner = f" for user {args.user!r}" if args.user else ""
    return LedgerError(
        f"no session {args.session_id}{owner}; list them with "
        "`agentledger sessions list --user USER`"
    )


async def fork_session(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    service = acting_for(ledger, args.user)
    record = await service.fork_session(
        await session_ref(service, args.session_id, args.user),
        args.at,
        user_id=args.user,
        title=args.title,
    )
    at = "" if args.at is None else f" at seq {args.at}"
    out.result(
        f"forked {args.session_id}{at} into {record.id} ({len(record.messages)} messages)",
        head_json(record),
    )
    return EXIT_OK


async def rewind_session(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    service = acting_for(ledger, args.user)
    removed = await service.rewind_session(
        await session_ref(service, args.session_id, args.user), args.to, user_id=args.user
    )
    out.result(
        f"removed {removed} messages; {args.session_id} now ends at seq {args.to}",
        {"session_id": args.session_id, "to_seq": args.to, "removed": removed},
    )
    return EXIT_OK


async def session_meta(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    service = acting_for(ledger, args.user)
    session_id = await session_ref(service, args.session_id, args.user)
    record: SessionRecord | None
    if args.changes:
        record = await service.update_metadata(session_id, dict(args.changes), user_id=args.user)
    elif args.title is not None or args.clear_title:
        record = await service.set_title(session_id, args.title, user_id=args.user)
    else:
        record = await service.get_session(session_id, user_id=args.user)
        if record is None:
            raise no_session(args)
    if out.json_mode:
        out.json({"id": str(record.id), "title": record.title, "metadata": record.metadata})
        return EXIT_OK
    out.line(f"title {record.title if record.title is not None else '(none)'}")
    out.line(f"metadata {json.dumps(record.metadata, ensure_ascii=False)}")
    return EXIT_OK


# -- rendering ----------------------------------------------------------------------------------


def message_line(message: MessageRecord) -> str:
    text = message.content
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


def summary_json(summary: SessionSummary) -> dict[str, Any]:
    return {
        "id": str(summary.id),
        "user_id": summary.user_id,
        "agent_name": summary.agent_name,
        "framework": summary.framework,
        "metadata": summary.metadata,
        "created_at": summary.created_at.isoformat(),
        "updated_at": summary.updated_at.isoformat(),
        "message_count": summary.message_count,
        "title": summary.title,
        "archived_at": None if summary.archived_at is None else summary.archived_at.isoformat(),
    }


def session_fields(record: SessionRecord) -> dict[str, Any]:
    """The session's own fields, as every JSON output shows them."""
    return {
        "id": str(record.id),
        "user_id": record.user_id,
        "agent_name": record.agent_name,
        "framework": record.framework,
        "title": record.title,
        "metadata": record.metadata,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


def head_json(record: SessionRecord) -> dict[str, Any]:
    """A session without its messages (how many there are instead)."""
    return {**session_fields(record), "message_count": len(record.messages)}


def record_json(record: SessionRecord) -> dict[str, Any]:
    return {
        **session_fields(record),
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
