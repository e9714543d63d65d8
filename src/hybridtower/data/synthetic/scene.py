"""Scenes of the synthetic benchmark: objects, motions, short events, and their rendering to RGB frames.

A scene is a handful of coloured shapes on a plain dark background. Each object has a shape, a colour,
a size and a motion (still / left / right / up / down). One object, the *subject*, has an event; often a
second object has a *distractor* event at another time. Events:

``recolour``   the object shows another colour for a few frames (2-3 of 12), then returns to its own
``vanish``     the object is invisible for a few frames, then back
``appear``     the object is absent until the event, then present to the end
``disappear``  the object is present until the event, then gone

Short events (recolour, vanish) last ``max(2, 15-25 %)`` of the clip's frames, so they survive uniform
sampling of 12 frames from up to about twice as many rendered frames, while a mean over 12 frames
dilutes them to 1/6 or less next to everything else in the clip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (225, 35, 35),
    "green": (40, 190, 60),
    "blue": (45, 85, 240),
    "yellow": (240, 215, 35),
    "white": (240, 240, 240),
    "purple": (165, 55, 215),
}
SIZES = {"small": 0.085, "large": 0.15}  # radius as a fraction of min(width, height)
MOTIONS = ("still", "left", "right", "up", "down")
EVENTS = ("recolour", "vanish", "appear", "disappear")
PHASES = ("start", "middle", "end")
BACKGROUNDS = ((12, 12, 12), (40, 40, 40), (28, 32, 28), (36, 30, 30))
TRAVEL = 0.42  # a moving object's displacement over the clip, as a fraction of the frame dimension


@dataclass
class SceneObject:
    shape: str
    colour: str
    size: str
    motion: str
    x0: float  # start centre, in [0, 1] frame coordinates
    y0: float
    event: str | None = None
    event_phase: str | None = None
    event_start: int = -1  # first frame of the event (inclusive)
    event_end: int = -1  # last frame of the event (exclusive)
    event_colour: str | None = None  # for recolour

    def centre(self, f: int, num_frames: int) -> tuple[float, float]:
        a = f / max(1, num_frames - 1)
        dx = {"left": -TRAVEL, "right": TRAVEL}.get(self.motion, 0.0)
        dy = {"up": -TRAVEL, "down": TRAVEL}.get(self.motion, 0.0)
        return self.x0 + a * dx, self.y0 + a * dy

    def visible(self, f: int) -> bool:
        if self.event == "vanish":
            return not (self.event_start <= f < self.event_end)
        if self.event == "appear":
            return f >= self.event_start
        if self.event == "disappear":
            return f < self.event_start
        return True

    def colour_at(self, f: int) -> str:
        if self.event == "recolour" and self.event_start <= f < self.event_end:
            return self.event_colour
        return self.colour

    def noun(self, with_size: bool = False) -> str:
        return f"{self.size} {self.colour} {self.shape}" if with_size else f"{self.colour} {self.shape}"


@dataclass
class Scene:
    num_frames: int
    background: tuple[int, int, int]
    objects: list[SceneObject] = field(default_factory=list)  # objects[0] is the subject

    def to_dict(self) -> dict:
        return asdict(self)


def _phase_window(phase: str, num_frames: int, length: int, rng: np.random.Generator) -> int:
    """A start frame so that [start, start + length) lies in the phase's third of the clip."""
    third = num_frames / 3.0
    lo = {"start": 0.0, "middle": third, "end": 2 * third}[phase]
    hi = lo + third
    first, last = int(np.ceil(lo)), int(np.floor(hi)) - length
    if phase == "start":
        first = max(first, 1) if num_frames >= 9 else first  # leave frame 0 so "appear" is visible as a change
    if phase == "end":
        last = min(last, num_frames - length)
    if last < first:
        last = first
    return int(rng.integers(first, last + 1))


def _assign_event(obj: SceneObject, event: str, phase: str, num_frames: int, rng: np.random.Generator) -> None:
    obj.event, obj.event_phase = event, phase
    if event in ("recolour", "vanish"):
        length = max(2, int(round(num_frames * rng.uniform(0.15, 0.25))))
        obj.event_start = _phase_window(phase, num_frames, length, rng)
        obj.event_end = obj.event_start + length
        if event == "recolour":
            choices = [c for c in COLOURS if c != obj.colour]
            obj.event_colour = choices[int(rng.integers(len(choices)))]
    else:  # appear / disappear: the change happens inside the phase and persists
        obj.event_start = _phase_window(phase, num_frames, 1, rng)
        if phase == "start" and obj.event_start == 0:
            obj.event_start = 1
        obj.event_end = num_frames


