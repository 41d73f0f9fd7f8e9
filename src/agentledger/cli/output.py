"""Everything the command line writes: result lines, ``--json`` documents, progress, files.

One helper, so that every command gets the same guarantees:

* text that came from the database (message content, titles, names) reaches the terminal with
  its control and bidi-formatting characters escaped, never raw (an ANSI escape in a message
  cannot rewrite the operator's screen);
* ``--json`` prints one JSON document, with the same characters ``\\u``-escaped;
* progress shows only on a terminal, and is erased before the summary line;
* files are written atomically (a temporary file in the same folder, then a rename), never
  over an existing file without ``--force``; ``-`` means stdout (and stdin for reading).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from agentledger.domain.display import json_text, terminal_text
from agentledger.errors import LedgerError

EXIT_OK = 0
#: agentledger refused or failed the operation (or ``db current --check``: not at head).
EXIT_FAILED = 1
#: The command line was wrong (argparse's convention; :class:`UsageError` for what only the
#: command can tell).
EXIT_USAGE = 2
#: Ctrl-C, as a shell reports SIGINT.
EXIT_INTERRUPTED = 130
#: The reader of our output went away (``agentledger ... | head``), as SIGPIPE reports it.
EXIT_BROKEN_PIPE = 141


class UsageError(LedgerError):
    """A command line that cannot mean anything (options that exclude each other, an ID that
    is not a UUID where only a UUID fits): exit 2, as argparse's own refusals."""


#: The path that means standard output (``-o -``) or standard input (``sessions import -``).
STANDARD_STREAM = "-"


class Output:
    """Where a command writes its results: ``stream`` (stdout), as text lines or as one JSON
    document (``json_mode``)."""

    def __init__(self, stream: TextIO, *, json_mode: bool = False) -> None:
        self.stream = stream
        self.json_mode = json_mode

    @property
    def is_terminal(self) -> bool:
        return self.stream.isatty()

    def line(self, text: str = "") -> None:
        """One line of human-readable output (control characters escaped)."""
        print(terminal_text(text), file=self.stream)

    def lines(self, text: str) -> None:
        """Multi-line human-readable output (newlines and tabs kept, other controls escaped).

        Written line by line and flushed: one huge write to a pipe whose reader went away can
        end short without an error, while a later write reports the broken pipe."""
        for line in terminal_text(text, keep_lines=True).splitlines(keepends=True):
            self.stream.write(line)
        self.stream.flush()

    def json(self, payload: Any) -> None:
        """One JSON document."""
        print(json_text(json.dumps(payload, ensure_ascii=False)), file=self.stream)

    def result(self, text: str, payload: Any) -> None:
        """The command's result: ``payload`` as JSON with ``--json``, else ``text``."""
        if self.json_mode:
            self.json(payload)
        else:
            self.line(text)

    def progress(self, total: int | None, what: str) -> Progress:
        return Progress(self.stream, total, what)


class Progress:
    """A one-line progress indicator, shown only on a terminal and erased by :meth:`close`.

    With ``total`` it is a bar (``done`` of ``total``); without, a running description."""

    def __init__(self, stream: TextIO, total: int | None, what: str) -> None:
        self._stream = stream
        self._total = total
        self._what = what
        self._shown = stream.isatty() and (total is None or total > 1)
        self._drawn = False

    def update(self, done: int | str) -> None:
        if not self._shown:
            return
        if isinstance(done, str):
            text = terminal_text(done)
        elif self._total is None:
            text = f"{done} {self._what}"
        else:
            width = 30
            filled = width * done // max(self._total, 1)
            text = f"[{'#' * filled}{'-' * (width - filled)}] {done}/{self._total} {self._what}"
        print(f"\r\033[K{text}", end="", file=self._stream, flush=True)
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            print("\r\033[K", end="", file=self._stream, flush=True)
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def error_line(message: str) -> str:
    """The one stderr line of a failed command."""
    return f"agentledger: error: {terminal_text(message)}"


def warning_line(message: str) -> str:
    return f"agentledger: warning: {terminal_text(message)}"


# -- files ----------------------------------------------------------------------------------------


def refuse_existing(paths: Iterable[Path], *, force: bool) -> None:
    """Refuse, before anything is written, to replace files that exist (unless ``force``)."""
    if force:
        return
    existing = [str(path) for path in paths if path.exists()]
    if existing:
        shown = ", ".join(repr(name) for name in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise LedgerError(
            f"{shown}{more} already exist(s); pass --force to replace, or choose another path"
        )


def write_file(path: Path, write: Callable[[TextIO], None], *, force: bool) -> None:
    """Write a file atomically: ``write`` fills a temporary file next to ``path``, which then
    takes its name, so ``path`` is never left partial (a failure leaves it as it was). Without
    ``force`` an existing ``path`` is refused, even one that appeared meanwhile. A symbolic
    link is written through (its target is replaced); a path that is not a regular file (a
    FIFO, a device, a folder) is refused, as renaming over it would replace it."""
    path = _regular_target(path)
    folder = path.parent
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise LedgerError(
            f"cannot write {str(path)!r} ({error.strerror or error}); check the path"
        ) from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            os.fchmod(stream.fileno(), _mode_for(path))
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        if force:
            os.replace(temporary, path)
        else:
            _place_without_replacing(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _regular_target(path: Path) -> Path:
    """Where writing ``path`` lands: a symbolic link's target; refused when what is there is
    not a regular file."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if target.exists() and not target.is_file():
        raise LedgerError(
            f"{str(path)!r} is not a regular file (a folder, FIFO or device); write to a file "
            "path, or use -o - for standard output"
        )
    return target


def _mode_for(path: Path) -> int:
    """The permissions the file gets: those of the file it replaces, else what ``open``
    would give a new file under the umask (the temporary file starts private, 0600)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _place_without_replacing(temporary: str, path: Path) -> None:
    try:
        os.link(temporary, path)  # fails, atomically, when path exists
    except FileExistsError:
        raise LedgerError(
            f"{str(path)!r} already exists; pass --force to replace it, or choose another path"
        ) from None
    except OSError:  # a file system without hard links: check, then rename
        if path.exists():
            raise LedgerError(f"{str(path)!r} already exists; pass --force to replace it") from None
        os.replace(temporary, path)
        return
    os.unlink(temporary)


def make_folder(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LedgerError(
            f"cannot create the folder {str(folder)!r} ({error.strerror or error})"
        ) from None
    return folder


@contextlib.contextmanager
def reading(name: str) -> Iterator[TextIO]:
    """A text stream over the file ``name``, or standard input for ``-``."""
    if name == STANDARD_STREAM:
        yield sys.stdin
        return
    try:
        stream = Path(name).open("r", encoding="utf-8", newline="\n")  # noqa: SIM115
    except OSError as error:
        raise LedgerError(
            f"cannot read {name!r} ({error.strerror or error}); check the path"
        ) from None
    with stream:
        yield stream
