"""Child processes of the tests: their output, bounded in time."""

from __future__ import annotations

import asyncio

#: Bound for each child process (an import of agentledger and migrations take a few seconds).
SUBPROCESS_TIMEOUT = 120.0


async def finished(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``process`` (started with pipes); a process still
    running after :data:`SUBPROCESS_TIMEOUT` is killed and the test fails with the timeout."""
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), SUBPROCESS_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()
