"""Wall-clock timing of benchmark calls: median of repeats, and round-robin timing of several calls so that
drift in machine load hits all of them alike."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

__all__ = ["Timing", "time_call", "time_round_robin"]


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    mean_ms: float
    repeats: int

    def to_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def sync_device(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _timing(samples: list[float]) -> Timing:
    ms = [s * 1e3 for s in samples]
    return Timing(statistics.median(ms), min(ms), statistics.fmean(ms), len(ms))


def _adaptive(repeats: int, estimate_s: float, min_seconds: float, max_repeats: int = 200) -> int:
    """At least ``repeats``; more for fast calls, so that each measurement spans ``min_seconds``."""
    if min_seconds <= 0 or estimate_s <= 0:
        return repeats
    return int(min(max(repeats, math.ceil(min_seconds / estimate_s)), max(repeats, max_repeats)))


def time_call(fn: Callable, repeats: int = 5, warmup: int = 1, device="cpu", min_seconds: float = 0.0) -> Timing:
    """Median wall time of ``fn()`` over ``repeats`` calls (more if ``min_seconds`` asks) after ``warmup``."""
    import torch

    with torch.no_grad():
        est = 0.0
        for _ in range(max(warmup, 1 if min_seconds else 0)):
            t0 = time.perf_counter()
            fn()
            sync_device(device)
            est = time.perf_counter() - t0
        samples = []
        for _ in range(_adaptive(repeats, est, min_seconds)):
            t0 = time.perf_counter()
            fn()
            sync_device(device)
            samples.append(time.perf_counter() - t0)
    return _timing(samples)


def time_round_robin(fns: dict[str, Callable], repeats: int = 5, warmup: int = 1, device="cpu",
                     min_seconds: float = 0.0) -> dict[str, Timing]:
    """Time several functions in alternation (a, b, b, a, a, b, ...), so that drift in machine load hits all."""
    import torch

    samples: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        est = 0.0
        for _ in range(max(warmup, 1 if min_seconds else 0)):
            t0 = time.perf_counter()
            for fn in fns.values():
                fn()
            sync_device(device)
            est = time.perf_counter() - t0
        for r in range(_adaptive(repeats, est, min_seconds)):
            names = list(fns) if r % 2 == 0 else list(reversed(fns))
            for name in names:
                t0 = time.perf_counter()
                fns[name]()
                sync_device(device)
                samples[name].append(time.perf_counter() - t0)
    return {k: _timing(v) for k, v in samples.items()}
