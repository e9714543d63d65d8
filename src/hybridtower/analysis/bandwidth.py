"""Memory bandwidth, the floor of any search that reads every stored vector once.

- :func:`measure_read_bandwidth`: a read-only scan, ``torch.sum`` over one float32 array far larger than
  the caches (all torch threads), best of several runs: bytes read per second. This is what an exact
  search does (it reads the gallery, writes almost nothing), so it is the floor the search is held to.
- :func:`measure_copy_bandwidth`: ``dst.copy_(src)``, bytes read + written per second (STREAM's "copy"
  convention). Reported beside the read figure; it is lower on most machines (writes allocate cache lines
  and compete with reads), so a floor from it would flatter a search.

Both take the best repetition as the estimate of what the memory can deliver.
"""

from __future__ import annotations

import statistics
import time

from .timing import sync_device

__all__ = ["measure_read_bandwidth", "measure_copy_bandwidth", "measure_bandwidth", "floor_ms"]


def _best_and_median(fn, repeats: int, device) -> tuple[float, float]:
    fn()
    sync_device(device)
    samples = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        sync_device(device)
        samples.append(time.perf_counter() - t0)
    return min(samples), statistics.median(samples)


def measure_read_bandwidth(device="cpu", mbytes: int = 1024, repeats: int = 7, array=None) -> dict:
    """Read-only scan: ``torch.sum`` over ``mbytes`` MiB of float32 (or over ``array``, a tensor or numpy
    array, e.g. the gallery itself). Returns best / median GB/s (1e9 bytes per second)."""
    import numpy as np
    import torch

    if array is None:
        n = max(1, int(mbytes * 2**20) // 4)
        x = torch.ones(n, dtype=torch.float32, device=device)
    else:
        x = torch.from_numpy(array) if isinstance(array, np.ndarray) else array
    nbytes = x.numel() * x.element_size()
    best, med = _best_and_median(lambda: x.sum(), repeats, device)
    return {
        "method": f"torch sum over {nbytes / 2**20:.0f} MiB {str(x.dtype).replace('torch.', '')} on {device} "
                  f"({torch.get_num_threads()} threads); bytes read per second, best of {repeats}",
        "array_bytes": nbytes,
        "best_gbps": nbytes / best / 1e9,
        "median_gbps": nbytes / med / 1e9,
        "repeats": repeats,
    }


def measure_copy_bandwidth(device="cpu", mbytes: int = 512, repeats: int = 5) -> dict:
    """Copy benchmark: ``dst.copy_(src)`` on two ``mbytes`` MiB float32 arrays; ``2 * size / time``."""
    import torch

    n = max(1, int(mbytes * 2**20) // 4)
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    best, med = _best_and_median(lambda: dst.copy_(src), repeats, device)
    nbytes = 2 * n * 4
    return {
        "method": f"torch copy_ of {n * 4 / 2**20:.0f} MiB float32 on {device}; bytes read + written per second, "
                  f"best of {repeats}",
        "array_bytes": n * 4,
        "best_gbps": nbytes / best / 1e9,
        "median_gbps": nbytes / med / 1e9,
        "repeats": repeats,
    }


def measure_bandwidth(device="cpu", read_mbytes: int = 1024, copy_mbytes: int = 512, repeats: int = 5) -> dict:
    """Both figures, measured back to back. ``best_gbps`` (the floor's bandwidth) is the read scan's."""
    read = measure_read_bandwidth(device, read_mbytes, max(repeats, 5))
    copy = measure_copy_bandwidth(device, copy_mbytes, repeats)
    return {"floor_from": "read", "best_gbps": read["best_gbps"], "median_gbps": read["median_gbps"],
            "read": read, "copy": copy, "method": read["method"]}


def floor_ms(nbytes: int, gbps: float) -> float:
    """Milliseconds to read ``nbytes`` at ``gbps`` (1e9 bytes per second)."""
    return nbytes / (gbps * 1e9) * 1e3
