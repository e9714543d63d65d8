"""Video probing and frame decoding with PyAV, reading only the frames a sampler asks for.

How frames are chosen
---------------------
A frame index ``i`` (from :func:`sample_indices`) is turned into a presentation time
``t_i = start + i / fps`` and the frame *displayed at* ``t_i`` is returned: the last decoded frame whose
timestamp is ``<= t_i + half a frame``. For constant-frame-rate video that is exactly frame ``i``; for
variable-frame-rate (VFR) video, indices are spread evenly over *time* (``fps`` is the stream's average
rate), which is what a viewer sees, rather than over the irregular frame list.

Seeking
-------
Targets are visited in time order. The scanner learns the key-frame spacing as it goes; when seeking to
the next target would skip more than ``seek_min_gap`` seconds (default 0.5) of decoding, the demuxer
seeks back to the key frame before the target and decodes forward from there; otherwise decoding simply
continues. A 12-frame sample of a one-minute video therefore decodes a few GOPs instead of the whole file. A
container that cannot seek (or lands past the target) falls back to one sequential pass.
``read_frames(..., seek=False)`` always does one sequential pass; both paths return identical frames.

Rotation
--------
When the stream carries a display matrix (phone videos), frames are rotated to display orientation
(``VideoFrame.rotation``, counter-clockwise degrees in PyAV) and :class:`VideoInfo` reports it.

Hostile files
-------------
Only regular files are opened (a symlink to one is fine): a FIFO, a device, a socket or a folder is
refused from its ``stat`` without being read, and the file is opened with ``O_NONBLOCK`` and checked again
on the open descriptor, so nothing here can block on a pipe. Frame size is bounded: a stream whose coded
frames exceed :data:`MAX_DECODE_PIXELS` is refused before any frame is decoded (and the decoder itself
is opened with that ``max_pixels`` limit), and frames above :data:`MAX_FRAME_PIXELS` (1920x1080's area; ``max_pixels=``)
are scaled down while they are converted to RGB (aspect ratio kept), so ``read_frames`` holds at most
``T x MAX_FRAME_PIXELS x 3`` bytes of frames. :func:`read_all_frames` refuses a file whose frames exceed ``max_bytes``.

Errors
------
Every failure a user's file can cause (missing, empty, truncated, not a video, not a regular file,
frames too large, unsupported codec, zero frames, a decode error) raises :class:`VideoDecodeError`. Its
message names the file by its base name (never a full path) and gives the reason; ``.path`` keeps the
path as given.
"""

from __future__ import annotations

import math
import os
import random
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from fractions import Fraction

import numpy as np

from ...core.display import printable
from ...core.errors import HybridTowerError
from ...core.io import NotRegularFileError, open_regular
from .sampling import SAMPLING_MODES, sample_indices

__all__ = [
    "VideoDecodeError",
    "VideoInfo",
    "probe_video",
    "sample_indices",
    "read_frames",
    "read_frames_or_probe",
    "read_window",
    "decode_frames",
    "read_all_frames",
    "SAMPLING_MODES",
    "VIDEO_EXTENSIONS",
    "MAX_DECODE_PIXELS",
    "MAX_FRAME_PIXELS",
    "capped_size",
]

#: Largest coded frame (width x height) decoded at all: 8192 x 4320 (8K). Larger streams are refused.
MAX_DECODE_PIXELS = 8192 * 4320
#: Default largest frame returned: the area of 1920 x 1080. Larger frames are scaled down to this area
#: (4K UHD becomes exactly 1920x1080). The encoders take 224-336 px inputs, so nothing they use is lost,
#: and a decoding worker holds at most T x 6.2 MB of frames whatever the file claims.
MAX_FRAME_PIXELS = 1920 * 1080
#: Default limit on the decoded bytes :func:`read_all_frames` may hold.
MAX_ALL_FRAMES_BYTES = 1 << 30

#: File extensions treated as video when scanning folders (lower case, with the dot).
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv", ".3gp", ".ts")


