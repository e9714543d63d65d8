"""The weak-match calibration (hybridtower.index.calibration) on known score functions."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hybridtower.index import calibration as cal


def _normal_top1(mean=0.3, sd=0.02, seed=0):
    def top1(texts):
        rng = np.random.default_rng(seed)
        return rng.normal(mean, sd, size=len(texts))
    return top1


def test_caption_list_is_diverse_and_unique():
    caps = cal.GENERIC_CAPTIONS
    assert len(caps) >= 80
    assert len(set(caps)) == len(caps)
    joined = " ".join(caps)
    for word in ("dog", "car", "chef", "soccer", "waterfall", "guitar", "kitchen", "airplane"):
        assert word in joined


def test_deterministic_and_json_serialisable():
    a = cal.measure_weak_match(_normal_top1())
    b = cal.measure_weak_match(_normal_top1())
    assert a == b
    assert json.loads(json.dumps(a)) == a
    assert a["rule"] == cal.RULE and a["captions"] == len(cal.GENERIC_CAPTIONS)
    assert isinstance(a["threshold"], float)


def test_rule_on_known_scores():
    # scores 0.00, 0.01, ..., 0.20 (21 captions): median 0.10, q10 0.02
    caps = [f"caption {i}" for i in range(21)]
    out = cal.measure_weak_match(lambda texts: np.arange(len(texts)) / 100.0, captions=caps)
    assert out["scores"]["median"] == pytest.approx(0.10)
    assert out["scores"]["q10"] == pytest.approx(0.02)
    assert out["threshold"] == pytest.approx(0.10 + 1.645 * 0.08 / 1.2816)
    assert out["closest"][0] == ["caption 20", 0.2]
    assert len(out["closest"]) == 5


def test_about_95_percent_of_unrelated_scores_fall_below_on_a_clean_list():
    out = cal.measure_weak_match(_normal_top1(seed=1))
    fresh = np.random.default_rng(99).normal(0.3, 0.02, size=20000)
    rate = float(np.mean(fresh < out["threshold"]))
    assert 0.85 < rate < 0.995


def test_threshold_robust_to_a_library_that_matches_some_captions():
    """30% of the captions are about the library (score 0.6 vs ~0.3 for the rest): a max or a high
    quantile would jump to 0.6 and flag true matches; the rule stays near the unrelated scores."""
    rng = np.random.default_rng(0)
    n = len(cal.GENERIC_CAPTIONS)
    matched = rng.random(n) < 0.3

    def top1(texts):
        s = np.random.default_rng(1).normal(0.3, 0.02, size=len(texts))
        s[matched] = 0.6
        return s

    out = cal.measure_weak_match(top1)
    assert out["threshold"] < 0.45  # true matches (0.6) are not weak
    assert out["scores"]["max"] == pytest.approx(0.6)
    assert float(np.quantile(top1(cal.GENERIC_CAPTIONS), 0.9)) == pytest.approx(0.6)  # what a q90 rule would give
    clean = cal.measure_weak_match(_normal_top1(seed=1))
    assert out["threshold"] > clean["threshold"] - 0.01  # unrelated queries are still flagged


def test_empty_index_or_too_few_scores_gives_no_threshold():
    out = cal.measure_weak_match(lambda texts: np.full(len(texts), np.nan))
    assert out["threshold"] is None and "empty index" in out["reason"]
    assert cal.weak_threshold({"weak_match": out}) is None
    assert cal.measure_weak_match(lambda t: np.zeros(len(t)), captions=[])["threshold"] is None


def test_wrong_number_of_scores_is_an_error():
    with pytest.raises(ValueError, match="scores for"):
        cal.measure_weak_match(lambda texts: np.zeros(3))


@pytest.mark.parametrize("manifest, expected", [
    ({"weak_match": {"threshold": 0.25}}, 0.25),
    ({"weak_match": {"threshold": 1}}, 1.0),
    ({}, None),
    (None, None),
    ({"weak_match": None}, None),
    ({"weak_match": {"threshold": "0.3"}}, None),
    ({"weak_match": {"threshold": True}}, None),
    ({"weak_match": {"threshold": float("nan")}}, None),
    ({"weak_match": {"threshold": float("inf")}}, None),
    ({"weak_match": {"threshold": 10 ** 400}}, None),  # a JSON integer too large for a float
])
def test_weak_threshold_reads_the_manifest(manifest, expected):
    assert cal.weak_threshold(manifest) == expected


def test_is_weak():
    assert cal.is_weak(0.1, 0.2) and not cal.is_weak(0.2, 0.2) and not cal.is_weak(0.3, 0.2)
    assert not cal.is_weak(-5.0, None)
