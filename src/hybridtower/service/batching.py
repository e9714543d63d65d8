"""Dynamic batching of query encodes, and an LRU cache of query vectors.

Encoding one query at a time leaves most of the text tower's cost in per-call overhead; concurrent
requests are better served by one batched encode. :class:`QueryBatcher` collects the texts of concurrent
requests and encodes them together with ``searcher.encode_queries(texts)`` (one call per searcher, in one
worker thread, so encodes never overlap):

- a batch is sent when it holds ``max_batch`` texts, or when ``window_s`` has passed since its FIRST
  text arrived, whichever is first: no text waits longer than ``window_s`` to be sent (it may then wait
  for the encode in progress before its own, as it would for a lock);
- a text submitted ``alone`` (the caller knows nothing else is in flight: one user, an idle server) has
  a window of 0: waiting could only add latency. Texts arriving meanwhile still join it;
- a batch mixes texts for different searchers (an index reload in between) only by encoding each
  searcher's texts with that searcher's model;
- an encode error fails exactly the requests of that call.

The timing rule lives in :class:`BatchWindow` (pure, clock passed in), so it is tested without sleeping.

:class:`VectorCache` is a bounded LRU of query vectors keyed by (model, cleaned text): repeated queries
skip the encode entirely.

:class:`FifoLock` serves the unbatched mode (``--no-batching``): one search at a time, in the order the
requests asked. ``threading.Lock`` is not FIFO (a releasing or newly arriving thread may take it again
before the longest waiter wakes), which starved some requests under load (p99 7.4 s against a p90 of
0.37 s at 50 clients, docs/service.md).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

log = logging.getLogger("hybridtower.service")

DEFAULT_WINDOW_MS = 2.0
DEFAULT_MAX_BATCH = 32
DEFAULT_CACHE_SIZE = 4096


@dataclass
class _Item:
    searcher: Any
    text: str
    arrived: float
    future: Future = field(default_factory=Future)
    finish: Callable[[np.ndarray], Any] | None = None
    alone: bool = False  # nothing else in flight: no window


class BatchWindow:
    """The batching rule: pending items, and when the oldest must go.

    ``add(item)``; ``due(now)`` -> True when a batch must be sent now (full, or the first pending item
    has waited ``window_s``); ``wait_s(now)`` -> how long the worker may still wait; ``take()`` -> up to
    ``max_batch`` items, oldest first.
    """

    def __init__(self, window_s: float, max_batch: int):
        if window_s < 0 or max_batch < 1:
            raise ValueError("need window_s >= 0 and max_batch >= 1")
        self.window_s = float(window_s)
        self.max_batch = int(max_batch)
        self.pending: list[_Item] = []

    def add(self, item: _Item) -> None:
        self.pending.append(item)

    def deadline(self) -> float | None:
        if not self.pending:
            return None
        first = self.pending[0]
        return first.arrived + (0.0 if first.alone else self.window_s)

    def due(self, now: float) -> bool:
        return bool(self.pending) and (len(self.pending) >= self.max_batch or now >= self.deadline())

    def wait_s(self, now: float) -> float | None:
        """Seconds until the oldest pending item is due (None: nothing pending)."""
        if not self.pending:
            return None
        return 0.0 if self.due(now) else self.deadline() - now

    def take(self) -> list[_Item]:
        batch, self.pending = self.pending[:self.max_batch], self.pending[self.max_batch:]
        return batch


class QueryBatcher:
    """``encode(searcher, text) -> np.ndarray [D]`` (blocking) / ``await aencode(...)``, batched across callers."""

    def __init__(self, window_ms: float = DEFAULT_WINDOW_MS, max_batch: int = DEFAULT_MAX_BATCH, *, clock=time.monotonic):
        self._window = BatchWindow(window_ms / 1000.0, max_batch)
        self._clock = clock
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.batches = 0  # encode calls made (tests, /healthz)
        self.encoded = 0  # texts encoded
        self.largest = 0  # largest batch so far

    @property
    def window_ms(self) -> float:
        return self._window.window_s * 1000.0

    @property
    def max_batch(self) -> int:
        return self._window.max_batch

    def submit(self, searcher, text: str, finish: Callable[[np.ndarray], Any] | None = None, *,
               alone: bool = False) -> Future:
        """Queue ``text`` for ``searcher``; the future resolves to its vector [D] (float32), or, with
        ``finish``, to ``finish(vector)`` run in the worker right after the encode (the service ranks
        there: one thread hand-off less per request; an error in it fails only that request).
        ``alone``: the caller has nothing else in flight; the text does not wait for the window."""
        item = _Item(searcher, text, self._clock(), finish=finish, alone=alone)
        with self._cond:
            if self._closed:
                raise RuntimeError("the query batcher is closed")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="hybridtower-batcher", daemon=True)
                self._thread.start()
            self._window.add(item)
            self._cond.notify()
        return item.future

    def encode(self, searcher, text: str, timeout: float | None = None) -> np.ndarray:
        return self.submit(searcher, text).result(timeout)

    async def aencode(self, searcher, text: str, finish: Callable[[np.ndarray], Any] | None = None, *,
                      alone: bool = False):
        return await asyncio.wrap_future(self.submit(searcher, text, finish, alone=alone))

    def poke(self) -> None:
        """Wake the worker to re-read the clock (tests with a controlled clock)."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed and not self._window.pending:
                        return
                    wait = self._window.wait_s(self._clock())
                    if wait == 0.0 or (self._closed and self._window.pending):
                        batch = self._window.take()
                        break
                    self._cond.wait(wait)  # None: until something arrives
            self._encode(batch)

    def _encode(self, batch: list[_Item]) -> None:
        groups: dict[int, list[_Item]] = {}
        for item in batch:
            groups.setdefault(id(item.searcher), []).append(item)
        for items in groups.values():
            live = [it for it in items if it.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                vectors = np.asarray(live[0].searcher.encode_queries([it.text for it in live]), dtype=np.float32)
                if vectors.ndim != 2 or vectors.shape[0] != len(live):
                    raise RuntimeError(f"encode_queries returned shape {vectors.shape} for {len(live)} texts")
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting requests
                for it in live:
                    it.future.set_exception(exc)
                continue
            self.batches += 1
            self.encoded += len(live)
            self.largest = max(self.largest, len(live))
            for it, row in zip(live, vectors):
                if it.finish is None:
                    it.future.set_result(row)
                    continue
                try:
                    it.future.set_result(it.finish(row))
                except BaseException as exc:  # noqa: BLE001 - this request's own error
                    it.future.set_exception(exc)

    def stats(self) -> dict:
        return {"window_ms": self.window_ms, "max_batch": self.max_batch, "batches": self.batches,
                "encoded": self.encoded, "largest_batch": self.largest}


class FifoLock:
    """A lock granted strictly in the order it was asked for, to threads (``with lock:``) and to coroutines
    (``async with lock:``) alike.

    ``release`` hands the lock directly to the longest waiter (it stays held across the hand-off), so nobody
    can overtake a waiter. A coroutine cancelled while waiting leaves the queue; one cancelled just after
    the lock was handed to it passes it on. Not reentrant.
    """

    def __init__(self):
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque = deque()  # threading.Lock (a thread) or (loop, asyncio.Future) (a coroutine)

    def locked(self) -> bool:
        return self._held

    def waiting(self) -> int:
        return len(self._waiters)

    def acquire(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append(gate)
        gate.acquire()  # released by the hand-off: the lock is ours

    async def acquire_async(self) -> None:
        loop = asyncio.get_running_loop()
        with self._mutex:
            if not self._held:
                self._held = True
                return
            waiter = (loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await waiter[1]
        except asyncio.CancelledError:
            with self._mutex:
                queued = waiter in self._waiters
                if queued:
                    self._waiters.remove(waiter)
            if not queued and waiter[1].done() and not waiter[1].cancelled():
                self.release()  # handed to us as we were cancelled: pass it on
            # not queued and the future cancelled: the pending hand-off passes it on (_grant)
            raise

    def release(self) -> None:
        with self._mutex:
            if not self._held:
                raise RuntimeError("release of an unlocked FifoLock")
            if not self._waiters:
                self._held = False
                return
            nxt = self._waiters.popleft()
        if isinstance(nxt, tuple):
            loop, future = nxt
            try:
                loop.call_soon_threadsafe(self._grant, future)
            except RuntimeError:  # its event loop is closed: nobody waits there any more
                self.release()
        else:
            nxt.release()

    def _grant(self, future) -> None:
        if future.cancelled():
            self.release()  # its coroutine is gone: the next waiter
        else:
            future.set_result(True)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    async def __aenter__(self):
        await self.acquire_async()
        return self

    async def __aexit__(self, *exc) -> None:
        self.release()


class VectorCache:
    """Bounded LRU of query vectors: ``get(key)`` -> a copy or None, ``put(key, vector)``."""

    def __init__(self, max_items: int = DEFAULT_CACHE_SIZE):
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        self.max_items = int(max_items)
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key) -> np.ndarray | None:
        with self._lock:
            v = self._data.get(key)
            if v is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return v.copy()

    def put(self, key, vector: np.ndarray) -> None:
        v = np.array(vector, dtype=np.float32, copy=True)
        v.setflags(write=False)
        with self._lock:
            self._data[key] = v
            self._data.move_to_end(key)
            while len(self._data) > self.max_items:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key) -> bool:
        return key in self._data

    def stats(self) -> dict:
        return {"size": len(self._data), "max_items": self.max_items, "hits": self.hits, "misses": self.misses}
