"""Lazily generated, disk-cached JPEG thumbnails (the middle frame of a video, PyAV + Pillow).

A thumbnail's file name is a hash of the video's resolved path, size and modification time, so a changed
file gets a fresh thumbnail and two services sharing a cache folder never collide. Files are written
atomically; a per-key lock stops concurrent requests from decoding the same video twice. Failures are
remembered (in memory, for the same file version) so an undecodable video is not decoded on every request.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

from ..core.errors import HybridTowerError
from ..core.io import atomic_write_bytes

DEFAULT_THUMBNAIL_SIZE = 256  # longer side, pixels


class ThumbnailError(HybridTowerError):
    """A thumbnail could not be made (the video cannot be decoded)."""


def middle_frame_jpeg(path: str | Path, size: int = DEFAULT_THUMBNAIL_SIZE, quality: int = 85) -> bytes:
    """Decode the middle frame of ``path`` and return it as JPEG bytes whose longer side is ``size``."""
    from PIL import Image

    from ..data import read_frames
    from ..data.video.decode import VideoDecodeError

    try:
        frames = read_frames(path, num_frames=1, mode="uniform")
    except VideoDecodeError as exc:
        raise ThumbnailError(f"no thumbnail for {Path(path).name}: {exc}") from None
    except (OSError, ValueError, RuntimeError) as exc:  # defensive: decoders raise many types
        raise ThumbnailError(f"no thumbnail for {Path(path).name}: {exc}") from None
    img = Image.fromarray(frames[0])
    w, h = img.size
    scale = size / max(w, h)
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class ThumbnailCache:
    """``get(path) -> Path`` of a JPEG under ``cache_dir``, generated on first use."""

    def __init__(self, cache_dir: str | Path, size: int = DEFAULT_THUMBNAIL_SIZE):
        self.cache_dir = Path(cache_dir)
        self.size = int(size)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._failed: dict[str, str] = {}
        self.generated = 0  # thumbnails made by this object (tests and logs)

    def key(self, path: str | Path) -> str:
        p = Path(path).resolve()
        st = p.stat()
        ident = f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0{self.size}"
        return hashlib.sha1(ident.encode("utf-8", "surrogateescape")).hexdigest()

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def get(self, path: str | Path) -> Path:
        """The cached thumbnail of ``path``; raises :class:`ThumbnailError` if the video cannot be decoded."""
        try:
            key = self.key(path)
        except OSError as exc:
            raise ThumbnailError(f"no thumbnail for {Path(path).name}: {exc.strerror or exc}") from None
        out = self.cache_dir / key[:2] / f"{key}.jpg"
        if out.is_file():
            return out
        if key in self._failed:
            raise ThumbnailError(self._failed[key])
        with self._lock(key):
            if out.is_file():
                return out
            try:
                data = middle_frame_jpeg(path, self.size)
            except ThumbnailError as exc:
                self._failed[key] = str(exc)
                raise
            atomic_write_bytes(out, data)
            self.generated += 1
        return out


def default_cache_dir(index_dir: str | Path) -> Path:
    """``INDEX_DIR/thumbnails`` when the index folder is writable, else a per-index user cache folder."""
    index_dir = Path(index_dir)
    if os.access(index_dir, os.W_OK):
        return index_dir / "thumbnails"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(str(index_dir.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return base / "hybridtower" / "thumbnails" / digest
