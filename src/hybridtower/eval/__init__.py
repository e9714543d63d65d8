"""Evaluation: retrieval metrics (:mod:`.metrics`, pure) and the split scorer (:mod:`.runner`).

    from hybridtower.eval import evaluate
    from hybridtower.data import load_split
    result = evaluate(model, load_split("msrvtt:datasets/msrvtt", "test-1ka"))
    result["t2v"]["R@1"]

The protocol (tie policy, v2t over multi-caption sets, skipped videos) is documented in
:mod:`.metrics` and ``docs/evaluation.md``. Importing this package does not import torch models.
"""

from .metrics import METRIC_KEYS, dsl_scores, ranks_t2v, ranks_v2t, retrieval_metrics
from .runner import EvaluationError, evaluate, format_table, score_split, to_jsonable

__all__ = [
    "METRIC_KEYS",
    "dsl_scores",
    "ranks_t2v",
    "ranks_v2t",
    "retrieval_metrics",
    "EvaluationError",
    "evaluate",
    "format_table",
    "score_split",
    "to_jsonable",
]
