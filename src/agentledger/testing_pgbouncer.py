"""A throwaway PgBouncer in transaction mode, for tests and benchmarks.

:func:`running_pgbouncer` writes a ``pgbouncer.ini`` and a user list into a temporary folder,
starts the ``pgbouncer`` program (Debian package ``pgbouncer``) on a free loopback port in
front of a PostgreSQL server, waits until it accepts connections, and always stops it when the
block ends, whether it ended normally or by an exception. Every database of the server is
reachable through it under its own name (``* = host=... port=...``), with
``pool_mode = transaction`` and a small ``default_pool_size``, so that clients really share
server connections: one client's consecutive transactions run on different server
connections, and several clients' transactions on the same one.

PgBouncer refuses to run as root; started by root, it runs as ``run_as`` (``postgres`` by
default), and its temporary folder (handed to that user) is made where that user can reach it:
in ``/tmp`` when ``TMPDIR`` is a private folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PgBouncer", "PgBouncerError", "pgbouncer_program", "running_pgbouncer"]


class PgBouncerError(RuntimeError):
    """PgBouncer is not installed, or did not start (its log is in the message)."""


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer: where it listens, and how many server connections it keeps per
    database and user."""

    host: str
    port: int
    pool_size: int
    log_file: Path

    def url(self, database: str, user: str = "postgres") -> str:
        """A ``postgresql://`` URL of ``database`` through this PgBouncer."""
        return f"postgresql://{user}@{self.host}:{self.port}/{database}"

    def log(self) -> str:
        """What PgBouncer has logged so far (and printed before its log file was open)."""
        found = []
        for path in (self.log_file.with_name("stderr.log"), self.log_file):
            with contextlib.suppress(OSError):
                found.append(path.read_text(encoding="utf-8", errors="replace"))
        return "".join(found)


def pgbouncer_program() -> str:
    """Where the ``pgbouncer`` program is (Debian installs it in /usr/sbin, often not on a
    user's PATH)."""
    program = shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(path)),
        None,
    )
    if program is None:
        raise PgBouncerError(
            "the pgbouncer program is not installed; install it (Debian: "
            "`apt-get install -y pgbouncer`, which `make test` does when it is missing)"
        )
    return program


def _reachable_temp() -> str:
    """The temporary folder, if every folder above it lets other users through (PgBouncer,
    started by root, runs as another user and must read its files); else ``/tmp``."""
    folder = Path(tempfile.gettempdir()).resolve()
    for part in (folder, *folder.parents):
        if not part.stat().st_mode & 0o001:
            return "/tmp"
    return str(folder)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at the moment (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _config(
    folder: Path,
    *,
    port: int,
    server_host: str,
    server_port: int,
    users: Sequence[str],
    pool_size: int,
    pool_mode: str,
) -> Path:
    (folder / "pgbouncer.log").unlink(missing_ok=True)
    user_list = folder / "userlist.txt"
    user_list.write_text("".join(f'"{user}" ""\n' for user in users), encoding="utf-8")
    ini = folder / "pgbouncer.ini"
    ini.write_text(
        "\n".join(
            [
                "[databases]",
                f"* = host={server_host} port={server_port}",
                "",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {user_list}",
                f"pool_mode = {pool_mode}",
                f"default_pool_size = {pool_size}",
                "min_pool_size = 0",
                "reserve_pool_size = 0",
                "max_client_conn = 1000",
                "max_db_connections = 0",
                # Nothing resets a server connection between clients: what a client leaves
                # behind is what the next one finds, which is what the tests look for.
                "server_reset_query =",
                "ignore_startup_parameters = extra_float_digits",
                f"logfile = {folder / 'pgbouncer.log'}",
                "pidfile =",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return ini


def _accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextlib.contextmanager
def running_pgbouncer(
    *,
    server_host: str = "127.0.0.1",
    server_port: int = 5432,
    users: Sequence[str] = ("postgres",),
    pool_size: int = 4,
    run_as: str = "postgres",
    start_timeout: float = 15.0,
    pool_mode: str = "transaction",
) -> Iterator[PgBouncer]:
    """Start PgBouncer (``pool_mode``: transaction by default; ``pool_size`` server
    connections per database and user) in front of ``server_host:server_port``; yield where
    it listens; stop it at the end.

    Clients log in as one of ``users`` without a password (``auth_type = trust``), and
    PgBouncer logs in to the server as that user too, so the server must let it in (trust
    on loopback)."""
    program = pgbouncer_program()
    as_root = os.geteuid() == 0
    folder = Path(
        tempfile.mkdtemp(
            prefix="agentledger-pgbouncer-", dir=_reachable_temp() if as_root else None
        )
    )
    try:
        for _attempt in range(3):  # the free port may be taken between the pick and the start
            port = free_port()
            ini = _config(
                folder,
                port=port,
                server_host=server_host,
                server_port=server_port,
                users=users,
                pool_mode=pool_mode,
                pool_size=pool_size,
            )
            command = [program, str(ini)]
            if as_root:
                shutil.chown(folder, user=run_as)
                for path in folder.iterdir():
                    shutil.chown(path, user=run_as)
                command = [program, "-u", run_as, str(ini)]
            bouncer = PgBouncer("127.0.0.1", port, pool_size, folder / "pgbouncer.log")
            with open(folder / "stderr.log", "wb") as stderr:  # before its log file opens
                process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
                )
            try:
                deadline = time.monotonic() + start_timeout
                while process.poll() is None and not _accepts(bouncer.host, port):
                    if time.monotonic() > deadline:
                        raise PgBouncerError(
                            f"PgBouncer did not accept connections within {start_timeout:g}s; "
                            f"its log:\n{bouncer.log()}"
                        )
                    time.sleep(0.05)
                if process.poll() is not None:
                    if "Address already in use" in bouncer.log():
                        continue
                    raise PgBouncerError(
                        f"PgBouncer exited with status {process.returncode}; its log:\n"
                        f"{bouncer.log()}"
                    )
                yield bouncer
                return
            finally:
                _stop(process)
        raise PgBouncerError("PgBouncer found no free port in three attempts")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
