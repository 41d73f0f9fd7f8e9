"""LedgerSession: the Agents SDK's ``Session`` protocol over agentledger.

``Runner.run(agent, text, session=...)`` reads the stored history before the model call and
appends the turn's items after it. A thin adapter: ordering, validation, ownership and
atomicity live in the service (a :class:`~agentledger.integrations.store.HistoryStore`); this
module maps the SDK's calls onto it, always passing the ``user_id`` so one user's session is
never read or changed through another's.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

from agents.items import TResponseInputItem
from agents.memory.session_settings import (
    SessionSettings,
    coerce_session_settings,
    resolve_session_limit,
)
from agents.run_context import RunContextWrapper

from agentledger.domain.naming import resolve_session_uuid, session_name
from agentledger.domain.records import Checkpoint, SessionSpec
from agentledger.domain.turns import DEFAULT_TURN_LEASE, DEFAULT_TURN_WAIT
from agentledger.domain.windows import HistoryWindow, TokenCounter, read_window
from agentledger.errors import AlreadyExistsError, SessionNotFoundError
from agentledger.integrations.openai_agents.compaction import CompactionPolicy, compact
from agentledger.integrations.store import HistoryStore

logger = logging.getLogger("agentledger")


class LedgerSession:
    """An Agents SDK session (``agents.memory.Session``) stored by agentledger.

    Build it with :meth:`Ledger.agent_session <agentledger.Ledger.agent_session>`. The session
    row is created, owned by ``user_id`` and named after ``agent_name``, by the first write.

    ``session_id`` is a UUID (that session; a handle on someone else's session raises
    :class:`~agentledger.SessionNotFoundError` at its first read or write, so ``Runner.run``
    stops before the model is called) or any other string, a *name*, which stays the user's:
    it opens the user's session of that name wherever it lives (see
    :meth:`SessionService.resolve_name`), so nobody can take or block it.

    ``get_items(limit)`` follows the SDK contract (latest ``limit`` items in order, all of them
    for ``None``; ``session_settings.limit`` is the default limit) over what the model
    receives: the newest compaction checkpoint's summary followed by the items after it (see
    :class:`~agentledger.integrations.openai_agents.CompactionPolicy`; the history itself
    keeps every original). With a ``window``
    (:class:`~agentledger.windows.HistoryWindow`, or :meth:`windowed`), ``get_items()`` without
    a limit returns that window instead of the whole history, so ``Runner.run`` sends the model
    only the last turns / a token budget, never splitting a tool call from its output. An
    explicit ``limit`` always means exactly the latest ``limit`` items, because the SDK relies
    on that internally.
    """

    session_id: str
    session_settings: SessionSettings | None

    def __init__(
        self,
        session_id: str,
        *,
        service: HistoryStore,
        user_id: str,
        agent_name: str,
        settings: SessionSettings | Mapping[str, Any] | None = None,
        window: HistoryWindow | None = None,
        compaction: CompactionPolicy | None = None,
    ) -> None:
        if compaction is not None and not isinstance(compaction, CompactionPolicy):
            raise TypeError("compaction must be an agentledger CompactionPolicy or None")
        self._compaction = compaction
        #: The newest checkpoint this handle's compactions stored (``Runner`` drives them
        #: too, through :meth:`run_compaction`), or ``None``.
        self.last_checkpoint: Checkpoint | None = None
        self._uuid = resolve_session_uuid(session_id, user_id)
        self.session_id = session_id if isinstance(session_id, str) else str(session_id)
        #: The name this session was opened by (``None``: opened by its UUID).
        self._name = session_name(session_id)
        #: Whether ``_uuid`` is known to be this user's session of that name (always, for UUIDs).
        self._confirmed = self._name is None
        #: Whether a UUID-addressed session is known to be this user's (or free to create).
        self._usable = False
        #: The id this name's session gets if the derived one turns out to be someone else's.
        self._fallback = uuid.uuid4()
        if settings is None:
            self.session_settings = SessionSettings()
        elif isinstance(settings, SessionSettings):
            self.session_settings = settings
        else:
            self.session_settings = coerce_session_settings(dict(settings))
        if window is not None and not isinstance(window, HistoryWindow):
            raise TypeError("window must be an agentledger.domain.windows.HistoryWindow or None")
        if window is not None and self.session_settings.limit is not None:
            raise ValueError(
                "use either session_settings.limit or a history window, not both: the SDK "
                "passes the limit explicitly, which would bypass the window"
            )
        self._service = service
        self._user_id = user_id
        self._agent_name = agent_name
        self._window = window

    # -- identity -----------------------------------------------------------------------

    @property
    def ledger_session_id(self) -> uuid.UUID:
        """The agentledger session this SDK session reads and writes.

        For a name: the session's id once it exists (after its first write, or ``await
        session.resolve()``); before that, the id it is expected to get. It is never another
        user's session: when another user holds the id derived from the name, this name's
        session gets a random id of its own."""
        return self._uuid

    @property
    def name(self) -> str | None:
        """The name this session was opened by, or ``None`` when opened by its UUID."""
        return self._name

    async def resolve(self, *, create: bool = False) -> uuid.UUID | None:
        """The id of the session this SDK session reads and writes, looked up once for a name
        (``None``: no session of that name yet; ``create`` makes it)."""
        if self._confirmed:
            return self._uuid
        assert self._name is not None
        spec = SessionSpec(self._user_id, self._agent_name, self._name) if create else None
        found = await self._service.resolve_name(
            self._name, user_id=self._user_id, create_as=spec, new_id=self._fallback
        )
        if found is not None:
            self._uuid, self._confirmed = found, True
        elif not await self._service.can_write(self._uuid, user_id=self._user_id):
            self._uuid = self._fallback  # the derived id is someone else's: never point at it
        return found

    @property
    def user_id(self) -> str:
        return self._user_id

    @property
    def agent_name(self) -> str:
        return self._agent_name

    @property
    def service(self) -> HistoryStore:
        """The service this session runs on (tenant-scoped under row-level security)."""
        return self._service

    @property
    def window(self) -> HistoryWindow | None:
        """The history window ``get_items()`` applies, if any."""
        return self._window

    def windowed(
        self, *, max_turns: int | None = None, max_tokens: int | None = None
    ) -> LedgerSession:
        """The same session, whose ``get_items()`` returns only the given window."""
        return LedgerSession(
            self.session_id,
            service=self._service,
            user_id=self._user_id,
            agent_name=self._agent_name,
            settings=self.session_settings,
            window=HistoryWindow(max_turns=max_turns, max_tokens=max_tokens),
            compaction=self._compaction,
        )

    def __repr__(self) -> str:
        return (
            f"LedgerSession(session_id={self.session_id!r}, "
            f"ledger_session_id={self._uuid}, user_id={self._user_id!r})"
        )

    # -- the Session protocol -----------------------------------------------------------

    async def get_items(
        self, limit: int | None = None, *, wrapper: RunContextWrapper[Any] | None = None
    ) -> list[TResponseInputItem]:
        """The latest ``limit`` items in chronological order (see the class docstring).

        ``wrapper``: the run context the SDK passes to sessions that accept it (on every
        history method); this session's user is fixed, so it is not needed here (see
        :class:`~agentledger.integrations.openai_agents.ContextUserSession`)."""
        resolved = resolve_session_limit(limit, self.session_settings)
        if resolved is None and self._window is not None:
            return await self.get_items_window(
                max_turns=self._window.max_turns,
                max_tokens=self._window.max_tokens,
                count_tokens=self._window.count_tokens,
            )
        return await self._read(resolved)

    async def _context_items(self, session_id: uuid.UUID, limit: int | None) -> list[Any]:
        """What the model receives from ``session_id``, read as this user."""
        return await self._service.get_context_items(session_id, limit, user_id=self._user_id)

    async def _read(self, limit: int | None) -> list[Any]:
        if self._name is None:
            items = await self._context_items(self._uuid, limit)
            if items:
                self._usable = True  # reads see only the user's own rows: the session is theirs
            elif not self._usable:
                await self.check_access()
            return items
        if self._confirmed:
            return await self._context_items(self._uuid, limit)
        # A name: one read at the id derived from it, which is where the session lives unless
        # another user took that id; only when it shows nothing is the name looked up.
        try:
            items = await self._context_items(self._uuid, limit)
        except SessionNotFoundError:
            items = []
        if items:
            self._confirmed = True
            return items
        found = await self.resolve(create=False)
        if found is None:
            return []
        return await self._context_items(found, limit)

    async def check_access(self) -> None:
        """Raise :class:`~agentledger.SessionNotFoundError` now if this handle could not
        store a turn: it names, by UUID, another user's session. The first read does this
        check, so ``Runner.run`` stops before calling a model whose answer would be lost. A
        name always has a session of the user's own."""
        if self._usable or self._name is not None:
            return
        if not await self._service.can_write(self._uuid, user_id=self._user_id):
            raise SessionNotFoundError(
                f"session {self._uuid} does not exist for user {self._user_id!r}; open one of "
                "the user's session ids, or a name"
            )
        # Not remembered: an unused id may still be taken by someone else before this user's
        # first write; the check is remembered once a read or a write shows the session theirs.

    async def add_items(
        self, items: list[TResponseInputItem], *, wrapper: RunContextWrapper[Any] | None = None
    ) -> None:
        """Append ``items`` atomically and in order, creating the session on first write."""
        spec = SessionSpec(self._user_id, self._agent_name, self._name)
        if not self._confirmed:
            try:
                await self._service.add_items(
                    self._uuid, items, user_id=self._user_id, create_as=spec
                )
            except (SessionNotFoundError, AlreadyExistsError):
                # Another user holds the derived id, or this user's session of that name lives
                # elsewhere (the derived id was squatted, then freed): look the name up.
                pass
            else:
                self._confirmed = True
                return
        target = await self.resolve(create=True)
        assert target is not None
        await self._service.add_items(target, items, user_id=self._user_id, create_as=spec)
        self._usable = True  # stored: the session is this user's

    async def pop_item(
        self, *, wrapper: RunContextWrapper[Any] | None = None
    ) -> TResponseInputItem | None:
        """Remove and return the newest item (``None`` when empty); each item is popped once."""
        await self.check_access()
        target = await self.resolve(create=False)
        if target is None:
            return None
        item: TResponseInputItem | None = await self._service.pop_item(
            target, user_id=self._user_id
        )
        return item

    async def clear_session(self, *, wrapper: RunContextWrapper[Any] | None = None) -> None:
        """Delete every item of the session (the session row, its owner and usage stay)."""
        await self.check_access()
        target = await self.resolve(create=False)
        if target is not None:
            await self._service.clear_session(target, user_id=self._user_id)

    # -- compaction ---------------------------------------------------------------------

    @property
    def compaction(self) -> CompactionPolicy | None:
        """The compaction policy of this session, if any."""
        return self._compaction

    async def run_compaction(
        self,
        args: Mapping[str, Any] | None = None,
        *,
        wrapper: RunContextWrapper[Any] | None = None,
    ) -> Checkpoint | None:
        """Compact the session under its policy; the new checkpoint, or ``None`` when there
        was nothing to do.

        Called without ``args`` (you, forcing it): always compacts, and raises what goes
        wrong, including :class:`TypeError` when the session has no policy. Called with
        ``args`` (how the SDK's ``Runner`` calls this hook after a turn; ``{"force": True}``
        forces): compacts when the trigger is met, or forced, and never fails the turn that
        is already stored: a failing summarizer or token counter is logged and the next turn
        tries again."""
        if self._compaction is None:
            if args is None:
                raise TypeError(
                    "this session has no compaction policy: open it with "
                    "compaction=CompactionPolicy(...)"
                )
            return None
        await self.check_access()
        target = await self.resolve(create=False)
        if target is None:
            return None  # nothing stored yet
        force = args is None or bool(args.get("force"))
        try:
            made = await compact(
                self._service, target, self._user_id, self._compaction, force=force
            )
        except Exception:
            if args is None:
                raise
            logger.warning(
                "agentledger: compacting session %s failed; its history is intact and the "
                "next turn tries again",
                target,
                exc_info=True,
            )
            return None
        if made is not None:
            self.last_checkpoint = made
        return made

    async def _atomic_replace_items(self, items: list[TResponseInputItem]) -> bool:
        """The SDK's atomic-replace hook: ``OpenAIResponsesCompactionSession`` replaces the
        history wholesale through it instead of clearing and re-adding. Here that is one
        transaction storing ``items`` as a checkpoint over the whole history: what the model
        receives becomes ``items``, the originals stay (exports, search, forks). ``False``
        (nothing done; the SDK falls back to its own way) for an empty replacement."""
        if not items:
            return False
        target = await self._existing()
        made = await self._service.replace_context(
            target, items, model="openai-responses-compaction", user_id=self._user_id
        )
        if made is not None:
            self.last_checkpoint = made
        return True

    # -- turns --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def turn(
        self,
        *,
        lease: timedelta = DEFAULT_TURN_LEASE,
        wait: timedelta = DEFAULT_TURN_WAIT,
    ) -> AsyncIterator[LedgerSession]:
        """Hold this session's turn for the ``async with`` block, so that the items of a
        ``Runner.run(..., session=session)`` inside it are contiguous in the history even
        when other turns (other tasks, processes or machines) run on the same session: each
        waits for the one before it. No connection is held meanwhile; the lease is renewed
        while the block runs, and a crashed turn frees the session after ``lease``. Creates
        the session if needed (as the first write would). See
        :meth:`SessionService.turn <agentledger.SessionService.turn>`."""
        target = await self._existing()
        async with self._service.turn(target, user_id=self._user_id, lease=lease, wait=wait):
            yield self

    async def _existing(self) -> uuid.UUID:
        """The id of this handle's session, created now when it does not exist yet."""
        if self._name is not None:
            found = await self.resolve(create=True)
            assert found is not None
            return found
        await self.check_access()
        # Already there is fine: check_access showed it is not another user's.
        with contextlib.suppress(AlreadyExistsError):
            await self._service.create_session(
                self._user_id, self._agent_name, session_id=self._uuid
            )
        self._usable = True
        return self._uuid

    # -- windows ------------------------------------------------------------------------

    async def get_items_window(
        self,
        *,
        max_turns: int | None = None,
        max_tokens: int | None = None,
        count_tokens: TokenCounter | None = None,
    ) -> list[TResponseInputItem]:
        """The last ``max_turns`` user turns and/or ~``max_tokens`` tokens of the history.

        Never separates a tool call from its output nor a reasoning item from the item it
        precedes (see :mod:`agentledger.domain.windows` for the exact rules); reads only as much of
        the history's tail as the window needs. ``count_tokens(item) -> int`` replaces the
        default chars/4 estimate.
        """
        window = HistoryWindow(
            max_turns=max_turns, max_tokens=max_tokens, count_tokens=count_tokens
        )

        async def read_latest(limit: int | None) -> list[Any]:
            return await self._read(limit)

        return await read_window(read_latest, window)
