"""ContextUserSession: one SDK session object whose user comes from each run's context.

A web application often builds its agent and session once and serves many users with it; the
user is only known per request, in the run context (``Runner.run(..., context=...)``). The
Agents SDK passes that context (``wrapper``) to sessions whose history methods accept it, and
this session asks the application's ``user_from_context`` for the user on every call, then acts
as that user's :class:`LedgerSession` of the same name or id. One user's history is therefore
never read or written on behalf of another, however the object is shared.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from agents.items import TResponseInputItem
from agents.memory.session_settings import SessionSettings
from agents.run_context import RunContextWrapper

from agentledger.domain.records import Checkpoint
from agentledger.domain.validation import check_name
from agentledger.domain.windows import HistoryWindow
from agentledger.integrations.openai_agents.compaction import CompactionPolicy
from agentledger.integrations.openai_agents.session import LedgerSession
from agentledger.integrations.store import StoreProvider

#: Picks the user a run acts for from its context, e.g. ``lambda run: run.context.user_id``.
UserFromContext = Callable[[RunContextWrapper[Any]], str]

#: Users whose :class:`LedgerSession` stays at hand (each remembers where its session lives).
_CACHED_USERS = 256


class ContextUserSession:
    """An Agents SDK session whose owner is the user of each run's context.

    Build it with ``ledger.agent_session(name, user_from_context=...)``. Every history method
    takes the SDK's ``wrapper`` (the run context) and acts as
    ``ledger.agent_session(name, user_id=user_from_context(wrapper))`` would. A call without a
    run context (the application calling ``get_items()`` itself, or ``Runner.run`` without
    ``context=``, whose wrapper holds ``None``) acts for ``user_id`` when one was given, and
    otherwise raises :class:`TypeError`: it never guesses a user.
    """

    session_id: str
    session_settings: SessionSettings | None

    def __init__(
        self,
        session_id: str,
        *,
        stores: StoreProvider,
        user_from_context: UserFromContext,
        agent_name: str,
        user_id: str | None = None,
        settings: SessionSettings | None = None,
        window: HistoryWindow | None = None,
        compaction: CompactionPolicy | None = None,
    ) -> None:
        if not callable(user_from_context):
            raise TypeError("user_from_context must be a callable taking the run context")
        self.session_id = session_id if isinstance(session_id, str) else str(session_id)
        self.session_settings = settings if settings is not None else SessionSettings()
        self._stores = stores
        self._user_from_context = user_from_context
        self._agent_name = agent_name
        self._default_user = None if user_id is None else check_name(user_id, "user_id")
        self._window = window
        self._compaction = compaction
        self._sessions: OrderedDict[str, LedgerSession] = OrderedDict()
        if self._default_user is not None:
            self.for_user(self._default_user)  # bad ids and settings fail here, not mid-run

    def for_user(self, user_id: str) -> LedgerSession:
        """This session as ``user_id``'s :class:`LedgerSession` (the same one each time)."""
        user = check_name(user_id, "user_id")
        session = self._sessions.get(user)
        if session is None:
            session = LedgerSession(
                self.session_id,
                service=self._stores.service_for(user),
                user_id=user,
                agent_name=self._agent_name,
                settings=self.session_settings,
                window=self._window,
                compaction=self._compaction,
            )
            self._sessions[user] = session
            if len(self._sessions) > _CACHED_USERS:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(user)
        return session

    def _session(self, wrapper: RunContextWrapper[Any] | None) -> LedgerSession:
        # Runner.run without context= still passes a wrapper, around None: no run context.
        if wrapper is not None and wrapper.context is not None:
            user = self._user_from_context(wrapper)
            if not isinstance(user, str):
                raise TypeError(
                    f"user_from_context must return the user id (a str), got {type(user).__name__}"
                )
            return self.for_user(user)
        if self._default_user is None:
            raise TypeError(
                f"session {self.session_id!r} takes its user from the run context, and this "
                "call has none: call it inside Runner.run (which passes the context), use "
                "session.for_user(user_id), or give agent_session a fallback user_id"
            )
        return self.for_user(self._default_user)

    def __repr__(self) -> str:
        return f"ContextUserSession(session_id={self.session_id!r})"

    # -- the Session protocol, with the run context ------------------------------------

    async def get_items(
        self, limit: int | None = None, *, wrapper: RunContextWrapper[Any] | None = None
    ) -> list[TResponseInputItem]:
        """The context user's latest ``limit`` items (see :meth:`LedgerSession.get_items`)."""
        return await self._session(wrapper).get_items(limit)

    async def add_items(
        self, items: list[TResponseInputItem], *, wrapper: RunContextWrapper[Any] | None = None
    ) -> None:
        """Append to the context user's session (see :meth:`LedgerSession.add_items`)."""
        await self._session(wrapper).add_items(items)

    async def pop_item(
        self, *, wrapper: RunContextWrapper[Any] | None = None
    ) -> TResponseInputItem | None:
        """Pop the context user's newest item (see :meth:`LedgerSession.pop_item`)."""
        return await self._session(wrapper).pop_item()

    async def clear_session(self, *, wrapper: RunContextWrapper[Any] | None = None) -> None:
        """Clear the context user's session (see :meth:`LedgerSession.clear_session`)."""
        await self._session(wrapper).clear_session()

    async def run_compaction(
        self,
        args: Mapping[str, Any] | None = None,
        *,
        wrapper: RunContextWrapper[Any] | None = None,
    ) -> Checkpoint | None:
        """Compact the context user's session (see :meth:`LedgerSession.run_compaction`);
        the SDK's ``Runner`` calls this hook with the run context."""
        return await self._session(wrapper).run_compaction(args)
