"""HTTP servers of the web tests, on a free loopback port, always stopped.

:func:`served` runs an ASGI app under uvicorn inside the test's event loop (for streams, which
httpx's in-process transport cannot deliver incrementally); :func:`agentledger_serve` runs the
real command, ``agentledger serve``, as a child process. Both stop their server when the block
ends, on failure too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn

#: How long a server may take to answer its first request.
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """``app`` under uvicorn on a free loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while not server.started:
                if task.done():
                    task.result()  # raises what stopped it
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True  # open event streams must not hold the shutdown
        try:
            await asyncio.wait_for(task, 30)
        except TimeoutError:  # pragma: no cover - a server that would not stop
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def agentledger_serve(database_url: str, *extra: str) -> AsyncIterator[str]:
    """``agentledger serve`` in a child process on a free loopback port; yields its base URL
    once it answers."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentledger",
        "--database-url",
        database_url,
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as client, asyncio.timeout(START_TIMEOUT):
            while True:
                if process.returncode is not None:
                    assert process.stderr is not None
                    error = (await process.stderr.read()).decode()
                    raise AssertionError(f"agentledger serve exited: {error}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/api/v1/openapi.json")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield base
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:  # pragma: no cover
                process.kill()
                await process.wait()
