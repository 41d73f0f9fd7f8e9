"""The turn of a streamed run, held by a task of its own until the run is over.

A streamed run goes on in the background whether or not anyone reads its events, and a caller
may drop its handle at any moment (an HTTP client that went away). Its turn therefore cannot
live in the handle: a task of this module holds it, strongly referenced, until the run's
events have been consumed to the end (and the usage and compaction after it are done), or,
when nobody is consuming them, until the run itself has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

from agents.result import RunResultStreaming

from agentledger.integrations.openai_agents.session import LedgerSession

logger = logging.getLogger("agentledger")

#: How often the holder looks whether the run is over (seconds).
_POLL = 0.05
#: Holder tasks in flight: an asyncio task nobody references may be collected mid-way.
_HOLDERS: set[asyncio.Task[None]] = set()


class StreamedTurn:
    """Holds a session's turn for one streamed run (see the module docstring)."""

    def __init__(self, session: LedgerSession, *, lease: timedelta, wait: timedelta) -> None:
        self._claimed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._done = asyncio.Event()
        self._run: RunResultStreaming | None = None
        #: Whether a consumer is reading the events now (then the turn lasts until it ends).
        self.consuming = False
        task = asyncio.create_task(self._hold(session, lease, wait), name="agentledger turn")
        _HOLDERS.add(task)
        task.add_done_callback(_HOLDERS.discard)
        self._task = task

    async def claimed(self) -> None:
        """Wait for the turn (raises what claiming it raised: a timeout, a missing session)."""
        await asyncio.shield(self._claimed)

    def watch(self, run: RunResultStreaming) -> None:
        """The run this turn is for: once it is over and nobody reads it, the turn ends."""
        self._run = run

    def finish(self) -> None:
        """The run's events were consumed to the end (or the run failed): give the turn back
        (see :meth:`given_back` to wait until it is)."""
        self._done.set()

    async def given_back(self) -> None:
        """Give the turn back and wait until the session is free for the next turn."""
        self._done.set()
        await asyncio.shield(self._task)

    def _over(self) -> bool:
        if self._done.is_set():
            return True
        run = self._run
        if run is None or self.consuming:
            return False
        loop_task: Any = getattr(run, "run_loop_task", None)
        return bool(run.is_complete or (loop_task is not None and loop_task.done()))

    async def _hold(self, session: LedgerSession, lease: timedelta, wait: timedelta) -> None:
        try:
            async with session.turn(lease=lease, wait=wait):
                self._claimed.set_result(None)
                while not self._over():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._done.wait(), _POLL)
        except BaseException as error:
            if not self._claimed.done():
                self._claimed.set_exception(error)
            elif not isinstance(error, asyncio.CancelledError):
                logger.warning(
                    "agentledger: the turn of a streamed run ended in error", exc_info=True
                )
            if isinstance(error, asyncio.CancelledError):
                raise
