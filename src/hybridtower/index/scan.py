"""Find the video files under the PATH arguments and fingerprint them (size + mtime + content hash).

Only regular files are taken (a symlink to one is fine): a FIFO, a device, a socket or a link to a
folder named like a video is reported with the reason and skipped, never opened. Every read is bounded
and never blocks: :func:`file_fingerprint` opens with ``O_NONBLOCK``, checks the opened descriptor is a
regular file, reads exactly the size it stat'ed, and reports a file whose size or time changed meanwhile.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..core.io import NotRegularFileError, file_type_name, open_regular

__all__ = [
    "INDEX_EXTENSIONS",
    "FileChangedError",
    "FoundFile",
    "NotRegularFileError",
    "collect_files",
    "file_fingerprint",
    "file_sha256",
    "normalise_extensions",
]

#: Extensions ``hybridtower index`` picks up when walking folders (lower-cased comparison).
INDEX_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg")


class FileChangedError(OSError):
    """The file's size or modification time changed while it was being read (still being written?)."""

    def __init__(self):
        super().__init__(errno.EAGAIN, "the file changed while it was read (still being written?); "
                                       "it is picked up by the next run once it stops changing")

    def __reduce__(self):  # picklable across worker processes
        return (type(self), ())


@dataclass(frozen=True)
class FoundFile:
    path: str  # absolute, normalised (symlinks in the path kept: the user's view of the file)
    video_id: str  # relative to the PATH argument it was found under; the file name for a file argument
    size: int
    mtime_ns: int


def normalise_extensions(exts) -> tuple[str, ...]:
    out = []
    for e in exts:
        e = e.strip().lower()
        if e:
            out.append(e if e.startswith(".") else "." + e)
    return tuple(out)


def collect_files(paths, extensions=INDEX_EXTENSIONS, exclude: list[str | Path] = ()) -> tuple[list[FoundFile], list[dict]]:
    """Walk ``paths`` (files or folders, recursively, hidden entries skipped) for video files.

    Returns the regular files sorted by path (duplicates removed) and a list of problems
    ``{"path", "error"}`` for arguments that do not exist, entries that cannot be stat'ed, and entries
    with a video extension that are not regular files (FIFOs, devices, sockets, links to folders; the
    ``error`` says which). A file named explicitly is taken whatever its extension. Folders in ``exclude``
    (e.g. the index itself) are not entered; links to folders are never followed. No ``error`` text
    holds a path.
    """
    exts = normalise_extensions(extensions)
    excluded = {os.path.abspath(p) for p in exclude}
    found: dict[str, FoundFile] = {}
    problems: list[dict] = []

    def add(path: str, video_id: str) -> None:
        try:
            st = os.stat(path)  # follows symlinks: a link to a regular file is a regular file
        except OSError as exc:
            problems.append({"path": path, "error": f"cannot stat: {exc.strerror or type(exc).__name__}"})
            return
        if not stat.S_ISREG(st.st_mode):
            problems.append({"path": path, "error": f"skipped: not a regular file: it is {file_type_name(st.st_mode)}"})
            return
        found.setdefault(path, FoundFile(path, video_id, int(st.st_size), int(st.st_mtime_ns)))

    def walk_error(exc: OSError) -> None:
        problems.append({"path": exc.filename, "error": f"cannot list folder: {exc.strerror}"})

    for arg in paths:
        root = os.path.abspath(os.fspath(arg))
        if os.path.isdir(root):
            pass
        elif os.path.lexists(root):
            add(root, os.path.basename(root))  # a file (or FIFO, device, broken link: reported) named explicitly
            continue
        else:
            problems.append({"path": root, "error": "no such file or folder"})
            continue
        for dirpath, dirnames, filenames in os.walk(root, onerror=walk_error):
            keep = []
            for d in sorted(dirnames):
                full = os.path.join(dirpath, d)
                if d.startswith(".") or full in excluded:
                    continue
                if os.path.islink(full):  # os.walk does not follow it; say so when it looks like a video
                    if d.lower().endswith(exts):
                        problems.append({"path": full, "error": "skipped: not a regular file: it is a link to a folder"})
                    continue
                keep.append(d)
            dirnames[:] = keep
            for name in sorted(filenames):
                if name.startswith(".") or not name.lower().endswith(exts):
                    continue
                full = os.path.join(dirpath, name)
                add(full, Path(os.path.relpath(full, root)).as_posix())
    return [found[p] for p in sorted(found)], problems


def file_fingerprint(path: str, chunk: int = 1 << 20) -> tuple[int, int, str]:
    """``(size, mtime_ns, sha256 hex)`` of one regular file, all three from the same open descriptor.

    Raises ``OSError`` (its ``strerror`` is the reason, with no path): ``NotRegularFileError`` for a FIFO,
    device, socket or folder (refused without blocking), ``FileChangedError`` when the file grows, shrinks
    or is modified while it is read. At most the stat'ed size (plus one byte, to detect growth) is read.
    """
    fd, st = open_regular(path)
    with os.fdopen(fd, "rb", buffering=0) as fh:
        h = hashlib.sha256()
        left = st.st_size
        buf = bytearray(min(chunk, max(left, 1)))
        view = memoryview(buf)
        while left > 0:
            n = fh.readinto(view[: min(len(buf), left)])
            if not n:
                break  # shrank
            h.update(view[:n])
            left -= n
        grew = bool(fh.read(1))
        after = os.fstat(fd)
    if left or grew or (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        raise FileChangedError()
    return int(st.st_size), int(st.st_mtime_ns), h.hexdigest()


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a regular file's content; see :func:`file_fingerprint` for what is refused."""
    return file_fingerprint(path, chunk)[2]
