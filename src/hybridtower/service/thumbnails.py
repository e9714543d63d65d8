"""Lazily generated, disk-cached JPEG thumbnails (the middle frame of a video, PyAV + Pillow).

A thumbnail's file name is a hash of the video's real path, inode, size and modification time, so a
changed file gets a fresh thumbnail and two services sharing a cache folder never collide. Files are
written atomically and answered from memory (a cache file removed meanwhile cannot fail the answer); a
per-key lock stops concurrent requests from decoding the same video twice. Failures are remembered for a
short time only (``failure_ttl_s``), never as results: a video that becomes decodable recovers.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import threading
import time
from collections import OrderedDict
from pathlib import Path

from ..core.display import printable
from ..core.errors import HybridTowerError
from ..core.io import atomic_write_bytes

log = logging.getLogger("hybridtower.service")

DEFAULT_THUMBNAIL_SIZE = 256  # longer side, pixels


class ThumbnailError(HybridTowerError):
    """A thumbnail could not be made (the video cannot be decoded)."""


def middle_frame_jpeg(path: str | Path, size: int = DEFAULT_THUMBNAIL_SIZE, quality: int = 85, *,
                      label: str | None = None) -> bytes:
    """Decode the middle frame of ``path`` and return it as JPEG bytes whose longer side is ``size``.

    A failure raises :class:`ThumbnailError` naming the video by ``label`` (default: the file name) with
    the decoder's reason cut before any detail that could hold a path; the full reason is logged.
    """
    from PIL import Image

    from ..data import read_frames
    from ..data.video.decode import VideoDecodeError

    label = label or printable(Path(path).name)
    try:
        frames = read_frames(path, num_frames=1, mode="uniform")
    except VideoDecodeError as exc:
        log.info("no thumbnail for %s: %s", label, printable(exc))
        reason = str(getattr(exc, "reason", "") or "").split(":")[0].strip() or "it cannot be decoded"
        raise ThumbnailError(f"no thumbnail for {label}: {reason}") from None
    except (OSError, ValueError, RuntimeError) as exc:  # defensive: decoders raise many types
        log.info("no thumbnail for %s: %s", label, printable(exc))
        raise ThumbnailError(f"no thumbnail for {label}: it cannot be decoded ({type(exc).__name__})") from None
    img = Image.fromarray(frames[0])
    w, h = img.size
    scale = size / max(w, h)
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class ThumbnailCache:
    """``get(video) -> bytes`` of a JPEG under ``cache_dir``, generated on first use.

    ``video`` is a checked :class:`~hybridtower.service.files.OpenedVideo` (decoded through its descriptor).
    A failure is remembered for ``failure_ttl_s`` seconds only (so a burst of requests for an undecodable
    video decodes it once, and a video that becomes decodable again, e.g. restored from a backup with
    the same size and time, gets its thumbnail without a restart).
    """

    def __init__(self, cache_dir: str | Path, size: int = DEFAULT_THUMBNAIL_SIZE, *, failure_ttl_s: float = 30.0,
                 clock=time.monotonic, max_failures: int = 10000):
        self.cache_dir = Path(cache_dir)
        self.size = int(size)
        self.failure_ttl_s = float(failure_ttl_s)
        self._clock = clock
        self._max_failures = int(max_failures)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._failed: OrderedDict[str, tuple[str, float]] = OrderedDict()  # key -> (message, expires at)
        self.generated = 0  # thumbnails made by this object (tests and logs)
        self.attempts = 0  # decodes tried (tests)

    def key(self, video) -> str:
        st = video.st
        ident = f"{video.real_path}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{self.size}"
        return hashlib.sha1(ident.encode("utf-8", "surrogateescape")).hexdigest()

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(key)
            if lock is None:
                if len(self._locks) > 4096:  # drop idle locks (bounded memory)
                    for k in [k for k, v in self._locks.items() if not v.locked()]:
                        del self._locks[k]
                lock = self._locks[key] = threading.Lock()
            return lock

    def _recent_failure(self, key: str) -> str | None:
        with self._locks_guard:
            hit = self._failed.get(key)
            if hit is None:
                return None
            if self._clock() >= hit[1]:
                del self._failed[key]
                return None
            return hit[0]

    def _remember_failure(self, key: str, message: str) -> None:
        if self.failure_ttl_s <= 0:
            return
        with self._locks_guard:
            self._failed[key] = (message, self._clock() + self.failure_ttl_s)
            self._failed.move_to_end(key)
            while len(self._failed) > self._max_failures:
                self._failed.popitem(last=False)

    def get(self, video) -> bytes:
        """JPEG bytes of ``video``'s thumbnail; raises :class:`ThumbnailError` (message without server paths)."""
        key = self.key(video)
        out = self.cache_dir / key[:2] / f"{key}.jpg"
        data = _read_or_none(out)
        if data is not None:
            return data
        failed = self._recent_failure(key)
        if failed is not None:
            raise ThumbnailError(failed)
        with self._lock(key):
            data = _read_or_none(out)
            if data is not None:
                return data
            self.attempts += 1
            try:
                data = middle_frame_jpeg(video.decode_path, self.size, label=video.label)
            except ThumbnailError as exc:
                self._remember_failure(key, str(exc))
                raise
            try:
                atomic_write_bytes(out, data)
            except OSError as exc:  # a full or read-only cache folder: still answer
                log.warning("cannot cache a thumbnail of %s: %s", video.label, exc)
            self.generated += 1
        return data


MAX_THUMBNAIL_BYTES = 8 << 20  # a cache file larger than this is no thumbnail of ours


def _read_or_none(path: Path) -> bytes | None:
    """The cached JPEG at ``path``, or None when there is none. Only a regular file that is itself there
    (``O_NOFOLLOW``: a link planted in the cache folder could point at any file the server can read) and
    holds a whole JPEG (start and end markers: not half-written, not damaged) is answered; anything else
    found there is removed, so the thumbnail is made again."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError:  # ELOOP: a link; EACCES, ...
        _discard(path)
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_THUMBNAIL_BYTES:
            data = None
        else:
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = fh.read(MAX_THUMBNAIL_BYTES + 1)
    except OSError:
        data = None
    finally:
        os.close(fd)
    if data is None or len(data) < 4 or not data.startswith(b"\xff\xd8\xff") or not data.endswith(b"\xff\xd9"):
        log.warning("removing a cached thumbnail that is not a whole JPEG file (%s)", path.name)
        _discard(path)
        return None
    return data


def _discard(path: Path) -> None:
    try:
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
            os.unlink(path)
    except OSError:
        pass


def default_cache_dir(index_dir: str | Path) -> Path:
    """``INDEX_DIR/thumbnails`` when the index folder is writable, else a per-index user cache folder."""
    index_dir = Path(index_dir)
    if os.access(index_dir, os.W_OK):
        return index_dir / "thumbnails"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(str(index_dir.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return base / "hybridtower" / "thumbnails" / digest
