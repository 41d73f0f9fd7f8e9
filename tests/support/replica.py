"""A throwaway PostgreSQL primary with a streaming replica, for the read-replica tests.

Self-contained, so the tests never depend on how the system's server is configured: ``initdb``
makes a primary (``wal_level=replica``, trust authentication for local and replication
connections) on a free loopback port, ``pg_basebackup -R`` copies it into a second data
directory, which starts as a hot standby on another free port and streams from the primary.
PostgreSQL refuses to run as root, so every server command runs as the ``postgres`` OS user
(``runuser``) and the data directories belong to it. :func:`replica_pair` stops both servers
(``pg_ctl stop -m immediate``) and removes the directories even when the setup or a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

PG_BIN = Path(os.environ.get("AGENTLEDGER_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"

_PRIMARY_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
wal_level = replica
max_wal_senders = 4
hot_standby = on
fsync = off
synchronous_commit = on
full_page_writes = off
shared_buffers = 16MB
max_connections = 40
wal_receiver_status_interval = 1s
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_postgres(*command: str | Path) -> list[str]:
    arguments = [str(part) for part in command]
    if os.geteuid() == pwd.getpwnam(OS_USER).pw_uid:
        return arguments
    return ["runuser", "-u", OS_USER, "--", *arguments]


def _run(*command: str | Path) -> None:
    done = subprocess.run(_as_postgres(*command), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, command))} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )


@dataclass
class ReplicaPair:
    """A running primary and its streaming hot standby, both on 127.0.0.1."""

    root: Path
    primary_port: int
    replica_port: int

    @property
    def primary_dir(self) -> Path:
        return self.root / "primary"

    @property
    def replica_dir(self) -> Path:
        return self.root / "replica"

    def url(self, port: int, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    @property
    def primary_url(self) -> str:
        return self.url(self.primary_port)

    @property
    def replica_url(self) -> str:
        return self.url(self.replica_port)

    def start(self, data: Path) -> None:
        _run(PG_BIN / "pg_ctl", "-D", data, "-l", data / "server.log", "-w", "-t", "60", "start")

    def stop(self, data: Path) -> None:
        if (data / "postmaster.pid").exists():
            _run(PG_BIN / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")

    def stop_replica(self) -> None:
        self.stop(self.replica_dir)

    def start_replica(self) -> None:
        self.start(self.replica_dir)

    def replica_running(self) -> bool:
        return (self.replica_dir / "postmaster.pid").exists()

    async def set_apply_delay(self, delay: str) -> None:
        """Hold the replica's replay of each commit back by ``delay`` (``'0'``: none)."""
        connection = await asyncpg.connect(self.replica_url)
        try:
            await connection.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'")
            await connection.execute("SELECT pg_reload_conf()")
            # The reload is asynchronous: wait until this backend sees the new value.
            for _ in range(100):
                if await connection.fetchval("SHOW recovery_min_apply_delay") == delay:
                    return
                await connection.execute("SELECT pg_reload_conf()")
                await asyncio.sleep(0.02)
        finally:
            await connection.close()
        raise RuntimeError(f"the replica did not take recovery_min_apply_delay = {delay}")

    async def wait_until_streaming(self, within: float = 30.0) -> None:
        """Wait until the replica accepts connections and its WAL receiver streams."""
        deadline = time.monotonic() + within
        last: BaseException | None = None
        while time.monotonic() < deadline:
            try:
                connection = await asyncpg.connect(self.replica_url)
                try:
                    status = await connection.fetchval("SELECT status FROM pg_stat_wal_receiver")
                finally:
                    await connection.close()
                if status == "streaming":
                    return
            except (OSError, asyncpg.PostgresError) as error:
                last = error
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the replica did not start streaming within {within}s ({last!r})")


@contextmanager
def replica_pair() -> Iterator[ReplicaPair]:
    """A fresh primary + streaming replica pair, stopped and removed afterwards, whatever
    happens in between."""
    root = Path(tempfile.mkdtemp(prefix="agentledger-replica-"))
    owner = pwd.getpwnam(OS_USER)
    os.chown(root, owner.pw_uid, owner.pw_gid)
    root.chmod(0o700)
    pair = ReplicaPair(root, _free_port(), _free_port())
    try:
        _run(
            PG_BIN / "initdb",
            "-D",
            pair.primary_dir,
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        with (pair.primary_dir / "postgresql.conf").open("a") as conf:
            conf.write(_PRIMARY_SETTINGS.format(port=pair.primary_port, sockets=root))
        pair.start(pair.primary_dir)
        _run(
            PG_BIN / "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(pair.primary_port),
            "-U",
            "postgres",
            "-D",
            pair.replica_dir,
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        )
        with (pair.replica_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {pair.replica_port}\n")
        pair.start(pair.replica_dir)
        yield pair
    finally:
        for data in (pair.replica_dir, pair.primary_dir):
            # Stop what runs; a failed stop must not keep the other server or the files.
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                pair.stop(data)
        shutil.rmtree(root, ignore_errors=True)
