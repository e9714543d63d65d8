"""eval.stats on known inputs: t quantiles vs tables, a t-interval by hand, a deterministic bootstrap."""

import math

import numpy as np
import pytest

from hybridtower.eval.stats import (mean_sd, paired_bootstrap, paired_t, rank_metric, t_cdf, t_interval,
                                    t_quantile, verdict)


@pytest.mark.parametrize("df,expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=2e-4)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=2e-4)


def test_t_cdf_symmetry_and_known_value():
    assert t_cdf(0.0, 5) == 0.5
    assert t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-9)  # Cauchy: 1/2 + atan(1)/pi
    assert t_cdf(-2.0, 7) == pytest.approx(1 - t_cdf(2.0, 7), abs=1e-12)


def test_t_interval_by_hand():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    mean, sd = mean_sd(x)
    assert mean == 3.0 and sd == pytest.approx(math.sqrt(2.5))
    ci = t_interval(x)
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)  # t_{0.975, 4} * s / sqrt(n)
    assert ci["low"] == pytest.approx(3.0 - half, abs=1e-4) and ci["high"] == pytest.approx(3.0 + half, abs=1e-4)
    assert ci["df"] == 4 and ci["n"] == 5
    one = t_interval([2.0])
    assert one["low"] is None and verdict(one) == "no interval (one seed)"


def test_paired_t_uses_common_seeds_and_verdicts():
    a = {0: 10.0, 1: 12.0, 2: 11.0, 3: 13.0}
    b = {0: 8.0, 1: 9.5, 2: 9.0, 4: 100.0}
    d = paired_t(a, b)
    assert d["keys"] == [0, 1, 2] and d["differences"] == [2.0, 2.5, 2.0]
    assert d["low"] > 0 and verdict(d, "A", "B") == "A better than B"
    assert verdict(d, "A", "B", lower_is_better=True) == "A worse than B"
    flat = paired_t({0: 1.0, 1: 2.0, 2: 3.0}, {0: 2.0, 1: 1.0, 2: 3.0})
    assert flat["low"] < 0 < flat["high"] and verdict(flat) == "no difference detected"
    with pytest.raises(ValueError):
        paired_t({0: 1.0}, {1: 1.0})


def test_rank_metrics():
    r = np.array([1, 2, 6, 11, 1])
    assert rank_metric("R@1")(r) == 40.0 and rank_metric("R@5")(r) == 60.0
    assert rank_metric("MdR")(r) == 2.0 and rank_metric("MnR")(r) == pytest.approx(4.2)
    with pytest.raises(ValueError):
        rank_metric("mAP")


def test_paired_bootstrap_deterministic_and_sensible():
    rng = np.random.default_rng(1)
    a = rng.integers(1, 4, size=400)  # system A: always near the top
    b = a + rng.integers(0, 30, size=400)  # system B: the same queries, worse
    one = paired_bootstrap(a, b, "R@1", samples=300, seed=3)
    two = paired_bootstrap(a, b, "R@1", samples=300, seed=3)
    assert one == two  # same seed, same interval
    assert one["difference"] == pytest.approx(rank_metric("R@1")(a) - rank_metric("R@1")(b))
    assert 0 < one["low"] <= one["difference"] <= one["high"]
    same = paired_bootstrap(a, a, "MdR", samples=50, seed=0)
    assert same["low"] == same["high"] == same["difference"] == 0.0
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:10])
