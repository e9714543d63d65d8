"""Times of day in a video as people type and read them: ``750``, ``750.5``, ``12:30``, ``1:02:03``.

One parser for every surface that takes a time (the CLI's ``--start``, the service's ``start=`` and
``from=``), so ``12:99`` or ``1_000`` is refused everywhere alike."""

from __future__ import annotations

import math
import re

TIME_FORMS = "SECONDS, MM:SS or HH:MM:SS (e.g. 750, 750.5, 12:30, 1:02:03)"
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")  # ASCII digits only: no 1_000, 1e3, inf, nan, '٣'
_WHOLE = re.compile(r"[0-9]+")


def parse_time(text: str) -> float:
    """Seconds from ``"750"``, ``"750.5"``, ``"12:30"`` or ``"1:02:03"``; ValueError (one line that names the
    accepted forms) otherwise.

    After a ``:`` the minutes and seconds go up to 59 (``12:99`` and ``1:75:00`` are refused, not read as
    13:39 and 2:15:00); the first field is unbounded (``90:00`` is 90 minutes). Only ASCII digits and one
    decimal point in the seconds: what ``float()`` also takes (``1_000``, ``1e3``, ``inf``, other scripts'
    digits, inner spaces) is refused."""
    raw = str(text)
    parts = raw.strip().split(":")
    problem = ""
    if len(parts) > 3:
        problem = ": at most two ':'"
    elif _SECONDS.fullmatch(parts[-1]) and all(_WHOLE.fullmatch(p) for p in parts[:-1]):
        fields = [float(p) for p in parts]  # a whole field too long for a float is inf, refused below
        if any(v >= 60 for v in fields[1:]):  # minutes / seconds after a larger field
            problem = ": minutes and seconds after a ':' go up to 59"
        else:
            seconds = 0.0
            for v in fields:
                seconds = seconds * 60 + v
            if math.isfinite(seconds):
                return seconds
            problem = ": too large"
    from .display import printable

    shown = printable(raw if len(raw) <= 40 else raw[:40] + "...")
    raise ValueError(f"expected {TIME_FORMS}, got {shown!r}{problem}")


def format_time(seconds: float) -> str:
    """``750`` -> ``"12:30"``, ``3723`` -> ``"1:02:03"`` (whole seconds, rounded down)."""
    s = int(max(0.0, float(seconds)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
