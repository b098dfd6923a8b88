"""One runner per checkpoint: an exclusive lock on a file beside it, released by the OS on exit.

``flock`` is dropped by the kernel when the holder dies, even by ``kill -9``, so a crash never
leaves a stale lock behind; the file's text only says who holds it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from bulkdm.errors import CheckpointLockedError

__all__ = ["RunLock"]


class RunLock:
    """``with RunLock(checkpoint_path):`` holds ``CHECKPOINT.lock`` or raises
    :class:`CheckpointLockedError` naming the holder."""

    def __init__(self, checkpoint: Path) -> None:
        self.path = checkpoint.with_name(checkpoint.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> Self:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise CheckpointLockedError(self.path.with_suffix(""), holder) from None
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        text = f"pid {os.getpid()} on {socket.gethostname()} since {started}".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
