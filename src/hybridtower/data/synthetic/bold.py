"""The ``bold`` scene style of the ``scenes`` kind: every scene recognisable in ONE frame.

The first ``scenes`` design (style ``fine``: small subjects, 2-frame events, dark backgrounds) asked a
tiny CLIP for evidence it could not see: every framework ended near chance and the premise check
(query-conditioned pooling beats mean pooling) could not pass (docs/comparison.md). In the ``bold`` style
the only difficulty left is the one the premise is about, that a caption describes ONE of the clip's
scenes:

* a scene is a plain, brightly coloured background (one of :data:`BACKGROUNDS`, named in the captions),
  a large main object and a smaller second object (shape x colour), both still, visible in every frame;
* consecutive scenes of a clip differ in background and in main object;
* captions name what any single frame of their scene shows ("a large red circle and a small blue square
  on a grey background", "a red circle on grey", "a yellow triangle next to a white diamond");
* the still images for the CLIP's pretraining are drawn from the same scenes with the same captions, so
  the CLIP can learn single-frame recognition; a video model then only has to find the right scene.

A mean over the clip's frames mixes the caption's scene with 1-3 others; a pooling conditioned on the
query can pick the caption's frames. Everything is a pure function of the random generator passed in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .scene import COLOURS, SHAPES, _mask

BACKGROUNDS = {
    "black": (18, 18, 18),
    "grey": (125, 125, 125),
    "brown": (115, 70, 30),
    "teal": (0, 120, 120),
    "pink": (245, 160, 195),
    "navy": (20, 30, 95),
}
MAIN_RADIUS = 0.27  # as a fraction of min(width, height)
SECOND_RADIUS = 0.16
CAPTION_CYCLE = ("full", "pair", "main", "full", "pair")

_BG_PHRASES = ("on a {bg} background", "against a {bg} background", "on {bg}", "in front of a {bg} backdrop")
_PAIR_PHRASES = ("next to", "beside", "and", "with")


@dataclass
class BoldObject:
    shape: str
    colour: str
    x: float  # centre in [0, 1] frame coordinates
    y: float

    def noun(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass
class BoldScene:
    num_frames: int
    background: str  # a key of BACKGROUNDS
    objects: list[BoldObject] = field(default_factory=list)  # [main (large), second (small)]

    def to_dict(self) -> dict:
        return asdict(self)


def sample_bold_scene(rng: np.random.Generator, num_frames: int, avoid: BoldScene | None = None) -> BoldScene:
    """A background and two objects with different (shape, colour); ``avoid``'s background and main object
    are not reused (consecutive scenes of a clip look different in every frame)."""
    backgrounds = [b for b in BACKGROUNDS if avoid is None or b != avoid.background]
    bg = backgrounds[int(rng.integers(len(backgrounds)))]
    colours = list(COLOURS)
    while True:
        main = (SHAPES[int(rng.integers(len(SHAPES)))], colours[int(rng.integers(len(colours)))])
        if avoid is None or main != (avoid.objects[0].shape, avoid.objects[0].colour):
            break
    while True:
        second = (SHAPES[int(rng.integers(len(SHAPES)))], colours[int(rng.integers(len(colours)))])
        if second != main:
            break
    # main on one side, second on the other (left/right or top/bottom), a little jitter
    horizontal = rng.random() < 0.5
    flip = rng.random() < 0.5
    a, b = (0.33, 0.74) if not flip else (0.67, 0.26)
    j = rng.uniform(-0.04, 0.04, size=4)
    if horizontal:
        pos = [(a + j[0], 0.5 + j[1]), (b + j[2], 0.5 + j[3])]
    else:
        pos = [(0.5 + j[0], a + j[1]), (0.5 + j[2], b + j[3])]
    objects = [BoldObject(main[0], main[1], *pos[0]), BoldObject(second[0], second[1], *pos[1])]
    return BoldScene(num_frames=num_frames, background=bg, objects=objects)


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def bold_caption(scene: BoldScene, kind: str, rng: np.random.Generator) -> str:
    """``full``: both objects and the background; ``main``: the main object and the background;
    ``pair``: both objects."""
    main, second = scene.objects
    art = "a" if rng.random() < 0.7 else "the"
    big = "large " if rng.random() < 0.5 else ""
    small = "small " if rng.random() < 0.5 else ""
    bg = _pick(rng, _BG_PHRASES).format(bg=scene.background)
    if kind == "full":
        text = f"{art} {big}{main.noun()} {_pick(rng, _PAIR_PHRASES)} a {small}{second.noun()} {bg}"
    elif kind == "main":
        text = f"{art} {big}{main.noun()} {bg}"
    elif kind == "pair":
        text = f"{art} {big}{main.noun()} {_pick(rng, _PAIR_PHRASES)} a {small}{second.noun()}"
    else:
        raise ValueError(f"unknown bold caption kind {kind!r}")
    return " ".join(text.split())


def bold_captions(scene: BoldScene, count: int, rng: np.random.Generator) -> list[str]:
    """``count`` distinct captions of one scene (for a still image), kinds cycling."""
    out: list[str] = []
    tries = 0
    while len(out) < count and tries < count * 20:
        text = bold_caption(scene, CAPTION_CYCLE[len(out) % len(CAPTION_CYCLE)], rng)
        tries += 1
        if text not in out:
            out.append(text)
    return out


def render_bold(scene: BoldScene, width: int, height: int) -> np.ndarray:
    """uint8 ``[F, H, W, 3]``: the same still picture in every frame (the scene is readable from any one)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    base = min(width, height)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = BACKGROUNDS[scene.background]
    second, main = scene.objects[1], scene.objects[0]
    for obj, r in ((second, SECOND_RADIUS), (main, MAIN_RADIUS)):  # main drawn last (on top)
        img[_mask(obj.shape, xx, yy, obj.x * width, obj.y * height, r * base)] = COLOURS[obj.colour]
    return np.repeat(img[None], scene.num_frames, axis=0)
