"""Statistics for comparing retrieval runs: mean ± SD, paired t-intervals over seeds, paired bootstrap.

Two sources of variation are measured separately, as the comparison write-up reports them:

* **training seeds**: the same framework trained with seeds 0..n-1 on the same data. A difference between
  frameworks A and B is taken per seed (``A_s - B_s``, same seed = same data order and caption draw where the
  frameworks share them) and summarised by Student's t-interval of those paired differences
  (:func:`paired_t`);
* **test queries**: for ONE pair of trained models, the per-caption ranks of both on the same test set,
  resampled with replacement jointly (:func:`paired_bootstrap`): how much the difference depends on which
  captions happened to be in the test set, not on training.

:func:`verdict` turns an interval into the words the reports use: an interval that contains 0 reads
"no difference detected", never "equal" or "better".

No SciPy: Student's t quantile comes from integrating the t density (Simpson's rule) and bisection, exact
to ~1e-9 for the degrees of freedom used here (tests compare it with tabulated values).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "mean_sd", "t_cdf", "t_quantile", "t_interval", "paired_t", "rank_metric", "paired_bootstrap", "verdict",
]


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and SAMPLE standard deviation (n - 1); SD is 0 for a single value."""
    x = [float(v) for v in values]
    if not x:
        raise ValueError("mean_sd of no values")
    n = len(x)
    mean = sum(x) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1)) if n > 1 else 0.0
    return mean, sd


def _t_pdf(x: float, df: float) -> float:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))


def t_cdf(x: float, df: float, intervals: int = 4000) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom (Simpson's rule on [0, |x|])."""
    if df <= 0:
        raise ValueError("t_cdf needs df > 0")
    a = abs(float(x))
    if a == 0.0:
        return 0.5
    n = intervals + intervals % 2
    h = a / n
    total = _t_pdf(0.0, df) + _t_pdf(a, df)
    for i in range(1, n):
        total += (4 if i % 2 else 2) * _t_pdf(i * h, df)
    half = min(0.5, total * h / 3)
    return 0.5 + half if x > 0 else 0.5 - half


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (e.g. ``t_quantile(0.975, 4)`` = 2.776)."""
    if not 0.0 < p < 1.0:
        raise ValueError("t_quantile needs 0 < p < 1")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
        if hi > 1e6:
            raise ValueError(f"t_quantile({p}, {df}) is too far out")
    for _ in range(60):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def t_interval(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Student's t confidence interval of the mean of ``values``:
    ``{"n", "mean", "sd", "se", "df", "t", "low", "high", "confidence"}`` (low = high = mean for n = 1,
    with ``t`` None: one value gives no interval)."""
    mean, sd = mean_sd(values)
    n = len(values)
    if n < 2:
        return {"n": n, "mean": mean, "sd": 0.0, "se": None, "df": 0, "t": None, "low": None, "high": None,
                "confidence": confidence}
    se = sd / math.sqrt(n)
    t = t_quantile(0.5 + confidence / 2, n - 1)
    return {"n": n, "mean": mean, "sd": sd, "se": se, "df": n - 1, "t": t, "low": mean - t * se,
            "high": mean + t * se, "confidence": confidence}


def paired_t(a: dict, b: dict, confidence: float = 0.95) -> dict:
    """Per-key differences ``a[k] - b[k]`` over the keys (seeds) both have, and their :func:`t_interval`
    (plus ``"keys"`` and ``"differences"``)."""
    keys = [k for k in a if k in b]
    if not keys:
        raise ValueError("paired_t: the two runs share no seed")
    diffs = [float(a[k]) - float(b[k]) for k in keys]
    return {"keys": keys, "differences": diffs, **t_interval(diffs, confidence)}


def rank_metric(name: str) -> Callable[[np.ndarray], float]:
    """A function of a per-query rank array (1 = best): ``R@K`` (percent), ``MdR``, ``MnR``."""
    if name.startswith("R@"):
        k = int(name[2:])
        return lambda r: float(np.mean(np.asarray(r) <= k) * 100)
    if name == "MdR":
        return lambda r: float(np.median(np.asarray(r)))
    if name == "MnR":
        return lambda r: float(np.mean(np.asarray(r)))
    raise ValueError(f"unknown rank metric {name!r}; use R@K, MdR or MnR")


def paired_bootstrap(ranks_a, ranks_b, metric: str = "R@1", *, samples: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> dict:
    """Paired bootstrap over queries of ``metric(a) - metric(b)``.

    ``ranks_a`` / ``ranks_b``: per-query ranks of two systems on the SAME queries in the same order. Each
    resample draws query indices with replacement (one draw for both systems); the interval is the
    percentile interval of the resampled differences. Deterministic for a given ``seed``.
    Returns ``{"metric", "difference" (observed), "low", "high", "samples", "seed", "confidence",
    "queries"}``.
    """
    a = np.asarray(ranks_a, dtype=np.float64)
    b = np.asarray(ranks_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_bootstrap needs two equal-length 1-d rank arrays, got {a.shape} and {b.shape}")
    fn = rank_metric(metric)
    rng = np.random.default_rng(seed)
    n = a.size
    diffs = np.empty(samples)
    for i in range(samples):
        idx = rng.integers(0, n, size=n)
        diffs[i] = fn(a[idx]) - fn(b[idx])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return {"metric": metric, "difference": fn(a) - fn(b), "low": float(low), "high": float(high),
            "samples": samples, "seed": seed, "confidence": confidence, "queries": int(n)}


def verdict(interval: dict, name_a: str = "A", name_b: str = "B", lower_is_better: bool = False) -> str:
    """Words for a difference ``A - B`` with a ``low``/``high`` interval: "A better than B", "A worse than B"
    or "no difference detected" (the interval contains 0). ``lower_is_better`` (ranks) flips the sign."""
    low, high = interval.get("low"), interval.get("high")
    if low is None or high is None:
        return "no interval (one seed)"
    if low <= 0.0 <= high:
        return "no difference detected"
    a_higher = low > 0
    a_better = a_higher != lower_is_better
    return f"{name_a} better than {name_b}" if a_better else f"{name_a} worse than {name_b}"
