"""The weak-match threshold of a committed index, measured once when a build or a merge completes.

``calibrate_weak_match(writer, model)`` scores the fixed generic captions of :mod:`.calibration` against the
index just committed, with a Searcher over it (``top1_function``: the same text encode, exact / FAISS search
and X-Pool re-ranking as a search), and records the result in the manifest as ``weak_match``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import store


def top1_function(index_dir: Path, model, manifest: dict):
    """``top1(texts)``: each text's best score on the committed index, computed by a Searcher over it with
    ``model`` (the same encode, exact / FAISS search and, for X-Pool, the same re-ranking as a search)."""
    from .searcher import Searcher

    searcher = Searcher(index_dir, store.load_index(index_dir, manifest), model, device=str(next(model.parameters()).device),
                        exact_kernel="numpy")

    def top1(texts: list[str]):
        import numpy as np

        vectors = searcher.encode_queries(list(texts))
        return np.asarray([searcher.search(t, 1, query_vector=v).hits[0].score for t, v in zip(texts, vectors)])

    return top1


def needs_calibration(manifest: dict | None) -> bool:
    """Whether an up-to-date index should be calibrated (again): it has no usable threshold
    (``calibration.weak_threshold`` is None: built before the cue existed, or a malformed ``weak_match`` such
    as a string or a threshold that is not a finite number) and no record that it could not be measured (a
    ``weak_match`` dict with a ``reason``, e.g. too few captions scored: measuring again would say the same)."""
    from .calibration import weak_threshold

    if weak_threshold(manifest) is not None:
        return False
    info = manifest.get("weak_match") if isinstance(manifest, dict) else None
    return not (isinstance(info, dict) and info.get("reason"))


def calibrate_weak_match(writer: store.IndexWriter, model) -> dict | None:
    """Measure the weak-match threshold of the index just committed (``index.calibration``) and record it
    in the manifest as ``weak_match`` (the same generation: only the manifest is rewritten, its digest
    covers the new key). Skipped for an empty index."""
    from .calibration import measure_weak_match

    manifest = writer.manifest
    if not manifest or not manifest.get("count"):
        return None
    try:
        info = measure_weak_match(top1_function(writer.dir, model, manifest))
    except Exception as exc:  # the index is built and committed; a failed calibration only loses the cue
        print(f"warning: weak-match calibration failed ({type(exc).__name__}: {exc}); search will not flag weak "
              f"matches", file=sys.stderr, flush=True)
        return None
    writer.commit(dict(manifest, weak_match=info))
    return info
