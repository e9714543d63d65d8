"""Test helper: run a call that must not block, and fail (instead of hanging the suite) if it does."""
from __future__ import annotations

import threading


def within(seconds: float, fn, *args):
    """``fn(*args)`` in a daemon thread; its value, or its exception re-raised; an AssertionError if it is
    still running after ``seconds``."""
    box = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{getattr(fn, '__name__', fn)} blocked for more than {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]
