"""Use cases, one module per area; :class:`SessionService` is the facade over them."""

from agentledger.services.facade import SessionService

__all__ = ["SessionService"]
