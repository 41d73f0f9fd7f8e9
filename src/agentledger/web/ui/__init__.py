"""The transcript browser (``/ui``): server-rendered pages over the service.

:func:`create_ui_router` returns a FastAPI router a host app includes with its own
``current_user`` dependency, or the standalone server with ``token_login=True``.
"""

from agentledger.web.ui.router import create_ui_router

__all__ = ["create_ui_router"]
