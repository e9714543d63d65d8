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

import errno
import hashlib
import logging
import math
import os
import stat
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
STALE_TMP_S = 3600.0  # a preview's temporary file older than this was left by a killed writer

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


def _inspect(container, label: str, what: str) -> tuple[Probe, object]:
    """(Probe, first video stream) of an open input container; PreviewError when it holds no video.
    ``what`` starts the error message ("<label> cannot be played" / "no preview for <label>")."""
    if not container.streams.video:
        raise PreviewError(f"{what}: it holds no video stream")
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
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        duration = None  # a header that says 0, a negative or NaN length: unknown
    fmt = container.format.name if container.format else ""
    ok, why = browser_playable(fmt, vcodec, pix, audio)
    return Probe(fmt, vcodec, pix, audio, duration, ok, why), vs


def probe_opened(video) -> Probe:
    """Probe the checked file ``video``; :class:`PreviewError` when it is no readable video."""
    av = _av()
    what = f"{video.label} cannot be played"
    try:
        fh, container = _open_container(video)
    except (av.error.FFmpegError, OSError, ValueError):
        raise PreviewError(f"{what}: it is not a readable video container") from None
    try:
        with fh, container:
            return _inspect(container, video.label, what)[0]
    except PreviewError:
        raise
    except (av.error.FFmpegError, OSError, ValueError):
        raise PreviewError(f"{what}: its streams cannot be read") from None


def segment_start(start: float | None, duration: float | None, max_seconds: float) -> float:
    """Start (seconds) of the preview segment that shows a moment starting at ``start``. A start that is
    not a finite number is the beginning; one at or past the end of a video of known ``duration`` is its
    last moment (the segment then still holds frames)."""
    try:
        start = float(start or 0.0)
    except (TypeError, ValueError):
        return 0.0
    if not (math.isfinite(start) and start > 0) or (duration is not None and duration <= max_seconds):
        return 0.0
    if duration is not None and math.isfinite(duration) and start >= duration:
        start = max(0.0, duration - 1.0)
    return float(math.floor(max(0.0, start - SEGMENT_LEAD) / SEGMENT_STEP) * SEGMENT_STEP)


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


class CacheWriteError(PreviewError):
    """The preview could be decoded but not written (a read-only, full or missing cache folder): not the
    video's fault, so it is not remembered as the video's failure."""


# errors of the writing side: the cache folder, not the video
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST,
                 errno.EISDIR, errno.EFBIG, errno.ENOENT}


