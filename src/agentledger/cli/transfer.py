"""``agentledger sessions export|import`` (transcripts) and ``agentledger import`` (the Agents
SDK's own stores). Formats live in :mod:`agentledger.domain.transcripts`, rules in the service."""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from agentledger.cli.arguments import acting_for, add_json_flag, session_ref, session_uuid
from agentledger.cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    STANDARD_STREAM,
    Output,
    UsageError,
    error_line,
    make_folder,
    reading,
    refuse_existing,
    warning_line,
    write_file,
)
from agentledger.domain.transcripts import (
    SessionTranscript,
    read_jsonl,
    render_markdown,
    write_jsonl,
)
from agentledger.errors import InvalidInputError, LedgerError
from agentledger.ledger import Ledger
from agentledger.services.facade import SessionService

_SUFFIXES = {"jsonl": ".jsonl", "markdown": ".md"}


def register_session_commands(session_commands: Any) -> None:
    export = session_commands.add_parser(
        "export", help="write a session (or all of a user's) as JSONL or Markdown"
    )
    export.add_argument(
        "session_id", nargs="?", metavar="ID", help="session UUID (or name, with --user)"
    )
    export.add_argument("--user", help="only if owned by this user id (required with --all)")
    export.add_argument(
        "--format", choices=("jsonl", "markdown"), default="jsonl", help="default: jsonl"
    )
    export.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="file to write (default, or '-': stdout); a folder with --all",
    )
    export.add_argument(
        "--force", action="store_true", help="replace files that exist (default: refuse)"
    )
    export.add_argument("--all", action="store_true", help="every session of --user, into -o DIR")
    export.set_defaults(handler=export_sessions)

    importing = session_commands.add_parser(
        "import", help="store sessions exported as JSONL (idempotent: re-import adds nothing)"
    )
    importing.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="JSONL transcripts, folders holding them, or '-' for standard input",
    )
    importing.add_argument("--user", required=True, help="user id that will own the sessions")
    importing.add_argument(
        "--session-id",
        metavar="UUID",
        type=session_uuid,
        help="import one file under this id instead of its own",
    )
    add_json_flag(importing)
    importing.set_defaults(handler=import_sessions)


def register_sdk_import(commands: Any) -> None:
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
    importing.set_defaults(handler=import_sdk)


# -- export -------------------------------------------------------------------------------------


def _writer(transcript: SessionTranscript, fmt: str) -> Callable[[TextIO], None]:
    """What writes ``transcript`` in ``fmt`` to a stream."""

    def write(stream: TextIO) -> None:
        if fmt == "markdown":
            stream.write(render_markdown(transcript))
        else:
            write_jsonl(transcript, stream)

    return write


