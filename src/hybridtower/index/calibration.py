"""The weak-match cue: what score does text that is NOT about this library reach on this index?

A retrieval model always returns a nearest video, even for a query about something the library does not
hold ("a dog runs on the beach" on a collection of moving shapes still returns shapes). To tell such
answers apart, an index is calibrated once, when its build completes::

    info = measure_weak_match(top1)        # top1(texts) -> each text's best score on this index
    manifest["weak_match"] = info          # {"threshold": float, "rule": ..., the numbers behind it}
    weak_threshold(manifest)               # -> float, or None for an index without a valid calibration

``top1`` scores :data:`GENERIC_CAPTIONS`, a fixed, diverse list of everyday video captions (people,
animals, vehicles, food, sports, nature, indoor scenes, music, work, ...), against the collection: the
best score each caption reaches is the score an *unrelated* query typically reaches on this index. A hit
whose score is below the threshold is "weak": it is no better than what text about something else gets.

The rule is robust to a library that really holds some of those subjects (a home-video library matches
the captions about people and dogs): those captions score high and form an upper tail, so the threshold
is built from the centre and the LOWER half of the distribution only, never from its max::

    spread    = (median - q10) / 1.2816        # a normal sigma, estimated from the lower side
    threshold = median + 1.645 * spread        # ~95th percentile of unrelated scores under normality

With a clean list (no caption is about the library) about 95% of unrelated queries fall below it; when
some captions do match the library their high scores shift the median only a little (each matched
caption moves it by less than one rank), whereas a max or a high quantile would jump to a real-match
score and flag true matches as weak. The dict records the rule, the inputs and the numbers, and the five
captions that scored highest (they show what the library resembles). Measured rates on the demo index
are in docs/search.md.

The cue is calibrated for TEXT queries: an image or "more like this" query compares a video-side vector
with video rows, whose cosines live on another scale, so those searches do not flag hits.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

__all__ = ["GENERIC_CAPTIONS", "RULE", "measure_weak_match", "weak_threshold", "is_weak"]

VERSION = 1
Z = 1.645  # one-sided 95% point of a normal
Q_LOW = 0.10  # lower quantile the spread is read from
Z_LOW = 1.2816  # normal quantile of Q_LOW (in absolute value)
RULE = "median + 1.645 * (median - q10) / 1.2816 of the generic captions' top-1 scores"
MIN_CAPTIONS = 8

# Everyday captions in the style of MSR-VTT / web video descriptions, across many domains. Written for
# this project. Kept fixed: changing the list changes every index's threshold (bump VERSION if you do).
GENERIC_CAPTIONS: tuple[str, ...] = (
    # people and daily life
    "a man is talking to the camera in a kitchen",
    "a woman is brushing her hair in front of a mirror",
    "two people are shaking hands in an office",
    "a child is blowing out candles on a birthday cake",
    "an old man is reading a newspaper on a bench",
    "a group of friends are laughing around a table",
    "a baby is crawling on a carpet",
    "a woman is walking down a busy city street",
    "a man is shaving in the bathroom",
    "a couple is dancing at a wedding",
    "people are waiting at a bus stop in the rain",
    "a teacher is writing on a blackboard",
    # animals
    "a dog runs on the beach",
    "a cat is sleeping on a sofa",
    "a horse is galloping across a field",
    "a bird is eating seeds from a feeder",
    "fish are swimming in an aquarium",
    "an elephant is spraying water with its trunk",
    "a cow is grazing in a green pasture",
    "a puppy is playing with a ball in the garden",
    "a lion is resting in the shade",
    "a monkey is climbing a tree",
    # vehicles and transport
    "a red car is driving on a highway",
    "a train is arriving at a station",
    "an airplane is taking off from the runway",
    "a man is riding a motorcycle through traffic",
    "a boat is sailing on a calm lake",
    "a bus is stopping to pick up passengers",
    "a truck is unloading boxes at a warehouse",
    "a cyclist is riding down a mountain trail",
    "cars are stuck in a traffic jam at night",
    "a helicopter is flying over the city",
    # food and cooking
    "a chef is chopping vegetables on a cutting board",
    "someone is frying eggs in a pan",
    "a woman is baking bread in the oven",
    "a person is pouring coffee into a cup",
    "pasta is boiling in a pot of water",
    "a man is grilling burgers on a barbecue",
    "a plate of sushi is served at a restaurant",
    "someone is slicing a pizza",
    "a person is making a smoothie in a blender",
    "a girl is eating ice cream",
    # sports and games
    "a soccer player kicks the ball into the goal",
    "a basketball player is dunking the ball",
    "a tennis match is being played on a clay court",
    "a swimmer is diving into the pool",
    "a man is lifting weights at the gym",
    "runners are racing on a track",
    "a skier is going down a snowy slope",
    "a surfer is riding a big wave",
    "a boxer is punching a bag",
    "two teams are playing volleyball on the sand",
    "a golfer is hitting the ball on a green",
    "a skateboarder is doing tricks in a skate park",
    # nature and weather
    "waves are crashing on a rocky shore",
    "a waterfall in a tropical forest",
    "snow is falling on a quiet village",
    "a sunset over the mountains",
    "clouds are moving across a blue sky",
    "lightning strikes during a thunderstorm",
    "autumn leaves are falling from the trees",
    "a river flows through a green valley",
    "a field of flowers is swaying in the wind",
    "the desert stretches to the horizon",
    # indoor scenes and objects
    "a living room with a fireplace and a christmas tree",
    "someone is typing on a laptop keyboard",
    "a person is folding laundry on a bed",
    "a man is fixing a leaky faucet",
    "a woman is vacuuming the floor",
    "books are stacked on a wooden shelf",
    "a person is unboxing a new phone",
    "a light bulb flickers in a dark room",
    # music, art and entertainment
    "a man is playing the guitar on stage",
    "a woman is singing into a microphone",
    "an orchestra is performing in a concert hall",
    "a girl is playing the piano",
    "a crowd is cheering at a music festival",
    "an artist is painting a portrait",
    "a magician is performing a card trick",
    "a cartoon character is running away from a monster",
    "a scene from a movie with two actors arguing",
    "a drummer is playing a fast beat",
    # work, technology and news
    "a news anchor is reading the news in a studio",
    "a scientist is looking into a microscope",
    "workers are building a house",
    "a doctor is talking to a patient",
    "a man is giving a presentation with slides",
    "a video game character is jumping between platforms",
    "a person is explaining how to use a software program",
    "a robot arm is assembling parts in a factory",
    "a politician is giving a speech",
    "a farmer is driving a tractor in a field",
    # city, travel and places
    "tourists are taking photos of a famous monument",
    "a market full of fruit and vegetable stalls",
    "fireworks explode over a city skyline",
    "a drone shot of a beach resort",
    "people are shopping in a crowded mall",
    "a street performer is juggling in a square",
    "a walk through an old european town",
    "a hotel room with a view of the sea",
    # fashion, beauty and how-to
    "a woman is applying makeup",
    "a model is walking on a runway",
    "a man is tying a tie",
    "a person is knitting a scarf",
    "someone is planting flowers in the garden",
    "a kid is building a tower with blocks",
)


def _finite_scores(values, n: int) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if a.shape[0] != n:
        raise ValueError(f"top1 returned {a.shape[0]} scores for {n} captions")
    return a


def measure_weak_match(top1: Callable[[list[str]], np.ndarray],
                       captions: Sequence[str] | None = None) -> dict:
    """Calibrate the weak-match cue of an index. ``top1(texts)`` returns each text's best score on the
    index (one number per text, in order). Deterministic given ``top1``.

    Returns ``{"threshold": float | None, "rule", "version", "captions", "scores": {"median", "q10",
    "q90", "min", "max"}, "spread", "z", "closest": [[caption, score], ...]}``. ``threshold`` is None
    (with a ``"reason"``) when it cannot be measured: an empty index, or fewer than 8 finite scores.
    """
    texts = list(GENERIC_CAPTIONS if captions is None else captions)
    base = {"rule": RULE, "version": VERSION, "captions": len(texts), "z": Z, "q_low": Q_LOW}
    if not texts:
        return {**base, "threshold": None, "reason": "no calibration captions"}
    scores = _finite_scores(top1(texts), len(texts))
    ok = np.isfinite(scores)
    if int(ok.sum()) < MIN_CAPTIONS:
        return {**base, "threshold": None,
                "reason": f"only {int(ok.sum())} caption(s) got a finite score (empty index?); need {MIN_CAPTIONS}"}
    s = scores[ok]
    median = float(np.quantile(s, 0.5))
    q10 = float(np.quantile(s, Q_LOW))
    spread = max(0.0, (median - q10) / Z_LOW)
    threshold = median + Z * spread
    order = np.argsort(-scores, kind="stable")
    closest = [[texts[i], round(float(scores[i]), 6)] for i in order[:5] if np.isfinite(scores[i])]
    return {
        **base,
        "threshold": float(threshold),
        "spread": float(spread),
        "scores": {"median": median, "q10": q10, "q90": float(np.quantile(s, 0.9)),
                   "min": float(s.min()), "max": float(s.max()), "count": int(s.shape[0])},
        "closest": closest,
    }


def weak_threshold(manifest: dict | None) -> float | None:
    """The weak-match threshold stored in an index manifest (``manifest["weak_match"]["threshold"]``), or
    None when the index has none (built before the cue existed, empty, or a malformed value)."""
    if not isinstance(manifest, dict):
        return None
    info = manifest.get("weak_match")
    if not isinstance(info, dict):
        return None
    t = info.get("threshold")
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        return None
    try:
        t = float(t)
    except OverflowError:  # a JSON integer of hundreds of digits
        return None
    return t if math.isfinite(t) else None


def is_weak(score: float, threshold: float | None) -> bool:
    """A hit is weak when the index has a threshold and the hit's score is strictly below it."""
    return threshold is not None and float(score) < threshold