def transcode(video, out: Path, *, start: float = 0.0, max_seconds: float = DEFAULT_MAX_SECONDS,
              max_height: int = DEFAULT_MAX_HEIGHT, max_fps: float = DEFAULT_MAX_FPS, encoder=None,
              on_probe=None) -> dict:
    """Write a silent, browser-playable preview of ``video`` (an OpenedVideo) from ``start`` seconds for at
    most ``max_seconds`` to ``out`` (atomically). Returns {"frames", "width", "height", "fps", "codec"}.

    The file is opened once: its probe (:class:`Probe`) is handed to ``on_probe`` before decoding, and a
    ``start`` past the end its header states is refused without decoding anything. A failure to write
    ``out`` raises :class:`CacheWriteError`; any other failure :class:`PreviewError`."""
    from ..data.video.decode import MAX_DECODE_PIXELS

    av = _av()
    codec, fmt, _ = encoder or preview_encoder()
    label = video.label
    what = f"no preview for {label}"
    try:
        fh, inp = _open_container(video)
    except (av.error.FFmpegError, OSError, ValueError):
        raise PreviewError(f"{what}: it is not a readable video container") from None
    frames_out = 0
    writing = [False]  # True while the failing call is one that writes the cache file
    try:
        with fh, inp:
            probe, vs = _inspect(inp, label, what)
            if on_probe is not None:
                on_probe(probe)
            if start > 0 and probe.duration is not None and start >= probe.duration:
                raise PreviewError(f"{what} from {start:.0f} s: the video is {probe.duration:.1f} s long")
            ctx = vs.codec_context
            w0, h0 = int(ctx.width or 0), int(ctx.height or 0)
            if w0 * h0 > MAX_DECODE_PIXELS:
                raise PreviewError(f"{what}: frames of {w0}x{h0} exceed the decoding limit")
            ctx.options = {**dict(ctx.options or {}), "max_pixels": str(MAX_DECODE_PIXELS)}
            vs.thread_type = "AUTO"
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate
            src_fps = float(rate) if rate else 25.0
            if not (math.isfinite(src_fps) and src_fps > 0):
                src_fps = 25.0
            fps = min(max_fps, src_fps)
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
            writing[0] = True
            with atomic_path(out) as tmp:
                opts = {"movflags": "+faststart"} if fmt == "mp4" else {}
                dst = av.open(str(tmp), mode="w", format=fmt, options=opts)
                writing[0] = False
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
                            # at most max_height lines and 4x as many columns (a 20000 x 16 strip
                            # would otherwise exceed what the H.264 encoder accepts)
                            scale = min(1.0, max_height / max(1, fh_), 4 * max_height / max(1, fw))
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
                        packets = ost.encode(img)
                        writing[0] = True
                        for packet in packets:
                            dst.mux(packet)
                        writing[0] = False
                        last_pts = pts
                        frames_out += 1
                    if ost is None:
                        raise PreviewError(f"{what}: no frame could be decoded"
                                           + (f" after {start:.0f} s" if start > 0 else ""))
                    writing[0] = True
                    for packet in ost.encode():
                        dst.mux(packet)
                    info = {"frames": frames_out, "width": ost.width, "height": ost.height, "fps": float(fps_q),
                            "codec": codec}
                finally:
                    dst.close()
            writing[0] = False
    except PreviewError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as exc:
        if writing[0] or (isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS):
            log.warning("cannot write a preview of %s: %s", label, exc)
            raise CacheWriteError(f"{what}: the preview cache cannot be written ({type(exc).__name__})") from None
        log.info("no preview for %s: %s", label, exc)
        raise PreviewError(f"{what}: it cannot be decoded ({type(exc).__name__})") from None
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
        self._verified: OrderedDict[str, None] = OrderedDict()  # cache files checked by this object
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
        self._remember_probe(fp, probe)
        return probe

    def _remember_probe(self, fp: str, probe: Probe) -> None:
        with self._guard:
            self._probes[fp] = probe
            while len(self._probes) > 4096:
                self._probes.popitem(last=False)

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
        """The cached preview file when this object has already checked it (no decoding, no blocking
        work: the app calls this on its event loop), else None (then :meth:`get` checks or makes it)."""
        key = self._key(self.fingerprint(video, entry), start)
        with self._guard:
            known = key in self._verified
        p = self.path_for(key)
        if known and _regular_file(p):
            return p
        return None

    def _usable(self, key: str, path: Path) -> bool:
        """True when ``path`` is a preview this object can serve: a regular file (not a link planted in
        the cache folder, which could point anywhere), not empty, that PyAV opens as a video. A file that
        fails is removed (it is made again). Checked once per key and process."""
        with self._guard:
            if key in self._verified:
                return _regular_file(path) and _touch(path)
        if not _regular_file(path):
            try:
                st = os.lstat(path)
            except OSError:
                return False
            if not stat.S_ISDIR(st.st_mode):
                log.warning("removing a cached preview that is not a regular file (%s)", path.name)
                _unlink(path)
            return False
        if not _plays(path):
            log.warning("removing a corrupt cached preview (%s)", path.name)
            _unlink(path)
            return False
        _touch(path)
        with self._guard:
            self._verified[key] = None
            while len(self._verified) > 65536:
                self._verified.popitem(last=False)
        return True

    def get(self, video, entry=None, start: float = 0.0) -> Path:
        """The preview file of ``video`` from ``start`` (made now if missing); raises PreviewError."""
        fp = self.fingerprint(video, entry)
        key = self._key(fp, start)
        out = self.path_for(key)
        if self._usable(key, out):
            return out
        with self._guard:
            failed = self._failed.get(key)
            if failed is not None and self._clock() < failed[1]:
                raise PreviewError(failed[0])
            self._failed.pop(key, None)
            probe = self._probes.get(fp)
        if probe is not None and start > 0 and probe.duration is not None and start >= probe.duration:
            raise PreviewError(f"no preview for {video.label} from {start:.0f} s: the video is "
                               f"{probe.duration:.1f} s long")
        with self._lock(key):
            if self._usable(key, out):
                return out
            t0 = time.monotonic()
            try:
                info = transcode(video, out, start=start, max_seconds=self.max_seconds, max_height=self.max_height,
                                 max_fps=self.max_fps, encoder=self.encoder(),
                                 on_probe=lambda pr: self._remember_probe(fp, pr))
            except CacheWriteError:
                raise  # the cache folder's fault: not remembered against the video
            except PreviewError as exc:
                if self.failure_ttl_s > 0:
                    with self._guard:
                        self._failed[key] = (str(exc), self._clock() + self.failure_ttl_s)
                        while len(self._failed) > 4096:
                            self._failed.popitem(last=False)
                raise
            except OSError as exc:  # the cache folder cannot be written
                log.warning("cannot write a preview of %s: %s", video.label, exc)
                raise CacheWriteError(f"no preview for {video.label}: the preview cache cannot be written") from None
            with self._guard:
                self._verified[key] = None
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
                        st = f.lstat()
                    except OSError:
                        continue
                    if f.name.endswith(".tmp") and time.time() - st.st_mtime > STALE_TMP_S:
                        _unlink(f)  # left by a process killed while writing a preview
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


def _regular_file(path: Path) -> bool:
    """``path`` itself (links not followed) is a non-empty regular file."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size > 0


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _plays(path: Path) -> bool:
    """``path`` (a cached preview) opens with PyAV, has a video stream, and all the packets its header
    counts can be read (demuxed, not decoded: a few ms), so a truncated or half-written file fails."""
    av = _av()
    try:
        with av.open(str(path), mode="r") as c:
            if not c.streams.video:
                return False
            vs = c.streams.video[0]
            expected = int(vs.frames or 0)
            count = sum(1 for packet in c.demux(vs) if packet.size)
            return count > 0 and count >= expected
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError):
        return False


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
