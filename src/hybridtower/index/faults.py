"""Fault injection for the crash tests (inactive unless the test environment variables are set).

``HYBRIDTOWER_TEST_PAUSE_AT=POINT[:N]`` makes the N-th visit of POINT write ``HYBRIDTOWER_TEST_PAUSE_FILE``
(``POINT:N:PID``) and block, so a test can SIGKILL the process exactly there.
``HYBRIDTOWER_TEST_TRACE_FILE=FILE`` appends every visit (``POINT:N``) to FILE, so a test can list the
points a run passes and pick kill points among them.
"""

from __future__ import annotations

import os
import time
from collections import Counter

_visits: Counter = Counter()


def reset() -> None:
    _visits.clear()


def pause_point(point: str) -> None:
    pause = os.environ.get("HYBRIDTOWER_TEST_PAUSE_AT")
    trace = os.environ.get("HYBRIDTOWER_TEST_TRACE_FILE")
    if not pause and not trace:
        return
    _visits[point] += 1
    n = _visits[point]
    if trace:
        with open(trace, "a") as fh:
            fh.write(f"{point}:{n}\n")
    if not pause:
        return
    name, _, nth = pause.partition(":")
    if name == point and n == int(nth or 1):
        with open(os.environ["HYBRIDTOWER_TEST_PAUSE_FILE"], "w") as fh:
            fh.write(f"{point}:{n}:{os.getpid()}\n")
        while True:  # wait for the test's SIGKILL
            time.sleep(0.05)
