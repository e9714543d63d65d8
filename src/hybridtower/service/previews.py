"""Browser-playable previews of indexed videos that browsers cannot play (PyAV, cached on disk).

Which files need one is decided by **probing** the file (container and codecs), not by its name:
:func:`browser_playable` accepts MP4/MOV and Matroska/WebM containers holding H.264 (8-bit 4:2:0), VP8,
VP9 or AV1 video with AAC, MP3, Opus, Vorbis or FLAC audio (or none) - what Chromium, Firefox and Safari
play (Chromium plays H.264 in Matroska too). Anything else (AVI, MPEG-4 Part 2, MPEG-1/2, HEVC, WMV,
FLV, Ogg/Theora, GIF, 10-bit H.264, PCM or AC-3 audio, ...) gets a preview.

A preview is a silent H.264/MP4 (``libx264``, ``+faststart``; VP9/WebM when this PyAV has no libx264)
scaled to at most ``max_height`` (480) lines, at most ``max_fps`` (30) frames per second, and at most
``max_seconds`` (120 s) long. A file longer than that gets previews of segments: the segment for a
moment starting at ``t`` starts at ``floor(max(0, t - 10) / 30) * 30`` s (so the moment lies 10-40 s
into it) and the player is told that offset (:meth:`PreviewCache.plan`).

Previews live in a cache folder OUTSIDE the index (the index's garbage collector removes files it does
not know), named by a hash of the entry's fingerprint (its SHA-256 when the index records it, else the
real path, inode, size and modification time), the segment and the preview settings: a changed file
gets a new preview. The folder is kept under ``max_bytes`` (least recently used previews removed).
Previews are made on first request, from a checked :class:`~hybridtower.service.files.OpenedVideo`
(the hostile-file rules of :mod:`.files` hold: the transcoder reads the checked descriptor), atomically
written, one per key at a time; the caller bounds how many run at once (the app runs them in worker
threads behind a capacity limiter, never on the event loop). A failure raises :class:`PreviewError`
whose message names the video by id and relative name only; it is remembered for ``failure_ttl_s``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..core.errors import HybridTowerError
from ..core.io import atomic_path

log = logging.getLogger("hybridtower.service")

PREVIEW_VERSION = 1  # bump when the encoding changes: old cache files are then never used
DEFAULT_MAX_HEIGHT = 480
DEFAULT_MAX_FPS = 30.0
DEFAULT_MAX_SECONDS = 120.0
SEGMENT_STEP = 30.0  # segment starts are multiples of this (seconds)
SEGMENT_LEAD = 10.0  # a moment starts at least this long after its segment's start (when it can)
DEFAULT_MAX_BYTES = 2 << 30  # the cache folder's size bound (2 GiB)

# what browsers play (probed names as PyAV/FFmpeg reports them)
_MP4_FAMILY = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2")
_PLAYABLE_VIDEO = {"h264", "vp8", "vp9", "av1"}
_PLAYABLE_AUDIO = {"aac", "mp3", "opus", "vorbis", "flac"}
_H264_PIX_FMTS = {"yuv420p", "yuvj420p"}


class PreviewError(HybridTowerError):
    """No preview could be made; ``str(exc)`` is safe to show (no server path)."""


@dataclass
class Probe:
    """What the probe learned: container, codecs, duration, and whether browsers play it as it is."""

    container: str
    video_codec: str
    pix_fmt: str
    audio_codecs: tuple[str, ...]
    duration: float | None
    playable: bool
    reason: str  # why a preview is needed ("" when playable)


def browser_playable(container: str, video_codec: str, pix_fmt: str, audio_codecs) -> tuple[bool, str]:
    """(True, "") when browsers play this combination as it is, else (False, why not)."""
    families = set((container or "").split(","))
    if families & set(_MP4_FAMILY):
        kind = "MP4"
    elif families & {"matroska", "webm"}:
        kind = "Matroska/WebM"
    else:
        name = (container or "unknown").split(",")[0].upper()
        return False, f"the {name} container is not played by browsers"
    if video_codec not in _PLAYABLE_VIDEO:
        return False, f"{video_codec or 'unknown'} video in {kind} is not played by browsers"
    if video_codec == "h264" and pix_fmt and pix_fmt not in _H264_PIX_FMTS:
        return False, f"H.264 with {pix_fmt} pixels is not played by browsers"
    for a in audio_codecs:
        if a not in _PLAYABLE_AUDIO:
            return False, f"{a} audio in {kind} is not played by browsers"
    return True, ""


def _av():
    import av

    av.logging.set_level(av.logging.PANIC)
    return av


def _open_container(video):
    """(file object, container) reading the checked descriptor of ``video`` (an OpenedVideo)."""
    av = _av()
    fh = os.fdopen(os.dup(video.fd), "rb", closefd=True)
    fh.seek(0)
    try:
        return fh, av.open(fh, mode="r")
    except BaseException:
        fh.close()
        raise


def probe_opened(video) -> Probe:
    """Probe the checked file ``video``; :class:`PreviewError` when it is no readable video."""
    av = _av()
    try:
        fh, container = _open_container(video)
    except (av.error.FFmpegError, OSError, ValueError):
        raise PreviewError(f"{video.label} cannot be played: it is not a readable video container") from None
    try:
        with fh, container:
            if not container.streams.video:
                raise PreviewError(f"{video.label} cannot be played: it holds no video stream")
            vs = container.streams.video[0]
            ctx = vs.codec_context
            vcodec = getattr(ctx, "name", "") or ""
            pix = getattr(ctx, "pix_fmt", None) or ""
            audio = tuple((getattr(a.codec_context, "name", "") or "unknown") for a in container.streams.audio)
            duration = None
            if vs.duration and vs.time_base:
                duration = float(vs.duration * vs.time_base)
            elif container.duration:
                duration = container.duration / 1_000_000.0
            fmt = container.format.name if container.format else ""
    except PreviewError:
        raise
    except (av.error.FFmpegError, OSError, ValueError):
        raise PreviewError(f"{video.label} cannot be played: its streams cannot be read") from None
    ok, why = browser_playable(fmt, vcodec, pix, audio)
    return Probe(fmt, vcodec, pix, audio, duration, ok, why)


def segment_start(start: float | None, duration: float | None, max_seconds: float) -> float:
    """Start (seconds) of the preview segment that shows a moment starting at ``start``."""
    if not start or start <= 0 or (duration is not None and duration <= max_seconds):
        return 0.0
    return float(math.floor(max(0.0, float(start) - SEGMENT_LEAD) / SEGMENT_STEP) * SEGMENT_STEP)


def preview_encoder() -> tuple[str, str, str]:
    """(codec, container format, media type) of previews: H.264/MP4 when PyAV has libx264, else VP9/WebM."""
    av = _av()
    for codec, fmt, media in (("libx264", "mp4", "video/mp4"), ("libvpx-vp9", "webm", "video/webm")):
        try:
            av.codec.Codec(codec, "w")
            return codec, fmt, media
        except Exception:  # UnknownCodecError and friends
            continue
    raise PreviewError("this installation's PyAV has neither an H.264 nor a VP9 encoder, so no previews can be made")


def _even(x: float) -> int:
    return max(2, int(round(x / 2.0)) * 2)


def transcode(video, out: Path, *, start: float = 0.0, max_seconds: float = DEFAULT_MAX_SECONDS,
              max_height: int = DEFAULT_MAX_HEIGHT, max_fps: float = DEFAULT_MAX_FPS) -> dict:
    """Write a silent, browser-playable preview of ``video`` (an OpenedVideo) from ``start`` seconds for at
    most ``max_seconds`` to ``out`` (atomically). Returns {"frames", "width", "height", "fps", "codec"}."""
    from ..data.video.decode import MAX_DECODE_PIXELS

    av = _av()
    codec, fmt, _ = preview_encoder()
    label = video.label
    try:
        fh, inp = _open_container(video)
    except (av.error.FFmpegError, OSError, ValueError):
        raise PreviewError(f"no preview for {label}: it is not a readable video container") from None
    frames_out = 0
    try:
        with fh, inp:
            if not inp.streams.video:
                raise PreviewError(f"no preview for {label}: it holds no video stream")
            vs = inp.streams.video[0]
            ctx = vs.codec_context
            w0, h0 = int(ctx.width or 0), int(ctx.height or 0)
            if w0 * h0 > MAX_DECODE_PIXELS:
                raise PreviewError(f"no preview for {label}: frames of {w0}x{h0} exceed the decoding limit")
            ctx.options = {**dict(ctx.options or {}), "max_pixels": str(MAX_DECODE_PIXELS)}
            vs.thread_type = "AUTO"
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate
            src_fps = float(rate) if rate else 25.0
            fps = min(max_fps, src_fps) if src_fps > 0 else 25.0
            fps_q = Fraction(fps).limit_denominator(1001)
            tb = vs.time_base or Fraction(1, 1000)
            t0 = float(vs.start_time * tb) if vs.start_time is not None else 0.0
            if start > 0:
                try:
                    inp.seek(int((t0 + start) / tb), stream=vs, backward=True, any_frame=False)
                except av.error.FFmpegError:
                    pass  # decode forward from the start instead
            end = start + max_seconds
            max_decoded = int(max_seconds * 300) + 3000  # bound on frames decoded (absurd frame rates)
            with atomic_path(out) as tmp:
                opts = {"movflags": "+faststart"} if fmt == "mp4" else {}
                dst = av.open(str(tmp), mode="w", format=fmt, options=opts)
                try:
                    ost = None
                    last_pts = -1
                    decoded = 0
                    for frame in inp.decode(vs):
                        decoded += 1
                        if decoded > max_decoded:
                            break
                        t = (float(frame.pts * tb) if frame.pts is not None else decoded / src_fps) - t0
                        if t < start - 1e-3:
                            continue
                        if t >= end:
                            break
                        pts = int(round((t - start) * fps))
                        if pts <= last_pts:
                            continue  # more source frames than the preview's rate: drop
                        if ost is None:
                            fw, fh_ = frame.width, frame.height
                            scale = min(1.0, max_height / max(1, fh_))
                            ow, oh = _even(fw * scale), _even(fh_ * scale)
                            ost = dst.add_stream(codec, rate=fps_q)
                            ost.width, ost.height, ost.pix_fmt = ow, oh, "yuv420p"
                            if codec == "libx264":
                                ost.options = {"crf": "28", "preset": "veryfast", "threads": "2",
                                               "profile": "main"}
                            else:
                                ost.options = {"crf": "36", "b": "0", "deadline": "realtime", "cpu-used": "8",
                                               "threads": "2"}
                        img = frame.reformat(width=ost.width, height=ost.height, format="yuv420p")
                        img.pts = pts
                        img.time_base = Fraction(1, 1) / fps_q
                        for packet in ost.encode(img):
                            dst.mux(packet)
                        last_pts = pts
                        frames_out += 1
                    if ost is None:
                        raise PreviewError(f"no preview for {label}: no frame could be decoded"
                                           + (f" after {start:.0f} s" if start > 0 else ""))
                    for packet in ost.encode():
                        dst.mux(packet)
                    info = {"frames": frames_out, "width": ost.width, "height": ost.height, "fps": float(fps_q),
                            "codec": codec}
                finally:
                    dst.close()
    except PreviewError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as exc:
        log.info("no preview for %s: %s", label, exc)
        raise PreviewError(f"no preview for {label}: it cannot be decoded ({type(exc).__name__})") from None
    return info


@dataclass
class Playback:
    """How the page plays a video: the original file, or a preview whose time 0 is ``offset`` seconds."""

    kind: str  # "original" | "preview"
    offset: float
    reason: str


class PreviewCache:
    """Previews under ``cache_dir`` (outside the index), made on first use; see the module doc."""

    def __init__(self, cache_dir: str | Path, *, max_height: int = DEFAULT_MAX_HEIGHT,
                 max_fps: float = DEFAULT_MAX_FPS, max_seconds: float = DEFAULT_MAX_SECONDS,
                 max_bytes: int = DEFAULT_MAX_BYTES, failure_ttl_s: float = 30.0, clock=time.monotonic):
        if not max_seconds >= 2 * SEGMENT_STEP:
            raise ValueError(f"previews must be at least {2 * SEGMENT_STEP:g} s long (a moment lies up to "
                             f"{SEGMENT_STEP + SEGMENT_LEAD:g} s into its segment), got {max_seconds}")
        self.cache_dir = Path(cache_dir)
        self.max_height = int(max_height)
        self.max_fps = float(max_fps)
        self.max_seconds = float(max_seconds)
        self.max_bytes = int(max_bytes)
        self.failure_ttl_s = float(failure_ttl_s)
        self._clock = clock
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._probes: OrderedDict[str, Probe] = OrderedDict()
        self._failed: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.generated = 0  # previews made by this object (tests, logs)
        self._encoder: tuple[str, str, str] | None = None

    # ----- keys -----
    @staticmethod
    def fingerprint(video, entry=None) -> str:
        sha = getattr(entry, "sha256", None)
        st = video.st
        if isinstance(sha, str) and sha:
            return f"sha256:{sha}:{st.st_size}"
        return f"file:{video.real_path}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}"

    def _key(self, fingerprint: str, start: float) -> str:
        ident = (f"v{PREVIEW_VERSION}\0{fingerprint}\0{start:.3f}\0{self.max_seconds}\0{self.max_height}\0"
                 f"{self.max_fps}")
        return hashlib.sha1(ident.encode("utf-8", "surrogateescape")).hexdigest()

    def encoder(self) -> tuple[str, str, str]:
        if self._encoder is None:
            self._encoder = preview_encoder()
        return self._encoder

    def path_for(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.{self.encoder()[1]}"

    # ----- probing -----
    def probe(self, video, entry=None) -> Probe:
        fp = self.fingerprint(video, entry)
        with self._guard:
            hit = self._probes.get(fp)
            if hit is not None:
                self._probes.move_to_end(fp)
                return hit
        probe = probe_opened(video)
        with self._guard:
            self._probes[fp] = probe
            while len(self._probes) > 4096:
                self._probes.popitem(last=False)
        return probe

    def plan(self, video, entry=None, start: float | None = None) -> Playback:
        """Original or preview for a moment at ``start`` (None = the beginning); probes once per file."""
        probe = self.probe(video, entry)
        if probe.playable:
            return Playback("original", 0.0, "")
        return Playback("preview", segment_start(start, probe.duration, self.max_seconds), probe.reason)

    def valid_segment(self, start: float) -> bool:
        return start >= 0 and math.isfinite(start) and abs(start / SEGMENT_STEP - round(start / SEGMENT_STEP)) < 1e-9

    # ----- making -----
    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                if len(self._locks) > 1024:
                    for k in [k for k, v in self._locks.items() if not v.locked()]:
                        del self._locks[k]
                lock = self._locks[key] = threading.Lock()
            return lock

    def cached(self, video, entry=None, start: float = 0.0) -> Path | None:
        """The cached preview file, or None (no decoding)."""
        p = self.path_for(self._key(self.fingerprint(video, entry), start))
        return p if p.is_file() else None

    def get(self, video, entry=None, start: float = 0.0) -> Path:
        """The preview file of ``video`` from ``start`` (made now if missing); raises PreviewError."""
        key = self._key(self.fingerprint(video, entry), start)
        out = self.path_for(key)
        if _touch(out):
            return out
        with self._guard:
            failed = self._failed.get(key)
            if failed is not None and self._clock() < failed[1]:
                raise PreviewError(failed[0])
            self._failed.pop(key, None)
        with self._lock(key):
            if _touch(out):
                return out
            t0 = time.monotonic()
            try:
                info = transcode(video, out, start=start, max_seconds=self.max_seconds,
                                 max_height=self.max_height, max_fps=self.max_fps)
            except PreviewError as exc:
                if self.failure_ttl_s > 0:
                    with self._guard:
                        self._failed[key] = (str(exc), self._clock() + self.failure_ttl_s)
                        while len(self._failed) > 4096:
                            self._failed.popitem(last=False)
                raise
            except OSError as exc:  # the cache folder cannot be written
                log.warning("cannot write a preview of %s: %s", video.label, exc)
                raise PreviewError(f"no preview for {video.label}: the preview cache cannot be written") from None
            self.generated += 1
            log.info("preview of %s from %.0f s: %d frames %dx%d in %.1f s", video.label, start, info["frames"],
                     info["width"], info["height"], time.monotonic() - t0)
        self.trim(keep=out)
        return out

    def trim(self, keep: Path | None = None) -> int:
        """Remove the least recently used previews until the folder holds at most ``max_bytes``."""
        files = []
        total = 0
        try:
            for sub in self.cache_dir.iterdir():
                if not sub.is_dir():
                    continue
                for f in sub.iterdir():
                    try:
                        st = f.stat()
                    except OSError:
                        continue
                    files.append((st.st_mtime, st.st_size, f))
                    total += st.st_size
        except OSError:
            return 0
        removed = 0
        for _, size, f in sorted(files, key=lambda x: x[0]):
            if total <= self.max_bytes:
                break
            if keep is not None and f == keep:
                continue
            try:
                f.unlink()
                total -= size
                removed += 1
            except OSError:
                pass
        return removed


def _touch(path: Path) -> bool:
    """True when ``path`` exists (its time is refreshed: least recently used previews go first)."""
    try:
        os.utime(path)
        return True
    except OSError:
        return False


def default_preview_dir() -> Path:
    """The per-user preview cache: ``$XDG_CACHE_HOME/hybridtower/previews`` (``~/.cache/...``)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "hybridtower" / "previews"
