"""``agentledger search``, ``sessions export|import`` and policy-driven ``cleanup``.

Part of the command line (:mod:`agentledger.cli` registers these commands): as thin as the rest
of it. Formats live in :mod:`agentledger.transcripts`, rules in the service.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from .errors import InvalidInputError, LedgerError
from .ledger import Ledger
from .records import SearchHit
from .retention import RetentionPolicy, RetentionReport, load_policy_file
from .transcripts import SessionTranscript, read_jsonl, render_markdown, write_jsonl

EXIT_OK = 0

Handler = Callable[[Ledger, argparse.Namespace, TextIO], Awaitable[int]]

_SUFFIXES = {"jsonl": ".jsonl", "markdown": ".md"}


def add_search_command(commands: Any) -> None:
    search = commands.add_parser("search", help="full-text search over a user's history")
    search.add_argument("query", nargs="+", metavar="QUERY", help='words, "a phrase", -word, or')
    search.add_argument("--user", required=True, help="user id whose history to search")
    search.add_argument("--limit", type=int, default=20, help="hits per page (default 20)")
    search.add_argument("--cursor", help="next_cursor printed by the previous page")
    search.add_argument("--agent", help="only this agent's sessions")
    search.add_argument("--archived", action="store_true", help="include archived sessions")
    search.add_argument("--json", action="store_true", help="machine-readable output")


def add_session_commands(session_commands: Any) -> None:
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
        "-o", "--output", metavar="PATH", help="file to write (default stdout); a folder with --all"
    )
    export.add_argument("--all", action="store_true", help="every session of --user, into -o DIR")
    importing = session_commands.add_parser(
        "import", help="store sessions exported as JSONL (idempotent: re-import adds nothing)"
    )
    importing.add_argument(
        "files", nargs="+", metavar="FILE", help="JSONL transcripts, or folders holding them"
    )
    importing.add_argument("--user", required=True, help="user id that will own the sessions")
    importing.add_argument(
        "--session-id", metavar="UUID", help="import one file under this id instead of its own"
    )
    importing.add_argument("--json", action="store_true", help="machine-readable output")


def add_cleanup_options(cleanup: argparse.ArgumentParser) -> None:
    cleanup.add_argument(
        "--policy",
        metavar="FILE",
        help="JSON retention policies per agent (default: the AGENTLEDGER_RETENTION setting)",
    )


# -- progress --------------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar, shown only when ``out`` is a terminal."""

    def __init__(self, out: TextIO, total: int, what: str) -> None:
        self._out = out
        self._total = total
        self._what = what
        self._shown = out.isatty() and total > 1

    def update(self, done: int) -> None:
        if not self._shown:
            return
        width = 30
        filled = width * done // max(self._total, 1)
        bar = "#" * filled + "-" * (width - filled)
        print(f"\r[{bar}] {done}/{self._total} {self._what}", end="", file=self._out, flush=True)

    def close(self) -> None:
        if self._shown:
            print("\r\033[K", end="", file=self._out, flush=True)


# -- search ----------------------------------------------------------------------------------------


