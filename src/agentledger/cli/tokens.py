"""``agentledger tokens create|revoke|list``: the standalone server's API tokens.

A token is shown once, by ``create``; only its hash is stored. ``revoke`` takes the token's id
(``list`` shows it), the token itself, or ``--user U`` for every token of a user. On the
embedded SQLite database the schema is brought to head first (as ``serve`` does), so a fresh
install works in two commands; PostgreSQL is upgraded as a deploy step (``db upgrade``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agentledger.cli.arguments import add_json_flag
from agentledger.cli.output import EXIT_FAILED, EXIT_OK, Output, UsageError, warning_line
from agentledger.domain.tokens import ApiTokenRecord
from agentledger.ledger import Ledger


def register(commands: Any) -> None:
    group = commands.add_parser("tokens", help="API tokens of `agentledger serve`")
    actions = group.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="make a token (shown once)")
    create.add_argument("--user", required=True, help="the user id the token acts for")
    create.add_argument("--admin", action="store_true", help="may also call the maintenance routes")
    add_json_flag(create)
    create.set_defaults(handler=create_token)

    revoke = actions.add_parser("revoke", help="revoke a token, or every token of a user")
    revoke.add_argument("token", nargs="?", metavar="ID_OR_TOKEN", help="token id or token")
    revoke.add_argument("--user", help="revoke every token of this user id")
    add_json_flag(revoke)
    revoke.set_defaults(handler=revoke_tokens)

    listing = actions.add_parser("list", help="tokens (never their secrets), oldest first")
    listing.add_argument("--user", help="only this user's")
    add_json_flag(listing)
    listing.set_defaults(handler=list_tokens)


async def prepare_embedded(ledger: Ledger) -> None:
    """The embedded SQLite database belongs to this installation: bring it to head."""
    if ledger.engine.dialect.name == "sqlite":
        await ledger.upgrade()


def _payload(record: ApiTokenRecord) -> dict[str, Any]:
    return {
        "id": str(record.id),
        "user_id": record.user_id,
        "admin": record.admin,
        "created_at": record.created_at.isoformat(),
        "revoked_at": None if record.revoked_at is None else record.revoked_at.isoformat(),
    }


async def create_token(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    await prepare_embedded(ledger)
    issued = await ledger.service.create_api_token(args.user, admin=args.admin)
    if out.json_mode:
        out.json({**_payload(issued.record), "token": issued.token})
        return EXIT_OK
    kind = "admin token" if args.admin else "token"
    out.line(issued.token)
    out.line(
        f"(the {kind} {issued.record.id} for user {args.user}; it is shown only now: keep it "
        "secret, and send it as `Authorization: Bearer <token>`)"
    )
    return EXIT_OK


async def revoke_tokens(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    if (args.token is None) == (args.user is None):
        raise UsageError("name one token (its id, or the token) or pass --user USER, not both")
    await prepare_embedded(ledger)
    if args.user is not None:
        count = await ledger.service.revoke_user_api_tokens(args.user)
        out.result(f"revoked {count} token(s) of user {args.user}", {"revoked": count})
        return EXIT_OK
    revoked = await ledger.service.revoke_api_token(args.token)
    if not revoked:
        print(
            warning_line("no such active token (already revoked, or a wrong id)"), file=sys.stderr
        )
        out.result("nothing revoked", {"revoked": 0})
        return EXIT_FAILED
    out.result("revoked 1 token", {"revoked": 1})
    return EXIT_OK


async def list_tokens(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    await prepare_embedded(ledger)
    records = await ledger.service.list_api_tokens(args.user)
    if out.json_mode:
        out.json([_payload(record) for record in records])
        return EXIT_OK
    for record in records:
        state = "active" if record.active else f"revoked {record.revoked_at:%Y-%m-%d %H:%M}"
        role = "admin" if record.admin else "user"
        out.line(
            f"{record.id}  {record.user_id}  {role}  {record.created_at:%Y-%m-%d %H:%M}  {state}"
        )
    if not records:
        out.line("no tokens; create one with `agentledger tokens create --user USER`")
    return EXIT_OK
