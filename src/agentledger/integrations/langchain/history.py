"""LedgerChatMessageHistory: LangChain's ``BaseChatMessageHistory`` over agentledger.

Each LangChain message is one agentledger message: its chat view (role, text, tool calls,
tool call id) for search, listings, exports and transcripts, and the exact message in its item
(see :mod:`agentledger.domain.langchain_messages`), which is what comes back. A thin adapter:
ordering, validation, ownership and atomicity live in the service (a
:class:`~agentledger.integrations.store.HistoryStore`), as for the Agents SDK's session.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict

from agentledger.domain.langchain_messages import (
    is_langchain_item,
    langchain_item,
    stored_message,
)
from agentledger.domain.naming import resolve_session_uuid, session_name
from agentledger.domain.projection import OPAQUE_ITEM_TYPE, chat_view
from agentledger.domain.records import SessionSpec
from agentledger.domain.validation import check_limit, check_name
from agentledger.domain.windows import HistoryWindow, read_window
from agentledger.errors import (
    AlreadyExistsError,
    InvalidItemTypeError,
    SessionNotFoundError,
    SyncCallInEventLoopError,
)
from agentledger.integrations.store import HistoryStore, StoreProvider

T = TypeVar("T")

#: The ``framework`` a session created by this adapter is recorded with.
FRAMEWORK = "langchain"
#: The agent name of sessions created without one.
DEFAULT_AGENT_NAME = "langchain"


class LedgerChatMessageHistory(BaseChatMessageHistory):
    """A LangChain chat message history stored by agentledger, owned by ``user_id``.

    Build it with :meth:`for_user` (or a ``get_session_history`` factory from
    :meth:`factory`). ``session_id`` is a session's UUID (that session: another user's reads
    empty, and writes to it raise :class:`~agentledger.SessionNotFoundError`) or any other
    string, a *name*, which is the user's own: the same name opens the same session for that
    user, a separate one for another (as for the Agents SDK session). The first write creates
    the session, with ``agent_name`` as its agent and ``framework="langchain"``.

    The async methods (``aget_messages``, ``aadd_messages``, ``aclear``) are native; the sync
    ones (``messages``, ``add_messages`` and the ``add_message`` helpers built on it,
    ``clear``) run them on an event loop of their own, so they work where no event loop runs,
    and raise
    :class:`~agentledger.errors.SyncCallInEventLoopError` inside a running loop (where they
    would stall it) instead of blocking.

    ``window`` (a :class:`~agentledger.windows.HistoryWindow`, or :meth:`windowed`) makes
    ``messages`` / ``aget_messages()`` return only the last turns or a token budget, never
    separating an AI message's tool calls from their tool messages; everything stays stored.
    :meth:`aget_recent` reads exactly the latest ``n`` messages.
    """

    def __init__(
        self,
        session_id: str | uuid.UUID,
        *,
        store: HistoryStore,
        user_id: str,
        agent_name: str = DEFAULT_AGENT_NAME,
        window: HistoryWindow | None = None,
    ) -> None:
        if window is not None and not isinstance(window, HistoryWindow):
            raise TypeError("window must be an agentledger HistoryWindow or None")
        self._user_id = check_name(user_id, "user_id")
        self._agent_name = check_name(agent_name, "agent_name")
        self._derived = resolve_session_uuid(session_id, self._user_id)
        #: The name this history was opened by (``None``: opened by its session's UUID).
        self._name = session_name(session_id)
        #: The session's id once known to be this user's (always, for a UUID).
        self._target: uuid.UUID | None = self._derived if self._name is None else None
        self.session_id = str(session_id)
        self._store = store
        self._window = window

    # -- construction --------------------------------------------------------------------

    @classmethod
    def for_user(
        cls,
        stores: StoreProvider,
        session_id: str | uuid.UUID,
        *,
        user_id: str | None = None,
        agent_name: str = DEFAULT_AGENT_NAME,
        window: HistoryWindow | None = None,
    ) -> LedgerChatMessageHistory:
        """The history ``session_id`` of ``user_id`` on ``stores`` (a
        :class:`~agentledger.Ledger`, or any :class:`StoreProvider`): the store scoped to that
        user, and the owner the ledger names when ``user_id`` is ``None`` (its
        ``default_user_id``; otherwise TypeError: histories are never filed under a shared
        default)."""
        owner = stores.owner(user_id)
        return cls(
            session_id,
            store=stores.service_for(owner),
            user_id=owner,
            agent_name=agent_name,
            window=window,
        )

    @classmethod
    def factory(
        cls,
        stores: StoreProvider,
        *,
        user_id: str | None = None,
        agent_name: str = DEFAULT_AGENT_NAME,
        window: HistoryWindow | None = None,
    ) -> Callable[..., LedgerChatMessageHistory]:
        """A ``get_session_history`` for ``RunnableWithMessageHistory``: called with the
        ``session_id`` of a run's config, and with ``user_id=`` too when the runnable's
        ``history_factory_config`` names that field (one runnable serving many users); without
        it, the ``user_id`` given here owns the history."""

        def get_session_history(
            session_id: str, *, user_id: str | None = user_id
        ) -> LedgerChatMessageHistory:
            return cls.for_user(
                stores, session_id, user_id=user_id, agent_name=agent_name, window=window
            )

        return get_session_history

    def windowed(
        self, *, max_turns: int | None = None, max_tokens: int | None = None
    ) -> LedgerChatMessageHistory:
        """The same history, whose ``messages`` are only the given window."""
        return type(self)(
            self._name if self._name is not None else self._derived,
            store=self._store,
            user_id=self._user_id,
            agent_name=self._agent_name,
            window=HistoryWindow(max_turns=max_turns, max_tokens=max_tokens),
        )

    @property
    def user_id(self) -> str:
        return self._user_id

    @property
    def agent_name(self) -> str:
        return self._agent_name

    @property
    def name(self) -> str | None:
        """The name this history was opened by, or ``None`` when opened by its UUID."""
        return self._name

    @property
    def window(self) -> HistoryWindow | None:
        return self._window

    async def ledger_session_id(self) -> uuid.UUID | None:
        """The agentledger session this history reads and writes (``None``: a name with no
        session yet)."""
        return await self._existing()

    def __repr__(self) -> str:
        return (
            f"LedgerChatMessageHistory(session_id={self.session_id!r}, user_id={self._user_id!r})"
        )

    # -- async API -------------------------------------------------------------------------

    async def aget_messages(self) -> list[BaseMessage]:
        """Every message in order, or the window's when the history has one."""
        if self._window is None:
            return await self._read(None)
        items = await read_window(self._read_items, self._window)
        return _messages(items)

    async def aget_recent(self, n: int) -> list[BaseMessage]:
        """Exactly the latest ``n`` messages, in order (one indexed read of the tail)."""
        return await self._read(check_limit(n, "n"))

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` atomically (all of them, contiguous and in order, or none),
        creating the session on the first write."""
        items = [_item(message, index) for index, message in enumerate(messages)]
        if not items:
            return
        spec = SessionSpec(self._user_id, self._agent_name, self._name, framework=FRAMEWORK)
        if self._target is None:
            assert self._name is not None
            try:  # a name's session normally lives at the id derived from it
                await self._store.add_items(
                    self._derived, items, user_id=self._user_id, create_as=spec
                )
            except (SessionNotFoundError, AlreadyExistsError):
                pass  # another user holds that id, or this name's session lives elsewhere
            else:
                self._target = self._derived
                return
            self._target = await self._store.resolve_name(
                self._name, user_id=self._user_id, create_as=spec, new_id=uuid.uuid4()
            )
        assert self._target is not None
        await self._store.add_items(self._target, items, user_id=self._user_id, create_as=spec)

    async def aclear(self) -> None:
        """Delete every message (the session row, its owner and usage stay)."""
        target = await self._existing()
        if target is not None:
            await self._store.clear_session(target, user_id=self._user_id)

    # -- sync API ----------------------------------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """Every message in order (or the window); sync twin of :meth:`aget_messages`."""
        return self._blocking(self.aget_messages, "messages", "await history.aget_messages()")

    def get_recent(self, n: int) -> list[BaseMessage]:
        """Sync twin of :meth:`aget_recent`."""
        return self._blocking(lambda: self.aget_recent(n), "get_recent", "aget_recent")

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Sync twin of :meth:`aadd_messages`."""
        self._blocking(lambda: self.aadd_messages(messages), "add_messages", "aadd_messages")

    def clear(self) -> None:
        """Sync twin of :meth:`aclear`."""
        self._blocking(self.aclear, "clear", "aclear")

    def _blocking(self, make: Callable[[], Coroutine[Any, Any, T]], method: str, instead: str) -> T:
        """Run ``make()`` to completion on an event loop of its own; refused on a thread whose
        loop is running (waiting there would stall that loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(make())
        raise SyncCallInEventLoopError(
            f"LedgerChatMessageHistory.{method} blocks, and this thread runs an event loop: "
            f"use {instead} there (RunnableWithMessageHistory does with ainvoke/astream), or "
            "call it from a thread without a running loop"
        )

    # -- reads -------------------------------------------------------------------------------

    async def _existing(self) -> uuid.UUID | None:
        """The session's id when it exists for this user (always the UUID it was opened by)."""
        if self._target is None:
            assert self._name is not None
            self._target = await self._store.resolve_name(self._name, user_id=self._user_id)
        return self._target

    async def _read(self, limit: int | None) -> list[BaseMessage]:
        return _messages(await self._read_items(limit))

    async def _read_items(self, limit: int | None) -> list[Any]:
        if self._target is None:
            # A name: one read at the id derived from it, where its session lives unless
            # another user took that id; only when it shows nothing is the name looked up.
            items = await self._store.get_items(self._derived, limit, user_id=self._user_id)
            if items:
                self._target = self._derived
                return items
        target = await self._existing()
        if target is None:
            return []
        return await self._store.get_items(target, limit, user_id=self._user_id)


def _item(message: object, index: int) -> dict[str, Any]:
    """The item stored for one LangChain message (refused, with nothing written, when it is
    not a message)."""
    if not isinstance(message, BaseMessage):
        raise InvalidItemTypeError(
            f"message {index} must be a langchain_core BaseMessage, got {type(message).__name__}"
        )
    return langchain_item(message_to_dict(message))


def _messages(items: Sequence[Any]) -> list[BaseMessage]:
    """The LangChain messages of stored items: each as ``message_to_dict`` wrote it, and an
    item another writer stored in the session (``service.add_message``, an Agents SDK run) as
    the message its chat view shows; an opaque item (an encrypted envelope) is left out."""
    dicts = []
    for item in items:
        if is_langchain_item(item):
            dicts.append(stored_message(item))
            continue
        view = chat_view(item)
        if view.item_type != OPAQUE_ITEM_TYPE:
            dicts.append(
                _from_chat_view(view.role, view.content, view.tool_calls, view.tool_call_id)
            )
    return messages_from_dict(dicts)


_TYPE_OF_ROLE = {"user": "human", "assistant": "ai", "tool": "tool"}


def _from_chat_view(
    role: str, content: str, tool_calls: list[dict[str, Any]] | None, tool_call_id: str | None
) -> dict[str, Any]:
    """A message of another writer, in the ``message_to_dict`` form of its chat view."""
    kind = _TYPE_OF_ROLE.get(role, "system")
    data: dict[str, Any] = {"content": content}
    if kind == "tool":
        data["tool_call_id"] = tool_call_id or ""
    if kind == "ai" and tool_calls:
        data["tool_calls"] = [_langchain_call(call) for call in tool_calls]
    return {"type": kind, "data": data}


def _langchain_call(call: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-format tool call as LangChain's ``{"name", "args", "id"}`` (arguments that are
    not a JSON object are kept under ``"input"``)."""
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    arguments = function.get("arguments")
    try:
        args = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        args = arguments
    return {
        "name": str(function.get("name") or call.get("type") or "tool"),
        "args": args if isinstance(args, dict) else {"input": args},
        "id": call.get("id") if isinstance(call.get("id"), str) else None,
    }