async def search(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    page = await ledger.service_for(args.user).search(
        args.user,
        " ".join(args.query),
        limit=args.limit,
        cursor=args.cursor,
        agent_name=args.agent,
        include_archived=args.archived,
    )
    if args.json:
        payload = {"hits": [_hit_json(hit) for hit in page], "next_cursor": page.next_cursor}
        print(json.dumps(payload, ensure_ascii=False), file=out)
        return EXIT_OK
    if not page.hits:
        print(f"no matches for user {args.user!r}", file=out)
    for hit in page:
        text = hit.snippet.replace("\x00", "\\0")
        print(f"{hit.session_id}  {hit.seq:>5}  {hit.role:<9} {hit.rank:8.4f}  {text}", file=out)
    if page.next_cursor:
        print(f"more: --cursor {page.next_cursor}", file=out)
    return EXIT_OK


def _hit_json(hit: SearchHit) -> dict[str, Any]:
    return {
        "session_id": str(hit.session_id),
        "seq": hit.seq,
        "role": hit.role,
        "agent_name": hit.agent_name,
        "item_type": hit.item_type,
        "rank": hit.rank,
        "snippet": hit.snippet,
        "content": hit.content,
        "created_at": hit.created_at.isoformat(),
    }


# -- export / import -------------------------------------------------------------------------------


def session_ref(session_id: str, user: str | None) -> str | uuid.UUID:
    """A command's session ID argument; with ``--user``, a session *name* (as used with
    ``ledger.agent_session`` or ``chat``) works too."""
    if user is None:
        return session_id
    from .integrations.openai_agents import resolve_session_uuid

    return resolve_session_uuid(session_id, user)


def _write(transcript: SessionTranscript, fmt: str, stream: TextIO) -> None:
    if fmt == "markdown":
        stream.write(render_markdown(transcript))
    else:
        write_jsonl(transcript, stream)


async def export_sessions(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    service = ledger.service_for(args.user)
    if args.all:
        if args.session_id is not None or args.user is None or args.output is None:
            raise InvalidInputError(
                "use either ID or --all; --all needs --user USER and -o DIR, e.g. "
                "`agentledger sessions export --all --user alice -o exports/`"
            )
        return await _export_all(ledger, args, out)
    if args.session_id is None:
        raise InvalidInputError("name the session to export (ID), or pass --all --user USER")
    transcript = await service.export_session(
        session_ref(args.session_id, args.user), user_id=args.user
    )
    if args.output is None:
        _write(transcript, args.format, out)
        return EXIT_OK
    with _open_for_writing(Path(args.output)) as stream:
        _write(transcript, args.format, stream)
    print(
        f"exported session {transcript.id} ({len(transcript.messages)} messages) to {args.output}",
        file=out,
    )
    return EXIT_OK


def _open_for_writing(path: Path) -> TextIO:
    try:
        return path.open("w", encoding="utf-8", newline="\n")
    except OSError as error:
        raise LedgerError(
            f"cannot write {str(path)!r} ({error.strerror or error}); check the path"
        ) from None


def _make_folder(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LedgerError(
            f"cannot create the folder {str(folder)!r} ({error.strerror or error})"
        ) from None
    return folder


async def _export_all(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    service = ledger.service_for(args.user)
    folder = _make_folder(Path(args.output))
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
    progress = Progress(out, len(ids), "sessions")
    messages = 0
    for done, session_id in enumerate(ids, start=1):
        transcript = await service.export_session(session_id, user_id=args.user)
        with _open_for_writing(folder / f"{session_id}{_SUFFIXES[args.format]}") as stream:
            _write(transcript, args.format, stream)
        messages += len(transcript.messages)
        progress.update(done)
    progress.close()
    print(
        f"exported {len(ids)} sessions ({messages} messages) of user {args.user!r} to {folder}",
        file=out,
    )
    return EXIT_OK


def _transcript_files(names: list[str]) -> list[Path]:
    files: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            found = sorted(path.glob("*.jsonl"))
            if not found:
                raise InvalidInputError(f"the folder {name!r} holds no .jsonl transcripts")
            files.extend(found)
        else:
            files.append(path)
    return files


def read_transcript(path: Path) -> SessionTranscript:
    """Read and validate a JSONL transcript file."""
    try:
        with path.open("r", encoding="utf-8", newline="\n") as stream:
            return read_jsonl(stream, source=str(path))
    except OSError as error:
        raise InvalidInputError(
            f"cannot read {str(path)!r} ({error.strerror or error}); check the path"
        ) from None
    except UnicodeDecodeError:
        raise InvalidInputError(
            f"{path} is not UTF-8 text; pass a JSONL file written by `agentledger sessions export`"
        ) from None


async def import_sessions(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    files = _transcript_files(args.files)
    if args.session_id is not None and len(files) != 1:
        raise InvalidInputError("--session-id applies to a single transcript file")
    progress = Progress(out, len(files), "files")
    sessions = created = items = 0
    imported: list[dict[str, object]] = []
    for done, path in enumerate(files, start=1):
        transcript = read_transcript(path)
        result = await ledger.service_for(args.user).import_session(
            transcript, user_id=args.user, session_id=args.session_id
        )
        sessions += 1
        created += result.created
        items += result.items_added
        progress.update(done)
        imported.append(
            {
                "file": str(path),
                "session_id": str(result.session_id),
                "created": result.created,
                "items_added": result.items_added,
            }
        )
        if len(files) == 1 and not args.json:
            state = "new session" if result.created else "existing session"
            print(
                f"imported {result.items_added} new items into {state} {result.session_id} "
                f"for user {args.user!r}",
                file=out,
            )
    progress.close()
    if args.json:
        print(json.dumps({"user_id": args.user, "sessions": imported}), file=out)
    elif len(files) > 1:
        print(
            f"imported {sessions} sessions ({created} new) with {items} new items for user "
            f"{args.user!r}",
            file=out,
        )
    return EXIT_OK


# -- cleanup by policy -----------------------------------------------------------------------------


async def cleanup_by_policy(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    policies: dict[str, RetentionPolicy]
    if args.policy is not None:
        policies = load_policy_file(args.policy)
    else:
        policies = dict(ledger.settings.retention)
    if not policies:
        raise InvalidInputError(
            "nothing to clean up: pass --older-than 30d, or --policy FILE, or set "
            'AGENTLEDGER_RETENTION (e.g. {"*": {"days": 90}})'
        )

    def progress(report: RetentionReport) -> None:
        if out.isatty():
            print(f"\r{report.describe()}...", end="", file=out, flush=True)

    report = await ledger.service.apply_retention(
        policies, dry_run=args.dry_run, batch_size=args.batch_size, on_progress=progress
    )
    if out.isatty():
        print("\r\033[K", end="", file=out)
    if args.json:
        payload = {
            "dry_run": report.dry_run,
            "policies": {
                name: dataclasses.asdict(counts) for name, counts in report.policies.items()
            },
        }
        print(json.dumps(payload), file=out)
        return EXIT_OK
    print(report.describe(), file=out)
    for name, counts in report.policies.items():
        label = "every other agent" if name == "*" else f"agent {name!r}"
        print(
            f"  {label} ({policies[name].describe()}): {counts.describe(dry_run=args.dry_run)}",
            file=out,
        )
    return EXIT_OK


HANDLERS: dict[tuple[str, str | None], Handler] = {
    ("search", None): search,
    ("sessions", "export"): export_sessions,
    ("sessions", "import"): import_sessions,
}

__all__ = [
    "HANDLERS",
    "Progress",
    "add_cleanup_options",
    "add_search_command",
    "add_session_commands",
    "cleanup_by_policy",
    "read_transcript",
]
