"""Which frames to read: pure, seedable frame-index samplers over ``num_frames`` integers.

Modes (``T`` = ``num_samples``, ``n`` = ``num_frames``):

``uniform``  segment middles: the clip is cut into ``T`` equal segments and the middle frame of each is
             taken, ``floor((2k + 1) * n / (2T))``. X-Pool / CLIP4Clip test-time sampling; our default for
             evaluation and indexing.
``linspace`` ``round-down(linspace(0, n - 1, T))``: the PIG / CLIP-ViP release's test-time sampler (first
             and last frame included).
``jitter``   the PIG release's train-time sampler (method.md §3.1): ``interval = n // (T - 1)``,
             ``start`` uniform in ``[0, interval]``, ``end`` uniform in ``[n - 1 - interval, n - 1]``,
             then ``linspace(start, end, T)`` rounded down.
``random``   one frame uniformly at random inside each of the ``T`` segments (X-Pool's train option).

Short videos (``n < T``): every mode still returns exactly ``T`` indices, in non-decreasing order, so
frames repeat (each frame about ``T / n`` times). Models therefore always see ``T`` frames; a
one-frame video becomes ``T`` copies of its frame.
"""

from __future__ import annotations

import math
import random

from ...core.errors import ConfigError

SAMPLING_MODES = ("uniform", "linspace", "jitter", "random")


def sample_indices(
    num_frames: int, num_samples: int, mode: str = "uniform", rng: random.Random | None = None
) -> list[int]:
    """``num_samples`` frame indices in ``[0, num_frames)``, sorted, following ``mode`` (see module doc).

    ``rng`` is only used by ``jitter`` and ``random``; without one those modes use a fresh
    ``random.Random(0)`` so results stay reproducible.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if mode not in SAMPLING_MODES:
        raise ConfigError(f"unknown frame sampling mode {mode!r}; choose one of {list(SAMPLING_MODES)}")
    n, t = num_frames, num_samples
    rng = rng or random.Random(0)
    if mode == "uniform":
        return [min(n - 1, ((2 * k + 1) * n) // (2 * t)) for k in range(t)]
    if mode == "linspace":
        return _linspace(0, n - 1, t)
    if mode == "jitter":
        interval = n // (t - 1) if t > 1 else n - 1
        start = rng.randint(0, interval) if interval > 0 else 0
        end = rng.randint(n - 1 - interval, n - 1) if interval > 0 else n - 1
        start, end = min(start, n - 1), max(end, 0)
        if end < start:
            start, end = end, start
        return _linspace(start, end, t)
    # random: one frame inside each segment [k*n/t, (k+1)*n/t)
    out = []
    for k in range(t):
        lo = (k * n) // t
        hi = max(lo, math.ceil((k + 1) * n / t) - 1)
        out.append(min(n - 1, rng.randint(lo, hi)))
    return out


def _linspace(start: int, end: int, t: int) -> list[int]:
    if t == 1:
        return [start]
    step = (end - start) / (t - 1)
    return [int(math.floor(start + k * step + 1e-9)) for k in range(t)]
