"""``python -m agentledger`` runs the command line (used by the demo's second process)."""

from agentledger.cli import main

raise SystemExit(main())
