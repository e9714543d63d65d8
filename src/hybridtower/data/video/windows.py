"""Moment windows of long videos: where they lie (``plan_windows``) and which frames each one samples
(``window_indices``).

A video no longer than ``window`` seconds is one whole-file item (``plan_windows`` returns None) and is
sampled exactly as before. A longer one is cut into windows of ``window`` seconds every ``stride`` seconds,
``[i * stride, min(i * stride + window, duration)]`` for ``i = 0 .. ceil((duration - window) / stride)``: the
last window ends at the end of the file, so every second is covered, and with ``stride <= window / 2``
every event up to ``window - stride`` seconds long lies wholly inside at least one window. Each window is
sampled like a whole video of its own: the same sampler mode (``sampling.sample_indices``) over the frames
whose timestamps fall inside it.
"""

from __future__ import annotations

import math
import random

from ...core.errors import ConfigError
from .sampling import sample_indices

#: Default window and stride (seconds) of ``hybridtower index``: see docs/index.md ("Moments in long videos").
DEFAULT_WINDOW = 30.0
DEFAULT_STRIDE = 15.0
#: At most this many windows per file (a 2-hour file at the defaults has 479); longer files get a stride
#: scaled up to fit, so a corrupt header claiming years of video cannot make a run encode forever.
MAX_WINDOWS = 20000


def check_window(window: float, stride: float | None) -> tuple[float, float]:
    """Validated ``(window, stride)`` (``window`` 0 = one row per file; ``stride`` None = ``window / 2``)."""
    try:
        window = float(window)
        stride = window / 2 if stride is None else float(stride)
    except (TypeError, ValueError):
        raise ConfigError(f"--window and --stride must be numbers of seconds, got {window!r} / {stride!r}") from None
    if not (math.isfinite(window) and window >= 0):
        raise ConfigError(f"--window must be >= 0 seconds (0 = one vector per file), got {window}")
    if window == 0:
        return 0.0, 0.0
    if not (math.isfinite(stride) and 0 < stride <= window):
        raise ConfigError(f"--stride must be > 0 and at most --window ({window:g} s), got {stride}")
    if window < 1.0:
        raise ConfigError(f"--window must be at least 1 second (or 0 for one vector per file), got {window}")
    return window, stride


def plan_windows(duration: float, window: float, stride: float) -> list[tuple[float, float]] | None:
    """The ``(start, end)`` seconds of each window of a ``duration``-second video, or None when the video is
    one whole-file item (``window`` 0, or ``duration <= window``)."""
    if not (math.isfinite(window) and math.isfinite(stride)) or (window > 0 and stride <= 0):
        raise ValueError(f"window and stride must be finite seconds with stride > 0, got {window!r} / {stride!r}")
    if window <= 0 or not math.isfinite(duration) or duration <= window:
        return None
    count = math.ceil((duration - window) / stride - 1e-9) + 1
    if count > MAX_WINDOWS:
        stride = (duration - window) / (MAX_WINDOWS - 1)
        count = MAX_WINDOWS
    out = []
    for i in range(count):
        start = round(i * stride, 6)
        out.append((start, round(min(start + window, duration), 6)))
    if out[-1][1] < duration:  # rounding: the last window always reaches the end
        out[-1] = (out[-1][0], round(duration, 6))
    return out


def window_indices(num_frames: int, fps: float, start: float, end: float, num_samples: int, mode: str,
                   rng: random.Random | None = None) -> list[int]:
    """``num_samples`` frame indices (of a ``num_frames``-frame, ``fps`` video) sampled with ``mode`` among
    the frames shown in ``[start, end)`` seconds (at least one frame). A video without frames, a frame rate
    that is not a finite positive number or a window that is not finite raises ValueError (a broken header:
    the caller skips the file) instead of sampling frame -1 or a meaningless range."""
    if int(num_frames) < 1:
        raise ValueError(f"the video has no frames ({num_frames}) to sample a window from")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"the video's frame rate {fps!r} is not a positive number")
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"the window {start!r}-{end!r} s is not a finite time range")
    lo = min(num_frames - 1, max(0, int(math.floor(start * fps + 1e-6))))
    hi = min(num_frames, max(lo + 1, int(math.ceil(end * fps - 1e-6))))
    return [lo + i for i in sample_indices(hi - lo, num_samples, mode, rng)]


def split_range(start: float, end: float, parts: int) -> list[tuple[float, float]]:
    """``[start, end]`` cut into ``parts`` equal consecutive ranges (PIG-M: a pseudo-query per segment)."""
    step = (end - start) / parts
    return [(round(start + i * step, 6), round(start + (i + 1) * step if i < parts - 1 else end, 6)) for i in range(parts)]
