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