async def export_sessions(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    if args.all:
        if args.session_id is not None or args.user is None or args.output is None:
            raise UsageError(
                "use either ID or --all; --all needs --user USER and -o DIR, e.g. "
                "`agentledger sessions export --all --user alice -o exports/`"
            )
        if args.output == STANDARD_STREAM:
            raise UsageError(
                "--all writes one file per session into a folder: pass -o DIR (a single "
                "session goes to standard output with -o -)"
            )
        return await _export_all(acting_for(ledger, args.user), args, out)
    if args.session_id is None:
        raise UsageError("name the session to export (ID), or pass --all --user USER")
    service = acting_for(ledger, args.user)
    transcript = await service.export_session(
        await session_ref(service, args.session_id, args.user), user_id=args.user
    )
    if args.output in (None, STANDARD_STREAM):
        if args.format == "markdown":
            out.lines(render_markdown(transcript))  # a terminal sees escapes, never raw controls
        else:
            write_jsonl(transcript, out.stream)
            out.stream.flush()  # a reader that went away is reported here, not lost at exit
        return EXIT_OK
    path = Path(args.output)
    write_file(path, _writer(transcript, args.format), force=args.force)
    out.line(f"exported session {transcript.id} ({len(transcript.messages)} messages) to {path}")
    return EXIT_OK


async def _export_all(service: SessionService, args: argparse.Namespace, out: Output) -> int:
    folder = make_folder(Path(args.output))
    ids: list[uuid.UUID] = []
    cursor: str | None = None
    while True:
        page = await service.list_user_sessions(
            args.user, 1000, cursor=cursor, include_archived=True
        )
        ids.extend(summary.id for summary in page)
        cursor = page.next_cursor
        if cursor is None:
            break
    paths = {session_id: folder / f"{session_id}{_SUFFIXES[args.format]}" for session_id in ids}
    refuse_existing(paths.values(), force=args.force)
    messages = 0
    failed: list[tuple[uuid.UUID, LedgerError]] = []
    with out.progress(len(ids), "sessions") as progress:
        for done, session_id in enumerate(ids, start=1):
            try:
                transcript = await service.export_session(session_id, user_id=args.user)
                write_file(paths[session_id], _writer(transcript, args.format), force=args.force)
            except LedgerError as error:  # one session that cannot be exported stops no other
                failed.append((session_id, error))
            else:
                messages += len(transcript.messages)
            progress.update(done)
    exported = len(ids) - len(failed)
    out.line(
        f"exported {exported} sessions ({messages} messages) of user {args.user!r} to {folder}"
    )
    for session_id, problem in failed:
        print(error_line(f"session {session_id} was not exported: {problem}"), file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


# -- import -------------------------------------------------------------------------------------


def _transcript_files(names: list[str]) -> list[str]:
    files: list[str] = []
    for name in names:
        path = Path(name)
        if name != STANDARD_STREAM and path.is_dir():
            # Regular files only: a FIFO would block the import, a folder named *.jsonl fail.
            found = sorted(file for file in path.glob("*.jsonl") if file.is_file())
            if not found:
                raise InvalidInputError(f"the folder {name!r} holds no .jsonl transcripts")
            files.extend(str(file) for file in found)
        else:
            files.append(name)
    if files.count(STANDARD_STREAM) > 1:
        raise InvalidInputError("standard input ('-') can be read only once")
    return files


def read_transcript(name: str) -> SessionTranscript:
    """Read and validate a JSONL transcript file (``-``: standard input)."""
    source = "standard input" if name == STANDARD_STREAM else name
    try:
        with reading(name) as stream:
            return read_jsonl(stream, source=source)
    except LedgerError as error:
        if isinstance(error, InvalidInputError):
            raise
        raise InvalidInputError(str(error)) from None
    except UnicodeDecodeError:
        raise InvalidInputError(
            f"{source} is not UTF-8 text; pass a JSONL file written by "
            "`agentledger sessions export`"
        ) from None


async def import_sessions(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    files = _transcript_files(args.files)
    if args.session_id is not None and len(files) != 1:
        raise UsageError("--session-id applies to a single transcript file")
    service = acting_for(ledger, args.user)
    if len(files) > 1:
        # Every file read and every id checked before the first is stored.
        for name in files:
            transcript = read_transcript(name)
            if not await service.can_write(transcript.id, user_id=args.user):
                raise _refused_file(
                    name,
                    LedgerError(
                        f"session id {transcript.id} is taken by another user; import this file "
                        "under a new id (sessions import FILE --session-id NEW_UUID)"
                    ),
                    [],
                )
    sessions = created = items = 0
    imported: list[dict[str, object]] = []
    with out.progress(len(files), "files") as progress:
        for done, name in enumerate(files, start=1):
            transcript = read_transcript(name)
            try:
                result = await service.import_session(
                    transcript, user_id=args.user, session_id=args.session_id
                )
            except LedgerError as error:
                stored = [str(entry["file"]) for entry in imported]
                raise _refused_file(name, error, stored) from error
            sessions += 1
            created += result.created
            items += result.items_added
            progress.update(done)
            imported.append(
                {
                    "file": name,
                    "session_id": str(result.session_id),
                    "created": result.created,
                    "items_added": result.items_added,
                }
            )
    if out.json_mode:
        out.json({"user_id": args.user, "sessions": imported})
    elif len(files) == 1:
        state = "new session" if created else "existing session"
        out.line(
            f"imported {items} new items into {state} {imported[0]['session_id']} "
            f"for user {args.user!r}"
        )
    else:
        out.line(
            f"imported {sessions} sessions ({created} new) with {items} new items for user "
            f"{args.user!r}"
        )
    return EXIT_OK


def _refused_file(name: str, error: LedgerError, stored: list[str]) -> LedgerError:
    """The refusal of one file of an import, naming it and what was stored before it (kept:
    a rerun adds only what is new)."""
    source = "standard input" if name == STANDARD_STREAM else name
    message = str(error) if str(error).startswith(source) else f"{source}: {error}"
    if stored:
        message += (
            f" (imported before it: {', '.join(stored[:3])}"
            + (f" and {len(stored) - 3} more" if len(stored) > 3 else "")
            + "; they stay, and running the import again adds only what is new)"
        )
    return (
        InvalidInputError(message) if isinstance(error, InvalidInputError) else LedgerError(message)
    )


async def import_sdk(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    from agentledger.services.sdk_import import import_sdk_store

    with out.progress(None, "rows") as progress:
        report = await import_sdk_store(
            acting_for(ledger, args.user),
            args.source,
            user_id=args.user,
            agent_name=args.agent_name,
            messages_table=args.messages_table,
            on_progress=lambda done, total: progress.update(f"importing: {done}/{total} rows"),
        )
    out.result(
        f"imported {report.items} new items into {report.sessions} sessions for user {args.user!r}",
        {
            "sessions": report.sessions,
            "items": report.items,
            "unreadable": report.unreadable,
            "refused": [{"session": name, "reason": why} for name, why in report.refused],
        },
    )
    if report.unreadable:
        print(
            warning_line(
                f"{report.unreadable} source rows could not be read as Agents SDK items and "
                "were left out"
            ),
            file=sys.stderr,
        )
    for name, why in report.refused:
        print(error_line(f"SDK session {name!r} was not imported: {why}"), file=sys.stderr)
    return EXIT_FAILED if report.refused else EXIT_OK
