"""Maintenance routes for admin tokens: retention (dry run and apply) and erasing a user.

They act on every tenant, so only a caller ``current_admin`` accepts may call them; the
standalone app passes :func:`~agentledger.web.auth.bearer_admin` (tokens made with
``agentledger tokens create --admin``). Both default to a dry run: a body must say
``"dry_run": false`` to delete anything. Each runs as the service's batched operation (one
short transaction per batch), so a large run holds no lock for long.
"""

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from agentledger.domain.records import BlockedSession
from agentledger.ledger import Ledger
from agentledger.web.problems import problem_route
from agentledger.web.schemas import (
    BlockedOut,
    EraseRequest,
    ErasureOut,
    RetentionCountsOut,
    RetentionOut,
    RetentionRequest,
)

#: Maintenance request bodies are small.
MAX_BODY_BYTES = 1024 * 1024


def _blocked(blocked: tuple[BlockedSession, ...]) -> list[BlockedOut]:
    return [
        BlockedOut(session_id=b.session_id, table=b.table, constraint=b.constraint) for b in blocked
    ]


def create_admin_router(ledger: Ledger, *, current_admin: Callable[..., Any]) -> APIRouter:
    """The maintenance routes (mount under e.g. ``/api/v1/admin``)."""
    router = APIRouter(route_class=problem_route(MAX_BODY_BYTES), tags=["maintenance"])
    Admin = Annotated[Any, Depends(current_admin)]

    @router.post("/retention", response_model=RetentionOut)
    async def retention(_admin: Admin, body: RetentionRequest) -> RetentionOut:
        policies: Any = ledger.settings.retention if body.policies is None else body.policies
        report = await ledger.service.apply_retention(policies, dry_run=body.dry_run)
        return RetentionOut(
            dry_run=report.dry_run,
            policies={
                name: RetentionCountsOut(**dataclasses.asdict(counts))
                for name, counts in report.policies.items()
            },
            blocked=_blocked(report.blocked),
        )

    @router.post("/erase-user", response_model=ErasureOut)
    async def erase_user(_admin: Admin, body: EraseRequest) -> ErasureOut:
        report = await ledger.service.erase_user(body.user_id, dry_run=body.dry_run)
        return ErasureOut(
            dry_run=body.dry_run,
            sessions=report.sessions,
            messages=report.messages,
            usage_records=report.usage_records,
            blocked=_blocked(report.blocked),
        )

    return router
