"""The ``agentledger`` command line: parsing, dispatch, and the one way a command fails.

A thin layer over :class:`~agentledger.ledger.Ledger` and its service: each command module
registers its parsers with the handler that runs them (``set_defaults(handler=...)``), the
handler calls one service operation and writes through :class:`~.output.Output`. A failure
is one line on stderr and a non-zero exit code, never a traceback:

* 0 — success;
* 1 — agentledger refused or failed the operation (the message says what to do), or
  ``db current --check`` found the database not at head;
* 2 — the command line itself was wrong (argparse's convention);
* 130 — interrupted; 141 — the reader of the output went away (``... | head``).

Tenant isolation: every command that reads or changes a session takes ``--user U`` and passes
it to the service's ``user_id=``, where the rule lives; another user's session then reads
exactly like a missing one (exit 1), and nothing is written. ``db``, ``cleanup`` and ``demo``
are admin-wide by design (see docs/cli.md, "Tenant isolation").

The database URL comes from ``--database-url``, else ``AGENTLEDGER_DATABASE_URL``, else
``DATABASE_URL``, else the embedded default ``sqlite+aiosqlite:///agentledger.db``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
from collections.abc import Sequence

from pydantic import ValidationError

from agentledger.cli import (
    db,
    interactive,
    maintenance,
    search,
    serve,
    sessions,
    tokens,
    transfer,
)
from agentledger.cli.output import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Output,
    UsageError,
    error_line,
)
from agentledger.config import LedgerSettings
from agentledger.errors import LedgerError
from agentledger.ledger import Ledger

#: Set to 1 to see the traceback of an unexpected error (a bug) instead of its one line.
DEBUG_ENV = "AGENTLEDGER_DEBUG"


def build_parser() -> argparse.ArgumentParser:
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
    db.register(commands)
    session_group = commands.add_parser("sessions", help="inspect and move sessions")
    session_commands = session_group.add_subparsers(
        dest="sessions_command", required=True, metavar="ACTION"
    )
    sessions.register(session_commands)
    transfer.register_session_commands(session_commands)
    search.register(commands)
    maintenance.register(commands)
    transfer.register_sdk_import(commands)
    interactive.register(commands)
    serve.register(commands)
    tokens.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agentledger`` script; returns the process exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exited:  # argparse: --help (0) or a wrong command line (2)
        return exited.code if isinstance(exited.code, int) else EXIT_USAGE
    try:
        settings = (
            LedgerSettings(database_url=args.database_url)
            if args.database_url
            else LedgerSettings()
        )
        return asyncio.run(_dispatch(args, settings))
    except UsageError as error:
        _fail(str(error))
        return EXIT_USAGE
    except LedgerError as error:
        _fail(str(error))
    except ValidationError as error:
        _fail(_settings_problem(error))
    except (ValueError, TypeError) as error:
        _fail(str(error))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _reader_gone()
    except Exception as error:  # a bug: still one line, with the way to see more
        if os.environ.get(DEBUG_ENV) == "1":
            traceback.print_exc()
        _fail(
            f"unexpected {type(error).__name__}: {error} (this is a bug in agentledger; "
            f"set {DEBUG_ENV}=1 for the traceback and report it)"
        )
    return EXIT_FAILED


async def _dispatch(args: argparse.Namespace, settings: LedgerSettings) -> int:
    out = Output(sys.stdout, json_mode=getattr(args, "json", False))
    code: int
    if not getattr(args, "opens_ledger", True):
        code = await args.handler(settings, args, out)
    else:
        async with Ledger.from_settings(settings) as ledger:
            code = await args.handler(ledger, args, out)
    return code


def _fail(message: str) -> None:
    print(error_line(message), file=sys.stderr)


def _settings_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "settings"
    return f"invalid setting {where}: {first.get('msg', 'invalid value')}"


def _reader_gone() -> int:
    """The pipe we print to was closed (``| head``): stop quietly, as Unix tools do. Python
    would complain again when it flushes stdout at exit, so point stdout at /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout without a file descriptor
        pass
    return EXIT_BROKEN_PIPE
