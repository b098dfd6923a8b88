"""One runner per checkpoint: an exclusive lock on a file beside it, released by the OS on exit.

``flock`` is dropped by the kernel when the holder dies, even by ``kill -9``, so a crash never
leaves a stale lock behind; the file's text only says who holds it. A holder that exits removes
the file while it still holds the lock. A runner that opened the file just before that holds,
once its own ``flock`` succeeds, a lock on a file no longer there: it sees that (the path names
another file, or none) and opens the path again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from bulkdm.errors import CheckpointLockedError
from bulkdm.timestamps import local_time

__all__ = ["RunLock", "maybe_running"]

#: opens of a lock file removed under us before we give up (each needs a holder to exit)
_MAX_TRIES: Final = 100


class RunLock:
    """``with RunLock(checkpoint_path):`` holds ``CHECKPOINT.lock`` or raises
    :class:`CheckpointLockedError` naming the holder; the file is removed on leaving."""

    def __init__(self, checkpoint: Path) -> None:
        self.path = checkpoint.with_name(checkpoint.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> Self:
        for _ in range(_MAX_TRIES):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if self._acquire(fd):
                break
        else:
            raise CheckpointLockedError(self.path.with_suffix(""), "its lock file keeps changing")
        started = local_time(time.time())
        text = f"pid {os.getpid()} on {socket.gethostname()} since {started}".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)
        self._fd = fd
        return self

    def _acquire(self, fd: int) -> bool:
        """Lock the open lock file ``fd``: True when it is still the file at the path (else
        ``fd`` is closed and the path must be opened again)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise CheckpointLockedError(self.path.with_suffix(""), holder) from None
        opened = os.fstat(fd)
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        if current is not None and (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
            return True
        os.close(fd)  # the holder removed it before it let go: a lock on nothing
        return False

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            # removed while still locked: whoever opened it meanwhile finds it gone and retries.
            # A file that cannot be removed is harmless: its text is read only while it is locked
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self._fd)  # releases the lock
            self._fd = None


def maybe_running(checkpoint: Path) -> bool:
    """Whether a process may hold ``checkpoint``'s run lock now, without taking it (a reader
    that took it, even for a moment, could make a run starting then fail as locked): False
    when no lock file is there, or its holder on this host is gone (``kill -9`` leaves the
    file); True when it lives, or runs on another host."""
    path = checkpoint.with_name(checkpoint.name + ".lock")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    match = _HOLDER.match(text)
    if match is None or match["host"] != socket.gethostname():
        return True
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it lives, as another user
        return True
    return True


#: what a holder writes in the lock file (see RunLock.__enter__)
_HOLDER: Final = re.compile(r"pid (?P<pid>\d+) on (?P<host>\S+) since ")
