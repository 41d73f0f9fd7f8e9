"""SessionAgent: runs an Agents SDK agent with its conversation kept in the ledger.

The seed's wrapper done right: the history really reaches the model (the seed passed it as an
unused ``context``), the whole turn (tool calls included) is stored verbatim, and the token
usage of every run is recorded for accounting. It depends on a
:class:`~agentledger.integrations.store.StoreProvider` (a :class:`~agentledger.Ledger` is
one), not on the Ledger class itself.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from agents import Agent, Runner
from agents.exceptions import AgentsException
from agents.items import TResponseInputItem
from agents.memory.session_settings import SessionSettings
from agents.result import RunResultBase, RunResultStreaming
from agents.stream_events import StreamEvent
from agents.usage import Usage as SdkUsage

from agentledger.domain.records import Checkpoint, Usage
from agentledger.domain.turns import (
    DEFAULT_TURN_LEASE,
    DEFAULT_TURN_WAIT,
    MIN_TURN_LEASE,
    check_duration,
)
from agentledger.domain.windows import HistoryWindow
from agentledger.errors import LedgerError
from agentledger.integrations.openai_agents.compaction import CompactionPolicy
from agentledger.integrations.openai_agents.session import LedgerSession
from agentledger.integrations.openai_agents.streamed_turn import StreamedTurn
from agentledger.integrations.store import StoreProvider

logger = logging.getLogger("agentledger")


def usage_from_sdk(usage: SdkUsage) -> Usage:
    """agentledger's usage record of the SDK's accumulated ``Usage``."""
    return Usage(
        requests=usage.requests,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
    )


@dataclass(frozen=True, slots=True)
class AgentRunResult:
    """What :meth:`SessionAgent.run` returns: the answer, the session it lives in, its usage."""

    final_output: Any
    #: The agentledger session of the conversation; pass it back to continue it.
    session_id: uuid.UUID
    #: Token usage of this run (also recorded in the ledger, see ``service.get_usage``).
    usage: Usage
    #: The SDK's own result (``RunResult``, or ``RunResultStreaming`` for a streamed run).
    raw: RunResultBase
    #: The checkpoint a compaction after this run stored (``None``: none was due).
    checkpoint: Checkpoint | None = None


class StreamedAgentRun:
    """A streamed run of :meth:`SessionAgent.run_streamed`.

    Iterate :meth:`stream_events` for the SDK's events; when the stream ends the run's usage is
    recorded and :attr:`final_output` / :attr:`usage` are available. :meth:`result` drains
    whatever is left of the stream (or all of it) and returns an :class:`AgentRunResult`-like
    summary. A stream abandoned midway records no usage until :meth:`result` is awaited.
    """

    def __init__(
        self,
        owner: SessionAgent,
        session: LedgerSession,
        raw: RunResultStreaming,
        turn: StreamedTurn | None = None,
    ):
        self._owner = owner
        self._session = session
        self.raw = raw
        self._usage: Usage | None = None
        #: The checkpoint a compaction after the run stored, once the stream has ended.
        self.checkpoint: Checkpoint | None = None
        #: The session's turn, held until the stream has ended.
        self._turn = turn

    @property
    def session_id(self) -> uuid.UUID:
        return self._session.ledger_session_id

    @property
    def final_output(self) -> Any:
        """The final output (``None`` until the stream has ended)."""
        return self.raw.final_output

    @property
    def usage(self) -> Usage:
        """Token usage of the run; available once the stream has ended (also when it ended
        with an error)."""
        if self._usage is None:
            raise RuntimeError(
                "the run is still streaming; consume stream_events() or await result() first"
            )
        return self._usage

    async def stream_events(self) -> AsyncIterator[StreamEvent]:
        """The SDK's stream events; the usage is recorded once the last event was delivered."""
        if self._turn is not None:
            self._turn.consuming = True
        try:
            async for event in self.raw.stream_events():
                yield event
            await self._finish()
        except AgentsException as error:
            # The stream has ended, in failure: its usage (recorded when the SDK had it) is
            # what ``usage`` reports from now on.
            await self._release_turn()
            self._usage = await self._owner._record_failed_run(self._session, error)
            raise
        finally:
            # Read to the end, failed, or abandoned midway: in the last case the turn lasts
            # until the run, still going in the background, is over.
            if self._turn is not None:
                self._turn.consuming = False

    async def _release_turn(self) -> None:
        if self._turn is not None:
            await self._turn.given_back()

    async def result(self) -> AgentRunResult:
        """Wait for the end of the run (consuming remaining events) and summarize it."""
        if self._usage is None:
            async for _event in self.stream_events():
                pass
        return AgentRunResult(
            self.raw.final_output, self.session_id, self.usage, self.raw, self.checkpoint
        )

    async def _finish(self) -> None:
        if self._usage is None:
            self._usage = await self._owner._record_usage(
                self._session, self.raw.context_wrapper.usage
            )
            self.checkpoint = await self._owner._compact(self._session)
            await self._release_turn()


