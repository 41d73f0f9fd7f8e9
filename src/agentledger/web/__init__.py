"""The HTTP API (FastAPI) and the standalone server's app; install the ``web`` extra.

``create_router(ledger, current_user=...)`` gives the API's routes to mount in a host
application that brings its own authentication; ``create_app(ledger)`` is the complete app
``agentledger serve`` runs (bearer tokens, the API under ``/api/v1``, the transcript browser
under ``/ui`` when present). See docs/web.md.
"""

from __future__ import annotations

from agentledger.web.app import create_app
from agentledger.web.router import create_router

__all__ = ["create_app", "create_router"]
