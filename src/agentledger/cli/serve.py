"""``agentledger serve``: the HTTP API (and transcript browser) under uvicorn.

Never open by default: every request needs a bearer token made by ``agentledger tokens
create``, and listening on anything but a loopback address is refused until at least one
token exists. On the embedded SQLite default the schema is brought to head first, so
``agentledger tokens create --user me && agentledger serve`` works on a fresh install;
PostgreSQL is upgraded as a deploy step (``agentledger db upgrade``). Needs the ``web`` extra.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Any

from agentledger.cli.arguments import count_from
from agentledger.cli.output import EXIT_OK, Output, warning_line
from agentledger.cli.tokens import prepare_embedded
from agentledger.errors import ConfigurationError
from agentledger.ledger import Ledger


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the HTTP API server (the web extra)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument(
        "--port", type=count_from(0, 65535), default=8000, help="port (8000; 0: any free one)"
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn's log level (info)",
    )
    serve.set_defaults(handler=serve_api)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def serve_api(ledger: Ledger, args: argparse.Namespace, out: Output) -> int:
    try:
        import uvicorn

        from agentledger.web import create_app
    except ImportError as error:
        raise ConfigurationError(
            f"`agentledger serve` needs the web extra ({error.name} is missing): "
            "pip install 'agentledger[web]'"
        ) from None
    await prepare_embedded(ledger)
    await ledger.ensure_schema()
    has_tokens = await ledger.service.has_api_tokens()
    if not is_loopback(args.host) and not has_tokens:
        raise ConfigurationError(
            f"refusing to listen on {args.host}, beyond this machine, while no API token "
            "exists: create one first with `agentledger tokens create --user USER`"
        )
    if not has_tokens:
        print(
            warning_line(
                "no API token exists yet, so every request will be refused (401); create one "
                "with `agentledger tokens create --user USER`"
            ),
            file=sys.stderr,
        )
    config = uvicorn.Config(
        create_app(ledger),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        # Tokens travel in headers, never in URLs; the access log shows paths only.
        access_log=True,
        server_header=False,
        lifespan="on",
    )
    await uvicorn.Server(config).serve()
    return EXIT_OK