def sample_scene(rng: np.random.Generator, num_frames: int) -> Scene:
    """A random scene: 2-4 objects, a subject event, often a distractor object and event."""
    n = int(rng.choice([2, 3, 4], p=[0.35, 0.45, 0.2]))
    objects: list[SceneObject] = []
    used = set()
    for k in range(n):
        for _ in range(100):
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            if k == 1 and rng.random() < 0.6:  # a distractor sharing the subject's shape or colour
                if rng.random() < 0.5:
                    shape = objects[0].shape
                else:
                    colour = objects[0].colour
            if (shape, colour) not in used:
                break
        used.add((shape, colour))
        size = "small" if rng.random() < 0.5 else "large"
        motion = "still" if rng.random() < 0.4 else MOTIONS[1 + int(rng.integers(4))]
        objects.append(SceneObject(shape, colour, size, motion, 0.5, 0.5))
    _place(objects, rng)
    subject = objects[0]
    ev = EVENTS[int(rng.choice(len(EVENTS), p=[0.4, 0.3, 0.15, 0.15]))]
    phase = PHASES[int(rng.integers(3))]
    _assign_event(subject, ev, phase, num_frames, rng)
    if n > 1 and rng.random() < 0.6:
        other = objects[1 + int(rng.integers(n - 1))]
        ev2 = ("recolour", "vanish")[int(rng.integers(2))]
        phase2 = [p for p in PHASES if p != phase][int(rng.integers(2))]
        _assign_event(other, ev2, phase2, num_frames, rng)
    bg = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    return Scene(num_frames=num_frames, background=bg, objects=objects)


def _place(objects: list[SceneObject], rng: np.random.Generator) -> None:
    """Start positions keeping every path inside the frame and start centres apart."""
    placed: list[tuple[float, float]] = []
    for obj in objects:
        r = SIZES[obj.size] + 0.02
        xlo, xhi, ylo, yhi = r, 1 - r, r, 1 - r
        if obj.motion == "left":
            xlo += TRAVEL
        elif obj.motion == "right":
            xhi -= TRAVEL
        elif obj.motion == "up":
            ylo += TRAVEL
        elif obj.motion == "down":
            yhi -= TRAVEL
        best, best_d = None, -1.0
        for _ in range(30):
            x, y = rng.uniform(xlo, xhi), rng.uniform(ylo, yhi)
            d = min((np.hypot(x - px, y - py) for px, py in placed), default=1.0)
            if d > best_d:
                best, best_d = (x, y), d
            if d > 0.3:
                break
        obj.x0, obj.y0 = float(best[0]), float(best[1])
        placed.append(best)


def _mask(shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if shape == "square":
        s = 0.85 * r
        return (np.abs(xx - cx) <= s) & (np.abs(yy - cy) <= s)
    if shape == "diamond":
        return np.abs(xx - cx) + np.abs(yy - cy) <= 1.15 * r
    if shape == "triangle":  # pointing up
        top, bottom = cy - r, cy + 0.75 * r
        return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= (yy - top) * 0.62)
    raise ValueError(f"unknown shape {shape!r}")


def render_frames(scene: Scene, width: int, height: int) -> np.ndarray:
    """uint8 ``[F, H, W, 3]`` frames of ``scene``. Draw order: others first, the subject on top."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    base = min(width, height)
    frames = np.empty((scene.num_frames, height, width, 3), np.uint8)
    order = list(scene.objects[1:]) + [scene.objects[0]]
    for f in range(scene.num_frames):
        img = frames[f]
        img[:] = scene.background
        for obj in order:
            if not obj.visible(f):
                continue
            cx, cy = obj.centre(f, scene.num_frames)
            m = _mask(obj.shape, xx, yy, cx * width, cy * height, SIZES[obj.size] * base)
            img[m] = COLOURS[obj.colour_at(f)]
    return frames


def render_still(objects: list[SceneObject], background, width: int, height: int) -> np.ndarray:
    """One uint8 ``[H, W, 3]`` image of still objects at their start positions."""
    return render_frames(Scene(num_frames=1, background=background, objects=objects), width, height)[0]
