"""Following the index while serving: pick up a new generation without a restart.

:class:`LiveSearcher` holds the searcher requests use. At most every ``interval_s`` seconds (checked when a
request asks for the searcher, so an idle server does nothing) it stats ``INDEX_DIR/manifest.json``
(inode, size, modification time: a commit replaces the file atomically, so a new commit changes them).
When they changed and the manifest differs from the served one (its generation, or anything else: an
``--overwrite`` starts counting generations again), a background thread
opens the new generation completely (``reopen()``: index files and, if the manifest names another model,
that model) and then swaps one reference. Requests in flight keep the searcher they started with; new
requests get the new one. When the new generation cannot be opened the old one keeps serving and
:meth:`LiveSearcher.status` (shown by ``/healthz``) says so, without server paths; the next change of
the manifest is tried again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..core.display import printable

log = logging.getLogger("hybridtower.service")

MANIFEST = "manifest.json"


def _generation(searcher) -> int | None:
    manifest = getattr(searcher, "manifest", None)
    if isinstance(manifest, dict) and isinstance(manifest.get("generation"), int):
        return manifest["generation"]
    return None


class LiveSearcher:
    """``current()`` -> the searcher of the newest generation that could be opened."""

    def __init__(self, searcher, index_dir: str | Path | None = None, reopen: Callable[[], Any] | None = None,
                 interval_s: float = 2.0, clock=time.monotonic):
        self._searcher = searcher
        self.index_dir = Path(index_dir) if index_dir is not None else None
        self._reopen = reopen
        self.interval_s = float(interval_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._next_check = clock() + self.interval_s
        self._seen = None  # the first check compares the manifest's generation with the served one
        self._loading: threading.Thread | None = None
        self.reloads = 0
        self.error: str | None = None  # safe to show (no paths)
        self.failed_generation: int | None = None

    @property
    def enabled(self) -> bool:
        return self.index_dir is not None and self._reopen is not None and self.interval_s >= 0

    def current(self):
        """The searcher to use for one request (after a cheap, rate-limited check for a new generation)."""
        if self.enabled and self._clock() >= self._next_check:
            self.check()
        return self._searcher

    def _fingerprint(self):
        if self.index_dir is None:
            return None
        try:
            st = os.stat(self.index_dir / MANIFEST)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def check(self, wait: bool = False) -> bool:
        """Look for a new generation now; start loading it if there is one (``wait``: load it in this
        thread and return when swapped or failed). True when a load was started or done."""
        if not self.enabled:
            return False
        with self._lock:
            self._next_check = self._clock() + self.interval_s
            if self._loading is not None and self._loading.is_alive():
                thread = self._loading if wait else None
            else:
                thread = None
                fp = self._fingerprint()
                if fp is None or fp == self._seen:
                    return False
                self._seen = fp
                manifest = self._read_manifest()
                if manifest is not None and manifest == getattr(self._searcher, "manifest", None):
                    self.error = self.failed_generation = None  # e.g. a broken commit was rolled back
                    return False  # the same commit (an --overwrite restarts the generation count: compare all)
                gen = manifest.get("generation") if manifest is not None else None
                if wait:
                    self._load(gen)
                    return True
                self._loading = threading.Thread(target=self._load, args=(gen,), name="hybridtower-reload", daemon=True)
                self._loading.start()
                return True
        if thread is not None:
            thread.join()
            return True
        return False

    def _read_manifest(self) -> dict | None:
        from ..index.store import read_manifest

        try:
            return read_manifest(self.index_dir)
        except Exception:  # noqa: BLE001 - reported by the load attempt
            return None

    def _load(self, gen: int | None) -> None:
        t0 = time.perf_counter()
        try:
            new = self._reopen()
        except Exception as exc:  # noqa: BLE001 - keep serving the old generation
            old = _generation(self._searcher)
            self.failed_generation = gen
            self.error = (f"generation {gen if gen is not None else '?'} of the index could not be opened "
                          f"({type(exc).__name__}); still serving generation {old}")
            log.error("index reload failed, still serving generation %s: %s", old, printable(exc))
            return
        self._searcher = new  # one reference swap: requests in flight keep the old object
        self.reloads += 1
        self.error = None
        self.failed_generation = None
        log.info("serving index generation %s (%d videos), opened in %.1f s", _generation(new), len(new),
                 time.perf_counter() - t0)

    def wait_idle(self, timeout: float | None = None) -> None:
        """Wait for a background load (tests)."""
        thread = self._loading
        if thread is not None:
            thread.join(timeout)

    def status(self) -> dict:
        out: dict = {"generation": _generation(self._searcher), "reloads": self.reloads,
                     "follows_index": self.enabled}
        if self.error:
            out["reload_error"] = self.error
        if self._loading is not None and self._loading.is_alive():
            out["reloading"] = True
        return out
