"""Equal tuning budget: the same small grid for every framework, chosen on the VALIDATION split.

Every framework trains once per grid point (learning rate x new-module LR multiplier), with the same
seed (0), data, steps and batch; each is scored on the validation split and the point with the highest
:data:`SELECT_METRIC` wins. The test split is never looked at here. The seed-0 run at the chosen point is
the framework's seed-0 run of the comparison (same config, same seed: the same training).
"""

from __future__ import annotations

import itertools

SELECT_METRIC = "t2v R@1 + R@5 + R@10"  # summed recalls on val: less noisy than R@1 alone on 100 videos


def grid_points(lrs: list[float], mults: list[float]) -> list[dict]:
    """Every (lr, new_module_lr_mult) pair, in a fixed order."""
    return [{"lr": float(lr), "new_module_lr_mult": float(m)} for lr, m in itertools.product(lrs, mults)]


def point_tag(point: dict) -> str:
    return f"lr{point['lr']:g}-x{point['new_module_lr_mult']:g}"


def select_score(metrics: dict) -> float:
    t = metrics["t2v"]
    return float(t["R@1"] + t["R@5"] + t["R@10"])


def choose(scored: list[tuple[dict, dict]]) -> dict:
    """``scored`` = [(point, validation metrics)] -> the best point (ties: the first in grid order)."""
    if not scored:
        raise ValueError("choose: empty grid")
    best_point, best_value = None, float("-inf")
    for point, metrics in scored:
        value = select_score(metrics)
        if value > best_value:
            best_point, best_value = point, value
    return dict(best_point)
