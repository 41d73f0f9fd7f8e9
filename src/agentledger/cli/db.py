"""``agentledger db upgrade|downgrade|current|adopt|rls``: the schema, admin-wide."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agentledger.cli.arguments import add_json_flag
from agentledger.cli.output import EXIT_FAILED, EXIT_OK, Output, UsageError
from agentledger.config import LedgerSettings, safe_url
from agentledger.errors import InvalidInputError
from agentledger.ledger import Ledger
from agentledger.schema.alembic import head_revision, offline_upgrade_sql
from agentledger.schema.state import NOTHING


class _Offline(argparse.Action):
    """``db upgrade --sql``: print the SQL instead of running it, with no Ledger (nothing
    connects to the database)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        namespace.sql = True
        namespace.handler = db_upgrade_sql
        namespace.opens_ledger = False


def register(commands: Any) -> None:
    db = commands.add_parser("db", help="roll the schema out (Alembic)")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = actions.add_parser("upgrade", help="upgrade to a revision (default: head)")
    upgrade.add_argument(
        "revision",
        nargs="?",
        default="head",
        help="the revision to reach (default: head); with --sql also FROM:TO",
    )
    upgrade.add_argument(
        "--sql",
        action=_Offline,
        nargs=0,
        default=False,
        help="print the SQL for review instead of running it (PostgreSQL; nothing connects "
        "to the database); from an empty database, or FROM:TO",
    )
    upgrade.set_defaults(handler=db_upgrade)
    downgrade = actions.add_parser("downgrade", help="downgrade to REV ('base' drops all)")
    downgrade.add_argument("revision")
    downgrade.set_defaults(handler=db_downgrade)
    current = actions.add_parser("current", help="show the applied agentledger revision")
    current.add_argument(
        "--check",
        action="store_true",
        help="exit with 1 unless the database is at agentledger's head (a deploy gate)",
    )
    current.set_defaults(handler=db_current)
    adopt = actions.add_parser(
        "adopt", help="upgrade a database on the seed's schema in place, keeping every row"
    )
    adopt.set_defaults(handler=db_adopt)
    rls = actions.add_parser(
        "rls", help="PostgreSQL row-level security on agentledger's tables (docs/security.md)"
    )
    rls.add_argument(
        "rls_command",
        choices=["enable", "disable", "status"],
        metavar="{enable,disable,status}",
        help="switch it on or off (as the tables' owner), or report it",
    )
    rls.set_defaults(handler=db_rls)
    for parser in (upgrade, downgrade, current, adopt, rls):
        add_json_flag(parser)


async def _report_revision(ledger: Ledger, out: Output) -> int:
    current = await ledger.current_revisions()
    url = safe_url(ledger.engine.url)
    out.result(
        f"{url} is at {', '.join(current) or 'base'}",
        {"database": url, "current": list(current), "head": head_revision()},
    )
    return EXIT_OK


async def db_upgrade(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    if ":" in args.revision:
        raise UsageError(
            f"a revision range ({args.revision}) only makes sense with --sql, which prints its "
            "SQL; to migrate, name the revision to reach: `agentledger db upgrade "
            f"{args.revision.rsplit(':', 1)[1] or 'head'}`"
        )
    await ledger.upgrade(args.revision)
    return await _report_revision(ledger, out)


async def db_upgrade_sql(settings: LedgerSettings, args: argparse.Namespace, out: Output) -> int:
    try:
        sql = offline_upgrade_sql(settings.database_url, args.revision)
    except InvalidInputError as error:  # a malformed or empty range: how it was asked
        raise UsageError(str(error)) from error
    if out.json_mode:
        out.json({"revision": args.revision, "sql": sql})
    else:
        out.lines(sql)
    return EXIT_OK


async def db_downgrade(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    await ledger.downgrade(args.revision)
    return await _report_revision(ledger, out)


async def db_current(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    url = ledger.engine.url
    if url.get_backend_name() == "sqlite" and url.database and not _exists(url.database):
        # Connecting would create the file: a gate only looks.
        out.result(
            f"base (head is {head_revision()}; no database file at {url.database}: run "
            "`agentledger db upgrade` to create it)",
            {
                "current": [],
                "head": head_revision(),
                "at_head": False,
                "source": NOTHING,
                "advice": "run `agentledger db upgrade` to create the database file",
            },
        )
        return EXIT_FAILED if args.check else EXIT_OK
    state = await ledger.schema_state()
    out.result(
        state.describe(),
        {
            "current": list(state.current),
            "head": state.head,
            "at_head": state.only_head,
            "source": state.source,
            "advice": state.advice(),
        },
    )
    return EXIT_OK if state.only_head or not args.check else EXIT_FAILED


def _exists(database: str) -> bool:
    """Whether a SQLite URL's database exists (``:memory:`` and ``file:`` URIs always do)."""
    if database == ":memory:" or database.startswith("file:"):
        return True
    return Path(database).exists()


async def db_rls(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
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
    out.result(
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


async def db_adopt(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    with out.progress(None, "messages converted") as progress:
        report = await ledger.adopt(
            on_progress=lambda done, total: progress.update(f"converting messages: {done}/{total}")
        )
    current = await ledger.current_revisions()
    out.result(
        f"adopted {report.sessions} sessions and {report.messages} messages; "
        f"{safe_url(ledger.engine.url)} is at {', '.join(current)}",
        {"sessions": report.sessions, "messages": report.messages, "current": list(current)},
    )
    return EXIT_OK
