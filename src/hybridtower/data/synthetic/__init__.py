"""The synthetic benchmark: scenes that need fine-grained (frame-local, object-bound) evidence.

See :mod:`.scene` for the scene model, :mod:`.captions` for the caption kinds and
:mod:`.generate` for the files written by ``hybridtower synth``.
"""

from .generate import VIDEO_FORMATS, SynthConfig, generate, write_video
from .scene import COLOURS, EVENTS, MOTIONS, SHAPES, Scene, SceneObject, render_frames, sample_scene

__all__ = [
    "VIDEO_FORMATS",
    "SynthConfig",
    "generate",
    "write_video",
    "COLOURS",
    "EVENTS",
    "MOTIONS",
    "SHAPES",
    "Scene",
    "SceneObject",
    "render_frames",
    "sample_scene",
]
