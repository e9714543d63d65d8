"""Opening an indexed video for serving: a regular file, inside an indexed root, unchanged since indexing.

:func:`open_indexed` opens the file ONCE (``O_NONBLOCK``, so a FIFO swapped in cannot block the server)
and checks the open descriptor, not the name: ``fstat`` must show a regular file with the size and
modification time the entries table recorded, and the file's real path (links resolved) must lie inside
the real path of one of the roots the manifest records, and be the very inode that was opened. Anything
else raises :class:`NotServable` (HTTP 404), whose message names the video by id and relative name only.

:class:`DescriptorFileResponse` serves that descriptor (Starlette's ``FileResponse`` with ranges and
HEAD, reading from the checked descriptor instead of re-opening the path), so a swap of the name after
the check cannot change what is sent.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from starlette.responses import FileResponse

from ..core.display import printable
from ..core.io import NotRegularFileError, open_regular

_PROC_FD = Path("/proc/self/fd")


class NotServable(Exception):
    """The indexed file may not be served; ``str(exc)`` is safe to show (no server path)."""


def real_roots(manifest: dict | None) -> tuple[str, ...]:
    """Real paths (links resolved) of the folders/files the manifest says were indexed."""
    roots = (manifest or {}).get("roots") or []
    out = []
    for r in roots:
        if isinstance(r, str) and r:
            out.append(os.path.realpath(r))
    return tuple(dict.fromkeys(out))


def inside(real: str, roots: tuple[str, ...]) -> bool:
    """``real`` is one of ``roots`` or lies below one (all real, absolute paths)."""
    for root in roots:
        if real == root:
            return True
        prefix = root if root.endswith(os.sep) else root + os.sep
        if real.startswith(prefix):
            return True
    return False


@dataclass
class OpenedVideo:
    """An open, checked descriptor of an indexed file (close it, or hand it to a response that will)."""

    fd: int
    st: os.stat_result
    real_path: str  # server side only: never put into an answer
    label: str  # "video 7 (clips/a.mp4)", safe to show
    name: str  # base name of the indexed path, valid Unicode (Content-Disposition, media type)

    @property
    def decode_path(self) -> str:
        """A path that opens the checked inode itself (``/proc/self/fd/N`` on Linux), for decoders that
        want a name; elsewhere the checked real path (a residual swap race, see docs/service.md)."""
        proc = _PROC_FD / str(self.fd)
        return str(proc) if _PROC_FD.is_dir() else self.real_path

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            finally:
                self.fd = -1


def header_name(name: str) -> str:
    """``name`` as valid Unicode for a response header (Content-Disposition): bytes of a file name that
    are not UTF-8 (surrogate escapes) become U+FFFD, which Starlette can percent-encode (a surrogate made
    it raise UnicodeEncodeError: an HTTP 500 for every file with such a name)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "replace")


def video_label(id: int, video_id: str | None) -> str:
    return f"video {int(id)}" + (f" ({printable(video_id)})" if video_id else "")


def open_indexed(id: int, entry, roots: tuple[str, ...]) -> OpenedVideo:
    """Open the file of ``entry`` (``path``, ``video_id``, ``size``, ``mtime_ns``) if it may be served."""
    label = video_label(id, getattr(entry, "video_id", None))
    path = getattr(entry, "path", None)
    if not path:
        raise NotServable(f"{label} has no file in this index")
    if not roots:
        raise NotServable(f"{label}: the index records no indexed folders, so no file can be served")
    try:  # non-blocking open, refused unless a regular file (checked again on the opened descriptor)
        fd, st = open_regular(path)
    except (FileNotFoundError, NotADirectoryError):
        raise NotServable(f"{label} is in the index but its file is gone") from None
    except NotRegularFileError:
        raise NotServable(f"{label} is in the index but its file is no longer a regular file") from None
    except OSError:
        raise NotServable(f"{label} is in the index but its file cannot be read") from None
    try:
        if st.st_nlink == 0:
            raise NotServable(f"{label} is in the index but its file is gone")
        if int(st.st_size) != int(entry.size) or int(st.st_mtime_ns) != int(entry.mtime_ns):
            raise NotServable(f"{label} changed since it was indexed (size or modification time differ); "
                              f"re-run `hybridtower index` to serve it")
        real = os.path.realpath(path)
        if not inside(real, roots):
            raise NotServable(f"{label} is not inside the indexed folders (a link points elsewhere)")
        try:
            st_real = os.stat(real)
        except OSError:
            raise NotServable(f"{label} is in the index but its file is gone") from None
        if (st_real.st_dev, st_real.st_ino) != (st.st_dev, st.st_ino):  # the name moved under us
            raise NotServable(f"{label} is being replaced; try again")
        return OpenedVideo(fd, st, real, label, header_name(os.path.basename(path)))
    except BaseException:
        os.close(fd)
        raise


class DescriptorFileResponse(FileResponse):
    """``FileResponse`` (ranges, HEAD, ETag) that reads the checked descriptor of an :class:`OpenedVideo`
    and closes it when the answer is sent (or dropped)."""

    def __init__(self, video: OpenedVideo, **kw):
        self._video = video
        if isinstance(kw.get("filename"), str):
            kw["filename"] = header_name(kw["filename"])
        super().__init__(video.real_path, stat_result=video.st, **kw)

    @asynccontextmanager
    async def _open_file(self):  # Starlette's hook for reading the body
        import anyio

        fh = os.fdopen(os.dup(self._video.fd), "rb", closefd=True)
        fh.seek(0)
        afile = anyio.wrap_file(fh)
        try:
            yield afile
        finally:
            with anyio.CancelScope(shield=True):
                await afile.aclose()

    async def __call__(self, scope, receive, send) -> None:
        ext = scope.get("extensions") or {}
        if "http.response.pathsend" in ext:  # never let the server re-open the path
            scope = dict(scope, extensions={k: v for k, v in ext.items() if k != "http.response.pathsend"})
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._video.close()

    def __del__(self):
        video = getattr(self, "_video", None)
        if video is not None:
            video.close()
