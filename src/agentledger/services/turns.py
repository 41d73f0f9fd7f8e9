"""Turns: one agent turn at a time per session, through a lease in the session row.

An agent turn appends in several steps (the user's input before the model is called, then the
model's items, tool calls and outputs as they come), so two turns running at once on one
session interleave their items. A turn therefore first claims the session's *turn lease*: one
conditional UPDATE that succeeds only when nobody else holds an unexpired lease. No connection
is held while the model thinks; the lease is renewed in the background while the turn lasts
and released at its end, and a turn that crashed (its process killed) blocks the session for
at most one lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from agentledger.domain.turns import (
    DEFAULT_TURN_LEASE,
    DEFAULT_TURN_WAIT,
    check_duration,
    check_turn_holder,
)
from agentledger.domain.validation import check_owner, parse_session_id
from agentledger.errors import LedgerError, LedgerTimeoutError
from agentledger.services.base import ServiceBase, SessionId, operation

logger = logging.getLogger("agentledger")

#: Longest pause between two attempts to claim a held turn (seconds); the first is 10 ms.
_MAX_POLL = 0.5


class Turns(ServiceBase):
    """Turn leases (see the module docstring)."""

    @operation()
    async def claim_turn(
        self,
        session_id: SessionId,
        holder: str,
        *,
        lease: timedelta = DEFAULT_TURN_LEASE,
        user_id: str | None = None,
    ) -> bool:
        """Take the session's turn lease for ``holder`` (renew it, when ``holder`` has it)
        unless another holder's lease is still running; whether ``holder`` has it now.
        Raises :class:`~agentledger.SessionNotFoundError` for a missing or another user's
        session. Most callers want :meth:`turn`."""
        sid = parse_session_id(session_id)
        user = check_owner(user_id)
        token = check_turn_holder(holder)
        length = check_duration(lease, "lease")
        now = self._now()
        async with self._uow() as uow:
            claimed = await uow.sessions.claim_turn(sid, user, token, now, now + length)
            if not claimed:
                await self._check_owner(uow, sid, user, missing_ok=False)
            await uow.commit()
        return claimed

    @operation()
    async def release_turn(
        self, session_id: SessionId, holder: str, *, user_id: str | None = None
    ) -> None:
        """Give the session's turn lease up, if ``holder`` still has it."""
        sid = parse_session_id(session_id)
        check_owner(user_id)
        token = check_turn_holder(holder)
        async with self._uow() as uow:
            await uow.sessions.release_turn(sid, token)
            await uow.commit()

    @contextlib.asynccontextmanager
    async def turn(
        self,
        session_id: SessionId,
        *,
        user_id: str | None = None,
        lease: timedelta = DEFAULT_TURN_LEASE,
        wait: timedelta = DEFAULT_TURN_WAIT,
        hold_while: Callable[[], bool] | None = None,
    ) -> AsyncIterator[str]:
        """Hold the session's turn for the ``async with`` block: wait (up to ``wait``) for the
        turn before it, renew the lease every ``lease / 3`` while the block runs, release it
        at the end, also on an error or a cancellation. Yields the holder token.

        Raises :class:`~agentledger.LedgerTimeoutError` when the turn stays taken for longer
        than ``wait``, and :class:`~agentledger.SessionNotFoundError` for a missing or
        another user's session. ``hold_while``: stop renewing once it returns ``False`` (a
        streamed run that finished while nobody consumed its events).
        """
        sid = parse_session_id(session_id)
        length = check_duration(lease, "lease")
        patience = check_duration(wait, "wait", zero_ok=True)
        holder = uuid.uuid4().hex
        deadline = time.monotonic() + patience.total_seconds()
        pause = 0.01
        while not await self.claim_turn(sid, holder, lease=length, user_id=user_id):
            left = deadline - time.monotonic()
            if left <= 0:
                raise LedgerTimeoutError(
                    f"session {sid} is in another turn (an agent run on it) for longer than "
                    f"wait={patience}; retry later, or pass a longer wait (a crashed turn "
                    f"frees the session after its lease, {length} by default)"
                )
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, _MAX_POLL)
        renewing = asyncio.create_task(
            self._keep_turn(sid, holder, length, user_id, hold_while),
            name=f"agentledger turn lease {sid}",
        )
        try:
            yield holder
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            try:
                await self.release_turn(sid, holder, user_id=user_id)
            except (LedgerError, asyncio.CancelledError):
                # Not released: the lease runs out by itself.
                logger.warning(
                    "agentledger: could not release the turn of session %s; it frees itself "
                    "within %s",
                    sid,
                    length,
                    exc_info=True,
                )

    async def _keep_turn(
        self,
        sid: uuid.UUID,
        holder: str,
        lease: timedelta,
        user_id: str | None,
        hold_while: Callable[[], bool] | None,
    ) -> None:
        """Renew the lease every third of its length for as long as the turn lasts."""
        period = lease.total_seconds() / 3
        while True:
            await asyncio.sleep(period)
            if hold_while is not None and not hold_while():
                return
            try:
                kept = await self.claim_turn(sid, holder, lease=lease, user_id=user_id)
            except LedgerError:
                logger.warning("agentledger: renewing the turn of session %s failed", sid)
                continue
            if not kept:
                logger.warning(
                    "agentledger: the turn of session %s outlived its lease and was taken "
                    "over; use a longer lease for turns that can stall",
                    sid,
                )
                return


__all__ = ["Turns"]
