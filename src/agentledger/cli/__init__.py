"""The ``agentledger`` command line (entry point :func:`main`). One module per command group;
:mod:`.output` is how every command writes, :mod:`.app` how every command runs and fails."""

from agentledger.cli.app import build_parser, main
from agentledger.cli.arguments import format_duration, parse_duration, parse_meta_pair

__all__ = ["build_parser", "format_duration", "main", "parse_duration", "parse_meta_pair"]
