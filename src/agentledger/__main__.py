"""``python -m agentledger`` runs the command line (used by the demo's second process)."""

from .cli import main

raise SystemExit(main())
