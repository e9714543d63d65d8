"""Decoding workers that die with their parent.

A DataLoader worker blocked in a slow decode would outlive an indexing process killed with SIGKILL (no
Python code runs to stop it) and keep the CPU and the file busy. ``die_with_parent`` asks the Linux
kernel to SIGKILL the worker when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and exits at once when
the parent is already gone; on other systems it does nothing.

``init_decode_worker`` (what ``worker_init_fn`` binds) also pins each worker to one torch thread (the
DataLoader does so today; this keeps it explicit): a decode worker handles one video at a time, and W
workers each running a full intra-op thread pool would fight the encoder in the main process for the
same cores. FFmpeg's own decoder threads are left as PyAV sets them: forcing one made decoding slower
(2 workers on 2 cores, 45 s clips: 4.03 -> 3.47 videos/s; docs/index.md, "Indexing throughput").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies. True when it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(worker_id: int = 0, *, parent_pid: int | None = None) -> None:
    """A DataLoader ``worker_init_fn``: bind the worker's life to its parent (see the module doc)."""
    set_parent_death_signal()
    if parent_pid is not None and os.getppid() != parent_pid:  # the parent died before the signal was set
        os._exit(1)


def init_decode_worker(worker_id: int = 0, *, parent_pid: int | None = None, threads: int = 1) -> None:
    """A DataLoader ``worker_init_fn``: die with the parent and run with ``threads`` torch thread(s)."""
    die_with_parent(worker_id, parent_pid=parent_pid)
    import torch

    torch.set_num_threads(max(1, int(threads)))


def worker_init_fn(threads: int = 1):
    """``init_decode_worker`` bound to the current process as the parent (pass it to the DataLoader)."""
    return functools.partial(init_decode_worker, parent_pid=os.getpid(), threads=threads)
