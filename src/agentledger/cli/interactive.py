"""``agentledger demo`` and ``agentledger chat``: the agent, from a terminal."""

from __future__ import annotations

import argparse
from typing import Any

from agentledger.cli.output import EXIT_OK, Output
from agentledger.config import LedgerSettings


def register(commands: Any) -> None:
    demo = commands.add_parser("demo", help="the two-process memory demo on the default SQLite")
    demo.add_argument("--step", type=int, choices=(1, 2), help=argparse.SUPPRESS)
    demo.set_defaults(handler=run_demo, opens_ledger=False)

    chat = commands.add_parser("chat", help="interactive chat over a stored session")
    chat.add_argument("--session", required=True, help="session name or UUID")
    chat.add_argument("--user", required=True, help="user id that owns the session")
    chat.set_defaults(handler=run_chat, opens_ledger=False)


async def run_demo(settings: LedgerSettings, args: argparse.Namespace, out: Output) -> int:
    from agentledger.cli.demo import run_demo as play

    await play(settings.database_url, step=args.step, out=out.line)
    return EXIT_OK


async def run_chat(settings: LedgerSettings, args: argparse.Namespace, out: Output) -> int:
    from agentledger.cli.demo import run_chat as chat

    await chat(settings.database_url, args.session, args.user, out=out.line)
    return EXIT_OK
