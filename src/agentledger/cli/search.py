"""``agentledger search``: full-text search over one user's history."""

from __future__ import annotations

import argparse
from typing import Any

from agentledger.cli.arguments import acting_for, add_json_flag, count_from
from agentledger.cli.output import EXIT_OK, Output
from agentledger.domain.records import SearchHit
from agentledger.domain.validation import MAX_PAGE_SIZE
from agentledger.ledger import Ledger


def register(commands: Any) -> None:
    search = commands.add_parser("search", help="full-text search over a user's history")
    search.add_argument("query", nargs="+", metavar="QUERY", help='words, "a phrase", -word, or')
    search.add_argument("--user", required=True, help="user id whose history to search")
    search.add_argument(
        "--limit", type=count_from(1, MAX_PAGE_SIZE), default=20, help="hits per page (default 20)"
    )
    search.add_argument("--cursor", help="next_cursor printed by the previous page")
    search.add_argument("--agent", help="only this agent's sessions")
    search.add_argument("--archived", action="store_true", help="include archived sessions")
    add_json_flag(search)
    search.set_defaults(handler=search_history)


async def search_history(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    page = await acting_for(ledger, args.user).search(
        args.user,
        " ".join(args.query),
        limit=args.limit,
        cursor=args.cursor,
        agent_name=args.agent,
        include_archived=args.archived,
    )
    if out.json_mode:
        out.json({"hits": [_hit_json(hit) for hit in page], "next_cursor": page.next_cursor})
        return EXIT_OK
    if not page.hits:
        out.line(f"no matches for user {args.user!r}")
    for hit in page:
        out.line(f"{hit.session_id}  {hit.seq:>5}  {hit.role:<9} {hit.rank:8.4f}  {hit.snippet}")
    if page.next_cursor:
        out.line(f"more: --cursor {page.next_cursor}")
    return EXIT_OK


def _hit_json(hit: SearchHit) -> dict[str, Any]:
    return {
        "session_id": str(hit.session_id),
        "seq": hit.seq,
        "role": hit.role,
        "agent_name": hit.agent_name,
        "framework": hit.framework,
        "item_type": hit.item_type,
        "rank": hit.rank,
        "snippet": hit.snippet,
        "content": hit.content,
        "created_at": hit.created_at.isoformat(),
    }
