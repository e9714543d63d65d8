"""The ``scenes`` kind of the synthetic benchmark: clips of several scenes, captions about ONE scene.

On MSRVTT a caption describes part of a video (one shot, one action among several); a Two-Tower model
that pools every frame into one vector dilutes the caption's evidence with the rest of the clip, and a
query-conditioned pooling (X-Pool) can pick the frames the caption talks about. The ``shapes`` kind (one
scene per clip, every caption about it) does not have that property; this kind does:

* a clip is 2-4 scenes played one after another (``frames_per_scene`` rendered frames each), every
  scene with its own background and its own objects, motions and short events (:func:`.scene.sample_scene`);
* every caption describes a single scene, in the same words as the ``shapes`` kind (:mod:`.captions`),
  so the other scenes of the clip are irrelevant to it; each scene gets at least one caption;
* the details are fine-grained: the scene's subject is small with probability ``small_subject_p``, and
  its events (recolour, vanish) last 2 of the scene's frames.

Two scene styles: ``fine`` (the first design, above: small subjects, brief events) and ``bold``
(:mod:`.bold`: every scene readable from one frame; large objects on a named, bright background), which
the comparison uses since the ``fine`` style left every framework near chance (docs/comparison.md).

Everything is a pure function of the random generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import bold
from .captions import make_caption
from .scene import BACKGROUNDS, Scene, render_frames, sample_scene

CAPTION_CYCLE = ("event", "context", "event_motion", "event", "motion")
STYLES = ("fine", "bold")


@dataclass
class MultiSceneClip:
    scenes: list  # Scene (style fine) or bold.BoldScene (style bold)
    frames_per_scene: int
    style: str = "fine"

    @property
    def num_frames(self) -> int:
        return len(self.scenes) * self.frames_per_scene

    def scene_frames(self, index: int) -> tuple[int, int]:
        """[first, last) rendered frames of scene ``index``."""
        return index * self.frames_per_scene, (index + 1) * self.frames_per_scene

    def to_dict(self) -> dict:
        out = {"frames_per_scene": self.frames_per_scene, "scenes": [s.to_dict() for s in self.scenes]}
        if self.style != "fine":  # the fine style's records stay as they were
            out["style"] = self.style
        return out


def sample_clip(rng: np.random.Generator, num_scenes: tuple[int, int], frames_per_scene: int,
                small_subject_p: float, style: str = "fine") -> MultiSceneClip:
    """``num_scenes`` = (min, max) inclusive; consecutive scenes never share a background."""
    if style not in STYLES:
        raise ValueError(f"unknown scene style {style!r}; choose one of {STYLES}")
    n = int(rng.integers(num_scenes[0], num_scenes[1] + 1))
    if style == "bold":
        bold_scenes: list[bold.BoldScene] = []
        for _ in range(n):
            bold_scenes.append(bold.sample_bold_scene(rng, frames_per_scene, bold_scenes[-1] if bold_scenes else None))
        return MultiSceneClip(scenes=bold_scenes, frames_per_scene=frames_per_scene, style="bold")
    scenes: list[Scene] = []
    for _ in range(n):
        scene = sample_scene(rng, frames_per_scene)
        if rng.random() < small_subject_p:
            scene.objects[0].size = "small"
        if scenes and scene.background == scenes[-1].background:
            others = [b for b in BACKGROUNDS if b != scenes[-1].background]
            scene.background = others[int(rng.integers(len(others)))]
        scenes.append(scene)
    return MultiSceneClip(scenes=scenes, frames_per_scene=frames_per_scene)


def clip_captions(clip: MultiSceneClip, count: int, rng: np.random.Generator) -> list[tuple[str, str, int]]:
    """``count`` distinct ``(caption, kind, scene index)``; each describes one scene, every scene is described
    (when ``count`` >= the number of scenes), scenes in a random order, kinds cycling event-heavy."""
    n = len(clip.scenes)
    cycle = bold.CAPTION_CYCLE if clip.style == "bold" else CAPTION_CYCLE
    caption = bold.bold_caption if clip.style == "bold" else make_caption
    order = [int(i) for i in rng.permutation(n)]
    out: list[tuple[str, str, int]] = []
    seen: set[str] = set()
    per_scene = [0] * n
    tries = 0
    k = 0
    while len(out) < count and tries < count * 40:
        scene_index = order[k % n]
        kind = cycle[per_scene[scene_index] % len(cycle)]
        text = caption(clip.scenes[scene_index], kind, rng)
        tries += 1
        if text in seen:
            if tries % 5 == 0:  # this scene keeps repeating itself: move on to the next one
                k += 1
            continue
        seen.add(text)
        out.append((text, kind, scene_index))
        per_scene[scene_index] += 1
        k += 1
    return out


def render_clip(clip: MultiSceneClip, width: int, height: int) -> np.ndarray:
    """uint8 ``[num_frames, H, W, 3]``: the scenes' frames one after another (hard cuts)."""
    render = bold.render_bold if clip.style == "bold" else render_frames
    return np.concatenate([render(s, width, height) for s in clip.scenes], axis=0)
