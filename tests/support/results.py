"""Checking at run time what a call declared ``-> None`` returns."""

from __future__ import annotations

from collections.abc import Awaitable


async def returned(awaitable: Awaitable[object]) -> object:
    """What ``awaitable`` returns, typed ``object``.

    mypy refuses to use the value of a call declared ``-> None`` (``func-returns-value``), yet a
    test may check that such a call really returns None: ``assert await returned(f()) is None``.
    """
    return await awaitable
