"""Find the video files under the PATH arguments and fingerprint them (size + mtime + content hash)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

#: Extensions ``hybridtower index`` picks up when walking folders (lower-cased comparison).
INDEX_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg")


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

    Returns the files sorted by path (duplicates removed) and a list of problems ``{"path", "error"}``
    for arguments that do not exist or entries that cannot be stat'ed. A file named explicitly is taken
    whatever its extension. Folders in ``exclude`` (e.g. the index itself) are not entered.
    """
    exts = normalise_extensions(extensions)
    excluded = {os.path.abspath(p) for p in exclude}
    found: dict[str, FoundFile] = {}
    problems: list[dict] = []

    def add(path: str, video_id: str) -> None:
        try:
            st = os.stat(path)
        except OSError as exc:
            problems.append({"path": path, "error": f"cannot stat: {exc.strerror or exc}"})
            return
        found.setdefault(path, FoundFile(path, video_id, int(st.st_size), int(st.st_mtime_ns)))

    for arg in paths:
        root = os.path.abspath(os.fspath(arg))
        if os.path.isfile(root):
            add(root, os.path.basename(root))
            continue
        if not os.path.isdir(root):
            problems.append({"path": root, "error": "no such file or folder"})
            continue
        for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: problems.append({"path": e.filename, "error": f"cannot list folder: {e.strerror}"})):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and os.path.join(dirpath, d) not in excluded)
            for name in sorted(filenames):
                if name.startswith(".") or not name.lower().endswith(exts):
                    continue
                full = os.path.join(dirpath, name)
                add(full, Path(os.path.relpath(full, root)).as_posix())
    return [found[p] for p in sorted(found)], problems


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()
