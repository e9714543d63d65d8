"""Long synthetic videos whose described event sits in one time range: ``write_long_video``.

For the moment-window index (``hybridtower index --window``), its tests, benchmark and demo. The video is
low resolution and low frame rate (default 64x64 at 2 fps, H.264 with a key frame every 10 s), so a
2-hour file is a few MB and is written in about a minute, frame by frame (memory stays bounded).

Between ``event_start`` and ``event_end`` the video shows one scene of the synthetic benchmark (shapes,
motions, a short event: :mod:`.scene`), rendered over that many frames; ``caption`` describes it with
the benchmark's own templates (:mod:`.captions`). Everywhere else it shows ``filler``: the same scene's
plain background (``"blank"``, default) or further ``extra_events`` scenes at given times, each with
its own caption (so a test can check that each caption finds its own window, not just "shapes vs
nothing"). Everything is a pure function of the arguments (``seed``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.errors import ConfigError
from ...core.io import atomic_path
from .captions import make_caption
from .scene import render_frames, sample_scene


def _scene(rng: np.random.Generator, frames: int, avoid: set):
    """A random scene whose subject (shape, colour) is not in ``avoid`` (events of one video stay apart)."""
    for _ in range(200):
        scene = sample_scene(rng, frames)
        subj = scene.objects[0]
        if (subj.shape, subj.colour) not in avoid and subj.colour not in {c for _, c in avoid}:
            return scene
    return scene


def write_long_video(path, duration_s: float, event_start_s: float, event_end_s: float, *, seed: int = 0,
                     fps: int = 2, size: int = 64, caption_kind: str = "event_motion",
                     extra_events: list[tuple[float, float]] = (), gop_seconds: float = 10.0) -> dict:
    """Write a ``duration_s``-second video to ``path`` (.mp4, H.264) whose scene described by the returned
    ``caption`` is shown in ``[event_start_s, event_end_s)``; the rest is the scene's blank background, or
    the scenes of ``extra_events`` (each a (start, end) range; their captions in ``"extra"``).

    Returns ``{"caption", "event_start", "event_end", "duration", "fps", "frames", "size", "seed",
    "extra": [{"caption", "event_start", "event_end"}]}``."""
    if not (duration_s > 0 and fps >= 1 and size >= 16 and size % 2 == 0):
        raise ConfigError("write_long_video: duration > 0, fps >= 1 and an even size >= 16 are required")
    ranges = [(float(event_start_s), float(event_end_s))] + [(float(a), float(b)) for a, b in extra_events]
    for a, b in ranges:
        if not 0 <= a < b <= duration_s or (b - a) * fps < 4:
            raise ConfigError(f"an event range {a:g}-{b:g} s must lie inside the video and last at least 4 frames")
    ordered = sorted(ranges)
    if any(ordered[i][1] > ordered[i + 1][0] for i in range(len(ordered) - 1)):
        raise ConfigError("event ranges must not overlap")
    rng = np.random.default_rng([seed, 7919])
    total = int(round(duration_s * fps))
    events, avoid = [], set()
    for a, b in ranges:
        first, last = int(round(a * fps)), int(round(b * fps))
        scene = _scene(rng, last - first, avoid)
        subj = scene.objects[0]
        avoid.add((subj.shape, subj.colour))
        caption = make_caption(scene, caption_kind, rng)
        events.append((first, last, scene, caption))
    background = events[0][2].background
    blank = np.empty((size, size, 3), np.uint8)
    blank[:] = background
    _write(Path(path), total, fps, size, gop_seconds, events, blank)
    main = events[0]
    return {
        "caption": main[3], "event_start": main[0] / fps, "event_end": main[1] / fps, "duration": total / fps,
        "fps": fps, "frames": total, "size": size, "seed": seed, "subject": _subject(main[2]),
        "extra": [{"caption": c, "event_start": f / fps, "event_end": l / fps, "subject": _subject(s)}
                  for f, l, s, c in events[1:]],
    }


def _subject(scene) -> dict:
    s = scene.objects[0]
    return {"shape": s.shape, "colour": s.colour, "motion": s.motion, "event": s.event}


def _write(path: Path, total: int, fps: int, size: int, gop_seconds: float, events, blank: np.ndarray) -> None:
    import av

    starts = {first: (first, last, scene) for first, last, scene, _ in events}
    with atomic_path(path) as tmp:
        container = av.open(str(tmp), mode="w", format="mp4")
        try:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
            gop = max(1, int(round(gop_seconds * fps)))
            stream.options = {"crf": "18", "preset": "veryfast", "threads": "1", "g": str(gop),
                              "keyint_min": str(gop), "sc_threshold": "0"}
            i = 0
            while i < total:
                if i in starts:  # render one event's scene (a few hundred frames at most) and write it
                    first, last, scene = starts[i]
                    frames = render_frames(scene, size, size)
                    for j in range(last - first):
                        _mux(container, stream, frames[j], i + j)
                    i = last
                    continue
                _mux(container, stream, blank, i)
                i += 1
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()


def _mux(container, stream, arr: np.ndarray, pts: int) -> None:
    import av

    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
    frame.pts = pts
    for packet in stream.encode(frame):
        container.mux(packet)


__all__ = ["write_long_video"]
