"""Atomic file writes: write to a temporary file in the same folder, fsync, rename, fsync the folder.

Every file written this way ends with the mode a plain ``open(path, "w")`` would give it
(``0o666 & ~umask``), whatever the writer did to the temporary file: ``tempfile.mkstemp`` makes 0600
files, and some writers (safetensors) replace the temporary file with their own 0600 file.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` is process-wide:
    setting it even briefly would give files other threads create meanwhile the wrong mode)."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~_umask()


class NotRegularFileError(OSError):
    """The path is a FIFO, a device, a socket or a folder where a regular file was expected."""

    def __init__(self, what: str):
        super().__init__(errno.EINVAL, f"not a regular file: it is {what}")
        self.kind = what

    def __reduce__(self):
        return (type(self), (self.kind,))


def file_type_name(mode: int) -> str:
    """A reader's name for the file type in ``st_mode``: "a FIFO (named pipe)", "a character device", ..."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def open_regular(path: str | os.PathLike) -> tuple[int, os.stat_result]:
    """Open a regular file (symlinks followed) for reading; return ``(fd, fstat of fd)``. Never blocks.

    ``path`` is stat'ed first, so a FIFO, a device, a socket or a folder is refused (``NotRegularFileError``,
    an ``OSError``) without being opened at all; the open itself uses ``O_NONBLOCK`` and ``O_NOCTTY`` and the
    opened descriptor is checked again, so a FIFO swapped in between can neither block nor be read. The
    caller closes ``fd``. Error messages carry no path (``strerror`` is the reason).
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(file_type_name(st.st_mode))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(file_type_name(st.st_mode))
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def fsync_dir(path: str | Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``path`` atomically, on error it is removed.

    The file gets the umask's usual mode (see the module doc) after the writer has finished with it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            # the mode is set on the finished file, not on the mkstemp one: the writer may have
            # replaced that (safetensors writes its own 0600 file over the path it is given)
            os.fchmod(fh.fileno(), file_mode())
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
