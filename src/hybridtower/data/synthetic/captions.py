"""Caption templates of the synthetic benchmark (several paraphrases per fact).

Caption kinds (recorded per caption as ``kind``):

``event``         the subject's event and usually when it happens ("the red circle briefly turns green
                  near the end")
``event_motion``  the subject's motion and its event ("the small blue square moves left and briefly
                  disappears")
``context``       the subject's event, named next to another object in the scene ("while a yellow
                  triangle stays still, the red circle flashes green at the start")
``motion``        the subject's motion among the other objects ("the red circle slides to the left
                  while the blue square does not move")

Every caption names the subject (its colour and shape, sometimes its size), and three kinds of four
hinge on the short event, whose evidence lives in a few frames only.
"""

from __future__ import annotations

import numpy as np

from .scene import Scene, SceneObject

WHEN = {
    "start": ("at the start", "at the beginning", "early on"),
    "middle": ("in the middle", "halfway through", "midway"),
    "end": ("at the end", "near the end", "towards the end"),
}

EVENT_PHRASES = {
    "recolour": (
        "briefly turns {c2}",
        "flashes {c2}",
        "turns {c2} for a moment",
        "changes to {c2} for a short time",
    ),
    "vanish": ("briefly disappears", "blinks out for a moment", "vanishes for an instant", "flickers out briefly"),
    "appear": ("appears", "shows up", "pops into view", "comes into view"),
    "disappear": ("disappears for good", "vanishes and does not come back", "goes away", "leaves the scene"),
}

MOTION_PHRASES = {
    "still": ("stays still", "does not move", "stays in place", "remains still"),
    "left": ("moves left", "slides to the left", "drifts left", "travels to the left"),
    "right": ("moves right", "slides to the right", "drifts right", "travels to the right"),
    "up": ("moves up", "rises", "drifts upward", "travels up"),
    "down": ("moves down", "sinks", "drifts downward", "travels down"),
}

KINDS = ("event", "event_motion", "context", "motion")


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _noun(obj: SceneObject, rng: np.random.Generator, article: str = "the") -> str:
    return f"{article} {obj.noun(with_size=rng.random() < 0.5)}"


def _event_phrase(obj: SceneObject, rng: np.random.Generator) -> str:
    return _pick(rng, EVENT_PHRASES[obj.event]).format(c2=obj.event_colour or "")


def _with_when(clause: str, obj: SceneObject, rng: np.random.Generator, p_omit: float = 0.2) -> str:
    if rng.random() < p_omit:
        return clause
    when = _pick(rng, WHEN[obj.event_phase])
    if rng.random() < 0.35:
        return f"{when}, {clause}"
    return f"{clause} {when}"


def make_caption(scene: Scene, kind: str, rng: np.random.Generator) -> str:
    subj = scene.objects[0]
    others = scene.objects[1:]
    art = "a" if rng.random() < 0.3 else "the"
    if kind == "event":
        text = _with_when(f"{_noun(subj, rng, art)} {_event_phrase(subj, rng)}", subj, rng)
    elif kind == "event_motion":
        text = _with_when(
            f"{_noun(subj, rng, art)} {_pick(rng, MOTION_PHRASES[subj.motion])} and {_event_phrase(subj, rng)}", subj, rng
        )
    elif kind == "context":
        other = others[int(rng.integers(len(others)))] if others else None
        main = _with_when(f"{_noun(subj, rng)} {_event_phrase(subj, rng)}", subj, rng, p_omit=0.3)
        if other is None:
            text = main
        elif rng.random() < 0.5:
            text = f"while {_noun(other, rng, 'a')} {_pick(rng, MOTION_PHRASES[other.motion])}, {main}"
        else:
            text = f"next to {_noun(other, rng, 'a')}, {main}"
    elif kind == "motion":
        if others:
            differ = [o for o in others if o.motion != subj.motion]
            other = (differ or others)[int(rng.integers(len(differ or others)))]
            if other.motion != subj.motion:
                text = (
                    f"{_noun(subj, rng, art)} {_pick(rng, MOTION_PHRASES[subj.motion])} while "
                    f"{_noun(other, rng)} {_pick(rng, MOTION_PHRASES[other.motion])}"
                )
            else:
                text = f"{_noun(subj, rng, art)} {_pick(rng, MOTION_PHRASES[subj.motion])}, and so does {_noun(other, rng)}"
        else:
            text = f"{_noun(subj, rng, art)} {_pick(rng, MOTION_PHRASES[subj.motion])}"
    else:
        raise ValueError(f"unknown caption kind {kind!r}")
    return " ".join(text.split())


def make_captions(scene: Scene, count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """``count`` distinct (caption, kind) pairs; kinds cycle event-heavy: event, context, event_motion, motion."""
    cycle = ("event", "context", "event_motion", "event", "motion")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    k = 0
    tries = 0
    while len(out) < count and tries < count * 20:
        kind = cycle[k % len(cycle)]
        text = make_caption(scene, kind, rng)
        tries += 1
        if text in seen:
            continue
        seen.add(text)
        out.append((text, kind))
        k += 1
    return out


POSITIONS = {
    "left": ("on the left", "at the left"),
    "right": ("on the right", "at the right"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "centre": ("in the centre", "in the middle"),
}


def position_word(x: float, y: float) -> str:
    dx, dy = x - 0.5, y - 0.5
    if max(abs(dx), abs(dy)) < 0.15:
        return "centre"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def image_captions(objects: list[SceneObject], count: int, rng: np.random.Generator) -> list[str]:
    """Static captions of one still image: objects' colour, shape, size, position and relations."""
    out: list[str] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < count and tries < count * 20:
        tries += 1
        style = int(rng.integers(3))
        if style == 0 or len(objects) == 1:
            o = objects[int(rng.integers(len(objects)))]
            text = f"a {o.noun(with_size=rng.random() < 0.6)} {_pick(rng, POSITIONS[position_word(o.x0, o.y0)])}"
        elif style == 1:
            names = [f"a {o.noun(with_size=rng.random() < 0.4)}" for o in objects]
            text = " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]
        else:
            a, b = rng.choice(len(objects), size=2, replace=False)
            oa, ob = objects[int(a)], objects[int(b)]
            rel = "to the left of" if oa.x0 < ob.x0 else "to the right of"
            if abs(oa.y0 - ob.y0) > abs(oa.x0 - ob.x0):
                rel = "above" if oa.y0 < ob.y0 else "below"
            text = f"a {oa.noun(rng.random() < 0.5)} {rel} a {ob.noun(rng.random() < 0.5)}"
        text = " ".join(text.split())
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out
