"""Facts about the machine a benchmark ran on (CPU, threads, library versions, free memory)."""

from __future__ import annotations

import os
import platform

__all__ = ["available_memory_bytes", "machine_info"]


def available_memory_bytes(device="cpu") -> int | None:
    import torch

    if str(device).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info()
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_info(device="cpu") -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if str(device).startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import faiss

        info["faiss"] = faiss.__version__
        info["faiss_threads"] = faiss.omp_get_max_threads()
    except ImportError:
        info["faiss"] = None
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