class VideoDecodeError(HybridTowerError):
    """A video file could not be opened or decoded. ``.path`` is the file, ``.reason`` says why."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read video {printable(os.path.basename(self.path) or self.path)}: {reason}")

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.path, self.reason))


@dataclass
class VideoInfo:
    """What :func:`probe_video` learns from a container without decoding pixels."""

    path: str
    num_frames: int  # frame count; estimated from duration x fps when ``frames_exact`` is False
    fps: float  # average frame rate
    duration: float  # seconds
    width: int  # coded width (before rotation)
    height: int
    codec: str
    rotation: int = 0  # counter-clockwise degrees applied to reach display orientation (0/90/180/270)
    container: str = ""
    frames_exact: bool = True
    start_time: float = 0.0  # seconds of the first frame's timestamp

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) of the frames :func:`read_frames` returns (rotation applied)."""
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)

    def to_dict(self) -> dict:
        return asdict(self)


def _av():
    import av  # imported lazily: keeps `hybridtower --help` fast

    av.logging.set_level(av.logging.PANIC)  # ffmpeg's own stderr chatter; failures raise instead
    return av


def capped_size(width: int, height: int, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) scaled down, aspect ratio kept, to at most ``max_pixels`` (default MAX_FRAME_PIXELS)."""
    limit = MAX_FRAME_PIXELS if max_pixels is None else max_pixels
    if width * height <= limit:
        return width, height
    scale = math.sqrt(limit / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def _open_file(path):
    """A binary file object for the regular file ``path``, opened without blocking; else VideoDecodeError."""
    try:
        fd, st = open_regular(path)
    except FileNotFoundError:
        raise VideoDecodeError(path, "file does not exist") from None
    except NotRegularFileError as exc:
        if exc.kind == "a folder":
            raise VideoDecodeError(path, "is a directory, not a video file") from None
        raise VideoDecodeError(path, f"{exc.strerror}; refused without reading it") from None
    except OSError as exc:
        raise VideoDecodeError(path, f"cannot open: {exc.strerror or type(exc).__name__}") from None
    fh = os.fdopen(fd, "rb")
    if st.st_size == 0:
        fh.close()
        raise VideoDecodeError(path, "file is empty (0 bytes)")
    return fh


@contextmanager
def _opened(path):
    """``with _opened(path) as (container, video_stream)``; every problem raises VideoDecodeError."""
    av = _av()
    with _open_file(path) as fh:  # PyAV reads the checked descriptor, never the path again
        try:
            container = av.open(fh, mode="r")
        except av.error.FFmpegError as exc:  # InvalidDataError, EOFError, ...
            raise VideoDecodeError(path, f"not a readable video container (truncated or not a video): {_msg(exc)}") from None
        except OSError as exc:
            raise VideoDecodeError(path, f"cannot open: {exc.strerror or type(exc).__name__}") from None
        try:
            if not container.streams.video:
                raise VideoDecodeError(path, "contains no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            if ctx is None or not getattr(ctx, "name", None) or ctx.name == "none":
                raise VideoDecodeError(path, "unsupported or unknown video codec (no decoder available)")
            width, height = int(ctx.width or 0), int(ctx.height or 0)
            if width * height > MAX_DECODE_PIXELS:
                raise VideoDecodeError(path, f"frames of {width}x{height} exceed the decoding limit of "
                                             f"{MAX_DECODE_PIXELS:,} pixels (8192x4320)")
            # the decoder refuses larger frames too (a header that understates them, a size change mid-stream)
            ctx.options = {**dict(ctx.options or {}), "max_pixels": str(MAX_DECODE_PIXELS)}
            yield container, stream
        finally:
            container.close()


def _msg(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(": '")[0] if isinstance(text, str) else str(exc)


def _rotation_of(stream, first_frame=None) -> int:
    rot = None
    if first_frame is not None:
        rot = getattr(first_frame, "rotation", None)
    if rot is None:
        meta = getattr(stream, "metadata", {}) or {}
        if "rotate" in meta:  # old-style tag: clockwise degrees
            try:
                rot = -int(float(meta["rotate"]))
            except ValueError:
                rot = 0
    rot = int(round((rot or 0) / 90.0)) * 90 % 360
    return rot


def _probe_open(container, stream, path) -> VideoInfo:
    tb = stream.time_base or Fraction(1, 1)
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
    duration = None
    if stream.duration:
        duration = float(stream.duration * tb)
    elif container.duration:
        duration = container.duration / 1_000_000.0
    frames = int(stream.frames or 0)
    exact = frames > 0
    if not exact:
        if duration and fps > 0:
            frames = int(round(duration * fps))
        else:  # no header information: count packets (no pixel decoding)
            frames, last = _count_packets(container, stream, path)
            exact = True
            if fps <= 0 and last is not None and frames > 1:
                fps = (frames - 1) / max(last - start, 1e-6)
            duration = duration or (frames / fps if fps > 0 else 0.0)
    if fps <= 0:
        fps = frames / duration if duration else 25.0
    if duration is None:
        duration = frames / fps
    if frames <= 0:
        raise VideoDecodeError(path, "video stream has zero frames")
    ctx = stream.codec_context
    return VideoInfo(
        path=str(path),
        num_frames=frames,
        fps=fps,
        duration=duration,
        width=int(ctx.width or 0),
        height=int(ctx.height or 0),
        codec=ctx.name,
        rotation=_rotation_of(stream),
        container=container.format.name if container.format else "",
        frames_exact=exact,
        start_time=start,
    )


def _count_packets(container, stream, path) -> tuple[int, float | None]:
    av = _av()
    n, last = 0, None
    try:
        for packet in container.demux(stream):
            if packet.size:
                n += 1
                if packet.pts is not None:
                    t = float(packet.pts * packet.time_base)
                    last = t if last is None else max(last, t)
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(path, f"demuxing failed: {_msg(exc)}") from None
    try:
        container.seek(0, stream=stream, backward=True)
    except av.error.FFmpegError:
        pass
    return n, last


def _measure(container, stream, info: VideoInfo, path) -> None:
    """Replace ``info``'s header estimate of its frames and duration by the stream's real ones, learnt by
    counting its packets (demux only: no pixel decoding; 65 ms for a 2-hour 2 fps file, 1 % of indexing it:
    ``benchmarks/long_video.py --container mp4,mkv``). Matroska / WebM headers without a frame count give a duration that a broken
    or hostile file can overstate by hours: windows planned from it would lie past the real end, fail to
    decode ('truncated') and lose the whole file."""
    frames, last = _count_packets(container, stream, path)
    if frames <= 0:
        raise VideoDecodeError(path, "video stream has zero frames")
    frame_dur = 1.0 / info.fps if info.fps > 0 else 0.0
    if last is not None:
        duration = max(0.0, last - info.start_time) + frame_dur
    else:
        duration = frames * frame_dur
    info.num_frames = frames
    info.duration = duration if duration > 0 else info.duration
    info.frames_exact = True


def probe_video(path) -> VideoInfo:
    """Frame count, fps, duration, size, codec and rotation of ``path`` (header only, no pixel decode)."""
    with _opened(path) as (container, stream):
        info = _probe_open(container, stream, path)
        if info.rotation == 0:
            # PyAV exposes the display matrix on decoded frames; peek at the first one cheaply
            try:
                frame = next(container.decode(stream), None)
            except Exception:  # decode problems surface in read_frames with a clear reason
                frame = None
            info.rotation = _rotation_of(stream, frame)
        return info


def read_frames(
    path,
    num_frames: int = 12,
    mode: str = "uniform",
    rng: random.Random | None = None,
    *,
    seek: bool = True,
    seek_min_gap: float = 0.5,
    max_pixels: int = MAX_FRAME_PIXELS,
) -> np.ndarray:
    """Sample ``num_frames`` frames of ``path`` with ``mode`` and return uint8 ``[T, H, W, 3]`` RGB.

    Rotation metadata is applied. Videos with fewer than ``num_frames`` frames repeat frames (see
    :mod:`hybridtower.data.video.sampling`). Frames larger than ``max_pixels`` are scaled down to that
    area (aspect ratio kept). Raises :class:`VideoDecodeError` on any unreadable input.
    """
    with _opened(path) as (container, stream):
        info = _probe_open(container, stream, path)
        return _sampled(container, stream, info, path, num_frames, mode, rng, seek=seek, seek_min_gap=seek_min_gap,
                        max_pixels=max_pixels, recount=False)


def _sampled(container, stream, info: VideoInfo, path, num_frames: int, mode: str, rng, *, seek: bool,
             seek_min_gap: float, max_pixels: int, recount: bool) -> np.ndarray:
    """``num_frames`` frames sampled with ``mode`` over the whole video.

    A header estimate of the frames (no frame count in the container) that overstates them makes the decoder
    run out before the last targets ('truncated'). With ``recount`` the packets are then counted (demux
    only, :func:`_measure`) and the frames sampled again over the real ones, with the same random state;
    files whose header is right pay nothing. A lying header and a file cut short look the same to the
    demuxer, so with ``recount`` a cut Matroska / WebM file gives the frames it still has."""
    state = rng.getstate() if rng is not None else None
    indices = sample_indices(info.num_frames, num_frames, mode, rng)
    try:
        return _decode_at(container, stream, info, indices, path, seek=seek, seek_min_gap=seek_min_gap,
                          max_pixels=max_pixels)
    except VideoDecodeError as exc:
        if not recount or info.frames_exact or not exc.reason.startswith("truncated"):
            raise
    av = _av()
    try:
        container.seek(0, stream=stream, backward=True)
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(path, f"the header overstates the video and it cannot be read again: {_msg(exc)}") from None
    _measure(container, stream, info, path)
    if state is not None:
        rng.setstate(state)
    indices = sample_indices(info.num_frames, num_frames, mode, rng)
    return _decode_at(container, stream, info, indices, path, seek=seek, seek_min_gap=seek_min_gap,
                      max_pixels=max_pixels)


def read_frames_or_probe(path, num_frames: int, mode: str, rng: random.Random | None, window: float, *,
                         seek: bool = True, max_pixels: int = MAX_FRAME_PIXELS) -> tuple[np.ndarray | None, VideoInfo]:
    """``(frames, info)`` of a video no longer than ``window`` seconds (``window`` 0: any video), the frames
    exactly those of :func:`read_frames`; ``(None, info)`` for a longer one, decoding no pixels (its windows
    are read by :func:`read_window`). One open of the file either way.

    What the index reads (``index.encoding``), so it does not trust a header's duration where the container
    has no frame count (Matroska / WebM: frames = duration x fps): a file the header makes longer than
    ``window`` has its packets counted (demux only: 65 ms for a 2-hour 2 fps file; ``info`` then
    holds the real frames and duration, ``frames_exact`` True) before it is classed and its windows
    planned, and a file sampled whole whose decoder runs out before the header's end is counted and
    sampled again (:func:`_sampled`). Either way a file whose header overstates its length (or that was
    cut short) is read for what it holds instead of being skipped as 'truncated'."""
    with _opened(path) as (container, stream):
        info = _probe_open(container, stream, path)
        if window > 0 and info.duration > window and not info.frames_exact:
            _measure(container, stream, info, path)  # the header's duration may lie: its windows would too
        if window > 0 and info.duration > window:
            return None, info
        return _sampled(container, stream, info, path, num_frames, mode, rng, seek=seek, seek_min_gap=0.5,
                        max_pixels=max_pixels, recount=True), info


def read_window(path, start: float, end: float, num_frames: int = 12, mode: str = "uniform",
                rng: random.Random | None = None, *, seek: bool = True, max_pixels: int = MAX_FRAME_PIXELS) -> np.ndarray:
    """``num_frames`` frames sampled with ``mode`` among those shown in ``[start, end)`` seconds of ``path``
    (seconds from its first frame), as uint8 ``[T, H, W, 3]``: the demuxer seeks to the key frame before the
    window, so reading one window of a 2-hour file decodes a few GOPs, not the file."""
    from .windows import window_indices

    with _opened(path) as (container, stream):
        info = _probe_open(container, stream, path)
        indices = window_indices(info.num_frames, info.fps, start, end, num_frames, mode, rng)
        return _decode_at(container, stream, info, indices, path, seek=seek, seek_min_gap=0.5, max_pixels=max_pixels)


def decode_frames(path, indices: list[int], *, seek: bool = True, seek_min_gap: float = 0.5,
                  max_pixels: int = MAX_FRAME_PIXELS) -> np.ndarray:
    """Frames at explicit ``indices`` (any order, repeats allowed) as uint8 ``[len(indices), H, W, 3]``."""
    with _opened(path) as (container, stream):
        info = _probe_open(container, stream, path)
        return _decode_at(container, stream, info, list(indices), path, seek=seek, seek_min_gap=seek_min_gap,
                          max_pixels=max_pixels)


def read_all_frames(path, max_bytes: int = MAX_ALL_FRAMES_BYTES, max_pixels: int = MAX_FRAME_PIXELS) -> np.ndarray:
    """Decode every frame of ``path`` (uint8 ``[N, H, W, 3]``, rotation applied). For tests, benchmarks and
    the training frame cache; a file whose frames need more than ``max_bytes`` raises VideoDecodeError."""
    av = _av()
    out, rotation, held = [], None, 0
    with _opened(path) as (container, stream):
        to_rgb = _ToRGB(max_pixels)
        try:
            for frame in container.decode(stream):
                if rotation is None:
                    rotation = _rotation_of(stream, frame)
                out.append(to_rgb(frame))
                held += out[-1].nbytes
                if held > max_bytes:
                    raise VideoDecodeError(path, f"too long to decode whole: its frames exceed {max_bytes / 2**20:.0f} MiB "
                                                 f"(read_all_frames max_bytes) after {len(out)} frames")
        except av.error.FFmpegError as exc:
            if not out:
                raise VideoDecodeError(path, f"decoding failed: {_msg(exc)}") from None
    if not out:
        raise VideoDecodeError(path, "video stream has zero decodable frames")
    return _rotate(np.stack(out), rotation or 0)


def _rotate(frames: np.ndarray, rotation: int) -> np.ndarray:
    k = (rotation // 90) % 4
    if k == 0:
        return frames
    return np.ascontiguousarray(np.rot90(frames, k=k, axes=(1, 2)))


class _SeekFailed(Exception):
    pass


def _decode_at(container, stream, info: VideoInfo, indices, path, *, seek: bool, seek_min_gap: float,
               max_pixels: int) -> np.ndarray:
    av = _av()
    if not indices:
        raise ValueError("no frame indices requested")
    if any(i < 0 for i in indices):
        raise ValueError(f"negative frame index in {indices}")
    frame_dur = 1.0 / info.fps
    times = sorted({info.start_time + i * frame_dur for i in indices})
    try:
        if seek:
            try:
                picked, rotation = _scan(container, stream, times, frame_dur, path, seek_min_gap, info, max_pixels)
            except _SeekFailed:
                container.seek(0, stream=stream, backward=True)
                picked, rotation = _scan(container, stream, times, frame_dur, path, None, info, max_pixels)
        else:
            picked, rotation = _scan(container, stream, times, frame_dur, path, None, info, max_pixels)
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(path, f"decoding failed: {_msg(exc)}") from None
    return _assemble(picked, [info.start_time + i * frame_dur for i in indices], rotation)


def _assemble(picked: dict, keys: list, rotation: int) -> np.ndarray:
    """Stack ``picked[key]`` for ``keys`` (repeats allowed) rotated, into one array, without a second copy
    of every frame: each decoded frame is dropped once it has been placed for the last time."""
    k = (rotation // 90) % 4
    first = np.rot90(picked[keys[0]], k=k)
    out = np.empty((len(keys),) + first.shape, dtype=first.dtype)
    last_use = {key: j for j, key in enumerate(keys)}
    for j, key in enumerate(keys):
        out[j] = np.rot90(picked[key], k=k) if k else picked[key]
        if last_use[key] == j:
            del picked[key]
    return out


def _frame_time(frame, prev_time: float | None, frame_dur: float) -> float:
    t = frame.time
    if t is None:
        return 0.0 if prev_time is None else prev_time + frame_dur
    return float(t)


def _scan(container, stream, times, frame_dur, path, seek_min_gap, info, max_pixels) -> tuple[dict, int]:
    """Visit target ``times`` in order; return {time: rgb array} and the rotation seen.

    ``seek_min_gap=None`` means one sequential pass without seeking.
    """
    tol = 0.5 * frame_dur
    tb = stream.time_base
    to_rgb = _ToRGB(max_pixels)
    out: dict[float, np.ndarray] = {}
    rotation = None
    decoder = None
    just_seeked = False
    prev = None  # (time, frame): last decoded frame at or before the current target
    pending = None  # a decoded frame past the previous target, not consumed yet
    last_time = None  # time of the latest decoded frame
    key_gap = 0.0  # lower bound on key-frame spacing learnt so far (seeks that landed early)
    last_key = None
    for target in times:
        here = last_time if last_time is not None else info.start_time
        if seek_min_gap is None:
            want_seek = False
        elif last_key is not None and key_gap > 0:
            # key frames seen so far are key_gap apart: predict where a seek to the target would land
            landing = last_key + key_gap * math.floor((target - last_key) / key_gap)
            want_seek = landing - here > seek_min_gap
        else:
            want_seek = target - here > max(seek_min_gap, key_gap)
        if decoder is None or want_seek:
            if want_seek and stream.time_base is not None:
                offset = int(math.floor((target + tol) / tb)) if tb else 0
                try:
                    container.seek(offset, stream=stream, backward=True, any_frame=False)
                except Exception as exc:  # some containers cannot seek
                    raise _SeekFailed() from exc
                prev, pending, last_key = None, None, None  # key-frame spacing is measured within one run only
                just_seeked = True
            decoder = container.decode(stream)
        else:
            just_seeked = False
        while True:
            if pending is not None:
                item, pending = pending, None
            else:
                frame = next(decoder, None)
                if frame is None:
                    item = None
                else:
                    t = _frame_time(frame, last_time, frame_dur)
                    last_time = t
                    if frame.key_frame:
                        if last_key is not None and t > last_key:
                            key_gap = max(key_gap, t - last_key)
                        last_key = t
                    if rotation is None:
                        rotation = _rotation_of(stream, frame)
                    item = (t, frame)
            if just_seeked and item is not None:
                just_seeked = False
                landed = item[0]
                if landed > target + frame_dur + tol:
                    raise _SeekFailed()  # the demuxer overshot the target: use one sequential pass
                key_gap = max(key_gap, target - landed)  # no key frame lies between landed and target
            if item is None:  # stream exhausted before reaching the target
                if prev is None:
                    if out:
                        prev_arr = out[max(out)]
                        out[target] = prev_arr
                        break
                    raise VideoDecodeError(path, "video stream has zero decodable frames")
                if target > prev[0] + max(2 * frame_dur, 0.05 * info.duration):
                    raise VideoDecodeError(
                        path,
                        f"truncated: decoding stopped at {prev[0]:.2f}s but the header promises "
                        f"{info.duration:.2f}s ({info.num_frames} frames)",
                    )
                out[target] = to_rgb(prev[1])
                break
            if item[0] > target + tol:
                chosen = prev if prev is not None else item  # before the first frame: take the first
                out[target] = to_rgb(chosen[1])
                pending = item
                if prev is None:
                    prev = item
                break
            prev = item
    return out, rotation or 0


class _ToRGB:
    """Decoded frames -> uint8 RGB arrays, all at one size: the first frame's, scaled down to at most
    ``max_pixels`` (aspect kept). A stream that changes size mid-way is scaled to the first size."""

    def __init__(self, max_pixels: int = MAX_FRAME_PIXELS):
        self.size = None
        self.max_pixels = max_pixels

    def __call__(self, frame) -> np.ndarray:
        if isinstance(frame, np.ndarray):
            return frame
        if self.size is None:
            self.size = capped_size(int(frame.width), int(frame.height), self.max_pixels)
        width, height = self.size
        # frame.reformat(...).to_ndarray() is ~30x faster than frame.to_ndarray(format=...) in PyAV 18
        # (the latter builds a new scaler context per call)
        if (frame.width, frame.height) == (width, height):
            return frame.reformat(format="rgb24").to_ndarray()
        return frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()
