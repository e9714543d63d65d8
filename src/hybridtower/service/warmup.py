"""Readying a server process before it answers: one warm-up encode per batch size, then a frozen heap.

Measured on the load test (benchmarks/load_test.py --trace, docs/service.md):

- **The heap.** Once the model, the index and the web app are loaded, the process tracks about 430 000
  Python objects (torch, FastAPI, open_clip ...). Every full (generation 2) garbage collection walks all of
  them: 0.3 s of CPU on the 2-core development machine, holding the GIL, so the event loop and the batcher
  stop and every request in flight waits. Requests leave enough surviving objects behind that such a
  collection comes every few hundred to thousand requests: at 50 clients that is the ~1 % of requests that
  took ~0.7 s in both modes. Traced (``load_test.py --trace``, tiny model, 50 clients, 1500 requests, load
  average ~12): one full collection ran during the timed run (439 692 objects, 286 ms of CPU, 1.8 s of wall
  time on the busy machine) and exactly the 50 requests in flight at its start took > 1.5 s (p99 3.1 s
  against a p90 of 0.8 s). :func:`freeze_heap` collects once and moves everything alive into the
  permanent generation (``gc.freeze()``): later collections walk only what was allocated after it. With
  it, in the same conditions, the full collection walked 12 185 objects in 5 ms of CPU and no request took
  > 1.5 s (p99 0.90 s, p90 0.81 s).
- **The first encode.** The first call of the text tower costs far more than later ones (100 ms of CPU
  against 5 ms for the tiny model: lazy initialisation in torch); later calls at a new batch size cost no
  more than repeated ones (measured for sizes 1-32), so one call at 1 and one at the largest batch suffice.

:func:`prepare_to_serve` does both. It belongs right before the server reports its address (after the index
is opened and the app built); after an index reload it may be called again for the new searcher (the new
model's objects are otherwise walked by full collections again). ``benchmarks/load_test.py
--prepare-server`` starts ``hybridtower serve`` through a launcher that does this.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger("hybridtower.service")

WARM_TEXT = "a warm-up query"


def warm_up_encoder(searcher, batch_sizes=(1,)) -> list[int]:
    """Encode a throw-away batch of each size in ``batch_sizes`` with ``searcher.encode_queries`` (if it has
    one; else one ``searcher.search``); returns the sizes encoded. Errors propagate: a model that cannot
    encode should stop the server before it reports ready."""
    encode = getattr(searcher, "encode_queries", None)
    if encode is None:
        searcher.search(WARM_TEXT, k=1)
        return [1]
    done = []
    for n in sorted({int(b) for b in batch_sizes if int(b) >= 1}):
        encode([f"{WARM_TEXT} {i}" for i in range(n)])
        done.append(n)
    return done


def freeze_heap() -> int:
    """Collect once, then freeze every object alive (``gc.freeze``); returns how many are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def prepare_to_serve(searcher, max_batch: int | None = None, *, freeze: bool = True) -> dict:
    """Warm the encoder (batch 1 and ``max_batch``, the batcher's largest) and freeze the heap; returns
    what was done (sizes, frozen objects, seconds) for the log."""
    t0 = time.perf_counter()
    sizes = warm_up_encoder(searcher, (1, max_batch or 1))
    frozen = freeze_heap() if freeze else 0
    info = {"warm_batch_sizes": sizes, "frozen_objects": frozen, "seconds": round(time.perf_counter() - t0, 3)}
    log.debug("ready to serve: %s", info)
    return info