class SessionAgent:
    """Runs an Agents SDK agent with its conversation kept in the ledger.

    ``await sa.run(text, user_id=...)`` starts a new session; pass the returned ``session_id``
    back to continue it. The model sees the stored history (through :class:`LedgerSession`),
    the turn's items are stored verbatim, and each run's token usage is recorded.
    ``session_id`` may also be a name (any string), which maps to a per-user session created on
    first use. A session owned by another user raises
    :class:`~agentledger.SessionNotFoundError` before the model is called.

    Runs on one session take turns (:meth:`LedgerSession.turn`): each run's items are
    contiguous in the history, a run waits up to ``turn_wait`` for the one before it, and one
    that crashed frees the session after ``turn_lease``.
    """

    def __init__(
        self,
        agent: Agent[Any],
        ledger: StoreProvider,
        *,
        session_settings: SessionSettings | None = None,
        window: HistoryWindow | None = None,
        turn_lease: timedelta = DEFAULT_TURN_LEASE,
        turn_wait: timedelta = DEFAULT_TURN_WAIT,
        compaction: CompactionPolicy | None = None,
    ) -> None:
        if not isinstance(ledger, StoreProvider):
            raise TypeError(
                "SessionAgent(agent, ledger) needs an agentledger Ledger (or another "
                "agentledger.integrations.store.StoreProvider)"
            )
        self.agent = agent
        self.ledger = ledger
        self._session_settings = session_settings
        self._window = window
        self._turn_lease = check_duration(turn_lease, "turn_lease", minimum=MIN_TURN_LEASE)
        self._turn_wait = check_duration(turn_wait, "turn_wait", zero_ok=True)
        if compaction is not None and not isinstance(compaction, CompactionPolicy):
            raise TypeError("compaction must be an agentledger CompactionPolicy or None")
        self._compaction = compaction

    def session(self, session_id: uuid.UUID | str, user_id: str) -> LedgerSession:
        """The SDK session this agent uses for ``session_id`` on behalf of ``user_id``."""
        return LedgerSession(
            str(session_id),
            service=self.ledger.service_for(user_id),
            user_id=user_id,
            agent_name=self.agent.name,
            settings=self._session_settings,
            window=self._window,
            compaction=self._compaction,
        )

    async def run(
        self,
        user_input: str | list[TResponseInputItem],
        session_id: uuid.UUID | str | None = None,
        user_id: str | None = None,
        **runner_kwargs: Any,
    ) -> AgentRunResult:
        """Run the agent on ``user_input`` within the session (a new one when ``None``) on
        behalf of ``user_id``, the session's owner (required, unless the ledger's settings
        name a ``default_user_id``)."""
        session = await self._open(session_id, user_id, runner_kwargs)
        async with session.turn(lease=self._turn_lease, wait=self._turn_wait):
            try:
                raw = await Runner.run(self.agent, user_input, session=session, **runner_kwargs)
            except AgentsException as error:
                await self._record_failed_run(session, error)
                raise
            usage = await self._record_usage(session, raw.context_wrapper.usage)
            # Still within the turn, so no other run appends while the summary is made.
            checkpoint = await self._compact(session)
        return AgentRunResult(raw.final_output, session.ledger_session_id, usage, raw, checkpoint)

    async def run_streamed(
        self,
        user_input: str | list[TResponseInputItem],
        session_id: uuid.UUID | str | None = None,
        user_id: str | None = None,
        **runner_kwargs: Any,
    ) -> StreamedAgentRun:
        """Start a streamed run; iterate ``stream_events()`` on what it returns.

        The run holds the session's turn until its events have been consumed to the end, or,
        when nobody reads them (the handle may even be dropped), until the run has finished
        in the background."""
        session = await self._open(session_id, user_id, runner_kwargs)
        turn = StreamedTurn(session, lease=self._turn_lease, wait=self._turn_wait)
        await turn.claimed()
        try:
            raw = Runner.run_streamed(self.agent, user_input, session=session, **runner_kwargs)
        except BaseException:
            turn.finish()
            raise
        turn.watch(raw)
        return StreamedAgentRun(self, session, raw, turn)

    # -- internals ------------------------------------------------------------------------

    async def _open(
        self,
        session_id: uuid.UUID | str | None,
        owner: str | None,
        runner_kwargs: Mapping[str, Any],
    ) -> LedgerSession:
        if "session" in runner_kwargs:
            raise TypeError("SessionAgent manages the session itself; pass session_id instead")
        user_id = self.ledger.owner(owner)
        if session_id is None:
            service = self.ledger.service_for(user_id)
            record = await service.create_session(user_id, self.agent.name)
            return self.session(record.id, user_id)
        session = self.session(session_id, user_id)
        if session.name is not None:
            await session.resolve()  # a name is always this user's; find where it lives
        else:
            await session.check_access()  # fail fast, before any model call
        return session

    async def _compact(self, session: LedgerSession) -> Checkpoint | None:
        """Compact after a turn when the policy's trigger is met; its usage is recorded with
        the checkpoint, apart from the turn's."""
        if self._compaction is None:
            return None
        await session.run_compaction({"force": False})
        # Runner may have compacted during the run already (it calls the same hook).
        return session.last_checkpoint

    async def _record_usage(self, session: LedgerSession, usage: SdkUsage) -> Usage:
        record = usage_from_sdk(usage)
        await session.service.record_usage(
            session.ledger_session_id, record, user_id=session.user_id
        )
        return record

    async def _record_failed_run(self, session: LedgerSession, error: AgentsException) -> Usage:
        """Tokens spent by a run that failed (max turns, guardrail, ...) still count; the
        usage recorded (zero when the SDK did not report any)."""
        run_data = error.run_data
        if run_data is None:
            return Usage()
        try:
            return await self._record_usage(session, run_data.context_wrapper.usage)
        except LedgerError:
            logger.warning("could not record the usage of a failed agent run", exc_info=True)
            return usage_from_sdk(run_data.context_wrapper.usage)
