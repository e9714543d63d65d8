"""Test helpers: a few synthetic clips and a tiny random checkpoint, the inputs of most index tests."""
from __future__ import annotations

from pathlib import Path

import torch


def make_videos(folder: Path, n: int = 5, seed: int = 0, frames: int = 8) -> list[Path]:
    """``n`` 64x64 synthetic clips written under ``folder`` (``hybridtower synth`` layout), sorted."""
    from hybridtower.data.synthetic import SynthConfig, generate

    generate(folder, SynthConfig(videos=n, images=0, frames=frames, sizes=("64x64",), seed=seed, workers=0),
             progress=False)
    return sorted((folder / "videos").iterdir())


def save_tiny(path: Path, preset: str = "pig-tiny", seed: int = 0) -> Path:
    """A randomly initialised ``preset`` (torch seed ``seed``) saved as a checkpoint at ``path``."""
    from hybridtower import hub

    torch.manual_seed(seed)
    hub.save_model(hub.create_model(preset).eval(), path)
    return path


def write_ramp_video(path: Path, frames: int, fps: int, fmt: str, options: dict | None = None,
                     gop: int | None = None) -> Path:
    """A 32x32 MPEG-4 Part 2 clip of ``frames`` frames at ``fps`` in container ``fmt`` (each frame one grey
    level, rising by 5 per frame), muxed with ``options`` (e.g. ``{"movflags": "faststart"}``)."""
    import av
    import numpy as np

    with av.open(str(path), "w", format=fmt, options=options or {}) as c:
        st = c.add_stream("mpeg4", rate=fps)
        st.width = st.height = 32
        st.pix_fmt = "yuv420p"
        if gop:
            st.gop_size = gop
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), (i * 5) % 255, np.uint8), format="rgb24")
            f.pts = i
            for p in st.encode(f):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    return path
