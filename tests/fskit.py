"""Files that cannot be written, for tests of a storage failure: an immutable flag (refused even
to root and through files already open) and a file size limit for a child process."""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import signal
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

#: linux/fs.h: FS_IOC_GETFLAGS, FS_IOC_SETFLAGS and FS_IMMUTABLE_FL
_GETFLAGS, _SETFLAGS, _IMMUTABLE = 0x80086601, 0x40086602, 0x10


def file_size_limit(limit_bytes: int) -> Callable[[], None]:
    """A ``preexec_fn``: in the child, a write past ``limit_bytes`` fails with EFBIG (SIGXFSZ,
    which would kill it instead, is ignored)."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))
    return limit


def set_immutable(path: Path, on: bool) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = struct.unpack("l", fcntl.ioctl(fd, _GETFLAGS, b"\0" * 8))[0]
        flags = flags | _IMMUTABLE if on else flags & ~_IMMUTABLE
        fcntl.ioctl(fd, _SETFLAGS, struct.pack("l", flags))
    finally:
        os.close(fd)


def immutable_supported(folder: Path) -> bool:
    """Whether this user can set the immutable flag on this file system (root on ext4 can)."""
    probe = folder / ".immutable-probe"
    probe.write_bytes(b"x")
    try:
        set_immutable(probe, True)
        set_immutable(probe, False)
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


@contextlib.contextmanager
def immutable_files(paths: Sequence[Path]) -> Iterator[Callable[[], None]]:
    """Yields a function that makes ``paths`` immutable; the flags are cleared on leaving."""
    def make_read_only() -> None:
        for path in paths:
            set_immutable(path, True)
    try:
        yield make_read_only
    finally:
        for path in paths:
            if path.exists():
                set_immutable(path, False)
