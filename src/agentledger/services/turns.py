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
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from datetime import timedelta
from types import MappingProxyType

from agentledger.domain.turns import (
    DEFAULT_TURN_LEASE,
    DEFAULT_TURN_WAIT,
    MIN_TURN_LEASE,
    check_duration,
    check_turn_holder,
)
from agentledger.domain.validation import check_owner, parse_session_id
from agentledger.errors import LedgerError, LedgerTimeoutError
from agentledger.services.base import ServiceBase, SessionId, operation

logger = logging.getLogger("agentledger")

#: Longest pause between two attempts to claim a held turn (seconds); the first is 10 ms.
_MAX_POLL = 0.5
#: The turns the current task (and the tasks it started) holds: session id -> holder.
_HELD: ContextVar[Mapping[uuid.UUID, str]] = ContextVar(
    "agentledger_turns_held", default=MappingProxyType({})
)


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
        unless another holder's lease is still running; whether ``holder`` has it now. On
        PostgreSQL the lease is timed by the database server's clock, so application hosts
        whose clocks disagree still exclude each other. Raises
        :class:`~agentledger.SessionNotFoundError` for a missing or another user's session.
        Most callers want :meth:`turn`."""
        sid = parse_session_id(session_id)
        user = check_owner(user_id)
        token = check_turn_holder(holder)
        length = check_duration(lease, "lease", minimum=MIN_TURN_LEASE)
        now = self._now()
        async with self._uow() as uow:
            claimed = await uow.sessions.claim_turn(sid, user, token, now, length)
            if not claimed:
                await self._check_owner(uow, sid, user, missing_ok=False)
            await uow.commit()
        return claimed

    @operation()
    async def release_turn(
        self, session_id: SessionId, holder: str, *, user_id: str | None = None
    ) -> None:
        """Give the session's turn lease up, if ``holder`` still has it. Raises
        :class:`~agentledger.SessionNotFoundError` for a missing or another user's session
        (whose lease is left alone)."""
        sid = parse_session_id(session_id)
        user = check_owner(user_id)
        token = check_turn_holder(holder)
        async with self._uow() as uow:
            await uow.sessions.release_turn(sid, user, token)
            await self._check_owner(uow, sid, user, missing_ok=False)
            await uow.commit()

    @contextlib.asynccontextmanager
    async def turn(
        self,
        session_id: SessionId,
        *,
        user_id: str | None = None,
        lease: timedelta = DEFAULT_TURN_LEASE,
        wait: timedelta = DEFAULT_TURN_WAIT,
    ) -> AsyncIterator[str]:
        """Hold the session's turn for the ``async with`` block: wait (up to ``wait``) for the
        turn before it, renew the lease every ``lease / 3`` while the block runs, release it
        at the end, also on an error or a cancellation. Yields the holder token. Every
        writer that should not interleave must take the turn: it binds only those that ask.

        Re-entrant: inside a block that holds the session's turn (in this task, or a task it
        started), ``turn()`` on the same session holds it already and claims nothing.

        Raises :class:`~agentledger.LedgerTimeoutError` when the turn stays taken for longer
        than ``wait``, or, at the end of the block, when the lease lapsed during it (renewals
        failed for longer than a lease, e.g. a stalled event loop or a database outage), so
        that another turn may have interleaved; :class:`~agentledger.SessionNotFoundError`
        for a missing or another user's session.
        """
        sid = parse_session_id(session_id)
        length = check_duration(lease, "lease", minimum=MIN_TURN_LEASE)
        patience = check_duration(wait, "wait", zero_ok=True)
        held = _HELD.get()
        if sid in held:
            yield held[sid]
            return
        holder = uuid.uuid4().hex
        await self._await_turn(sid, holder, length, patience, user_id)
        lost = asyncio.Event()
        renewing = asyncio.create_task(
            self._keep_turn(sid, holder, length, user_id, lost, time.monotonic()),
            name=f"agentledger turn lease {sid}",
        )
        scope = _HELD.set({**held, sid: holder})
        failed = False
        try:
            yield holder
        except BaseException:
            failed = True
            raise
        finally:
            _HELD.reset(scope)
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            await self._give_back(sid, holder, user_id, length)
        if lost.is_set() and not failed:
            raise LedgerTimeoutError(
                f"the turn on session {sid} outlived its lease ({length}): renewing it failed "
                "for longer than that, so another turn may have run in between; use a longer "
                "lease (turn_lease=) for turns that can stall"
            )

    async def _await_turn(
        self,
        sid: uuid.UUID,
        holder: str,
        lease: timedelta,
        patience: timedelta,
        user_id: str | None,
    ) -> None:
        """Claim the turn, polling (10 ms, doubling up to 0.5 s) until ``patience`` runs out.
        A claim that may have succeeded when the waiting is cancelled or fails is given back,
        so the session is not left blocked for a lease."""
        deadline = time.monotonic() + patience.total_seconds()
        pause = 0.01
        try:
            while not await self.claim_turn(sid, holder, lease=lease, user_id=user_id):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LedgerTimeoutError(
                        f"session {sid} is in another turn (an agent run on it) for longer "
                        f"than wait={patience}; retry later, or pass a longer wait (a crashed "
                        f"turn frees the session after its lease, {lease} here). A turn "
                        "inside another turn's block on the same session holds it already."
                    )
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, _MAX_POLL)
        except LedgerTimeoutError:
            raise
        except BaseException:
            await self._give_back(sid, holder, user_id, lease)
            raise

    async def _give_back(
        self, sid: uuid.UUID, holder: str, user_id: str | None, lease: timedelta
    ) -> None:
        """Release the turn even from a cancelled task (shielded); a failure only logs: the
        lease runs out by itself."""
        try:
            await asyncio.shield(self.release_turn(sid, holder, user_id=user_id))
        except (LedgerError, asyncio.CancelledError):
            logger.warning(
                "agentledger: could not release the turn of session %s; it frees itself within %s",
                sid,
                lease,
                exc_info=True,
            )

    async def _keep_turn(
        self,
        sid: uuid.UUID,
        holder: str,
        lease: timedelta,
        user_id: str | None,
        lost: asyncio.Event,
        renewed: float,
    ) -> None:
        """Renew the lease every third of its length for as long as the turn lasts; set
        ``lost`` when it lapsed (another holder took it, or renewals failed for a lease)."""
        period = lease.total_seconds() / 3
        while True:
            await asyncio.sleep(period)
            if time.monotonic() - renewed > lease.total_seconds():
                lost.set()  # this task could not run for a whole lease (a stalled loop)
            try:
                kept = await self.claim_turn(sid, holder, lease=lease, user_id=user_id)
            except LedgerError:
                logger.warning("agentledger: renewing the turn of session %s failed", sid)
                continue
            if not kept:
                lost.set()
                logger.warning(
                    "agentledger: the turn of session %s outlived its lease and was taken "
                    "over; use a longer lease for turns that can stall",
                    sid,
                )
                return
            renewed = time.monotonic()


__all__ = ["Turns"]
