"""Retrieval metrics from a score matrix: ranks, R@K, MdR, MnR, and the dual-softmax extra.

Everything here is pure (numpy/torch, no model). Conventions, used throughout:

* ``scores`` is ``[Nt, Nv]``: row ``i`` is caption ``i``, column ``j`` video ``j``, higher = better.
* ``gt_video[i]`` is the column of caption ``i``'s own video. A video may own several captions
  (MSVD, VATEX, MSRVTT-3k); DiDeMo captions arrive already joined into one paragraph per video.
* ``absent`` (optional, bool ``[Nv]``) marks videos that could not be encoded (file missing or
  unreadable). Their columns are ignored whatever they hold (the runner fills them with NaN).

**Tie policy (pessimistic).** A query's rank is ``1 + the number of OTHER candidates scoring higher
than OR EQUAL TO its ground truth``: a candidate that ties with the ground truth pushes it down (the
worst end of the tie range), and every query gets exactly one rank. So a model whose scores collapse to
a constant gets the worst rank for every query (R@1 = 0 with more than one candidate), never a perfect
score. With real-valued features exact ties are rare and the policy changes nothing; the runner counts
the queries where it matters and warns. (CLIP4Clip, CLIP-ViP and ProST locate the ground truth with
``np.where(sorted_row - gt == 0)``, which returns several or misplaced positions when scores tie
exactly; we never search for positions, we count.)

**Text-to-video (t2v).** Every caption is a query over all (present) videos.

**Video-to-text (v2t), ``mode="group"`` (default; the CLIP4Clip / X-Pool "Deferf" routine and fpig,
method.md §3.3, peers.md §6.1).** Captions are grouped by their video. For video ``v`` the score of
caption group ``g`` is the best score any caption of ``g`` gets for ``v``:
``M[g, v] = max_{i: gt_video[i] = g} scores[i, v]``. Video ``v``'s rank is
``1 + #{g != v : M[g, v] >= M[v, v]}``: its best caption competes with the best caption of every other
video, so ranks run from 1 to the number of caption groups (= videos with captions). With one caption
per video this is plain ranking of the transposed matrix.

**v2t, ``mode="caption"``** (the COCO image-to-text convention, offered for comparison): video ``v``'s
rank is ``1 + #{captions i of other videos : scores[i, v] >= max over v's own captions}``, i.e. the rank
of its best-ranked caption in the full caption list. Ranks run up to ``Nt``; numbers differ from the
published video-retrieval tables, which use the group rule.

**Videos that could not be encoded** count as failures, never silently dropped: a caption whose video
is absent gets rank ``(number of present videos) + 1`` in t2v, and an absent video gets rank
``(number of candidates) + 1`` in v2t. Absent videos' captions stay in the caption gallery for v2t
(their text was encoded fine).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["ranks_t2v", "ranks_v2t", "retrieval_metrics", "dsl_scores", "METRIC_KEYS"]

METRIC_KEYS = ("R@1", "R@5", "R@10", "MdR", "MnR")
_ROW_CHUNK = 1024


def _as_tensor(scores) -> torch.Tensor:
    s = scores if isinstance(scores, torch.Tensor) else torch.as_tensor(np.asarray(scores))
    if s.dim() != 2:
        raise ValueError(f"scores must be a 2-D [Nt, Nv] matrix, got shape {tuple(s.shape)}")
    s = s.detach().cpu()
    # float32 stays float32 (no copy: a MSRVTT-3k matrix is 60k x 3k); halves and integers are widened
    return s if s.dtype in (torch.float32, torch.float64) else s.to(torch.float64)


def _check_inputs(scores, gt_video, absent):
    s = _as_tensor(scores)
    nt, nv = s.shape
    gt = torch.as_tensor(np.asarray(gt_video), dtype=torch.long).reshape(-1)
    if gt.numel() != nt:
        raise ValueError(f"gt_video has {gt.numel()} entries but scores have {nt} rows")
    if nt and (int(gt.min()) < 0 or int(gt.max()) >= nv):
        raise ValueError(f"gt_video entries must lie in [0, {nv}), got range [{int(gt.min())}, {int(gt.max())}]")
    if absent is None:
        present = torch.ones(nv, dtype=torch.bool)
    else:
        present = ~torch.as_tensor(np.asarray(absent), dtype=torch.bool).reshape(-1)
        if present.numel() != nv:
            raise ValueError(f"absent has {present.numel()} entries but scores have {nv} columns")
    bad = ~torch.isfinite(s[:, present])
    if bad.any():
        raise ValueError(f"scores hold {int(bad.sum())} non-finite value(s) in columns of present videos")
    return s, gt, present


def ranks_t2v(scores, gt_video, *, absent=None) -> np.ndarray:
    """Text-to-video rank of every caption: ``[Nt]`` int64, 1 = its video scored highest.

    ``rank[i] = 1 + #{present videos j != gt_video[i] : scores[i, j] >= scores[i, gt_video[i]]}`` (ties
    count against the caption: the pessimistic rank); a caption whose
    video is ``absent`` gets ``(number of present videos) + 1`` (a miss ranked after every video).
    """
    s, gt, present = _check_inputs(scores, gt_video, absent)
    nt = s.shape[0]
    n_present = int(present.sum())
    out = torch.empty(nt, dtype=torch.long)
    for a in range(0, nt, _ROW_CHUNK):
        block = s[a : a + _ROW_CHUNK, present]
        # the gt score read from the full matrix; for an absent gt it is NaN and overwritten below
        g = s[a : a + _ROW_CHUNK].gather(1, gt[a : a + _ROW_CHUNK, None])
        # ``>=`` counts the ground truth's own column too (it equals itself): hence no ``1 +``
        out[a : a + _ROW_CHUNK] = (block >= g).sum(1)
    out[~present[gt]] = n_present + 1
    return out.numpy()


def ranks_v2t(scores, gt_video, *, absent=None, mode: str = "group") -> np.ndarray:
    """Video-to-text rank of every video: ``[Nv]`` int64 (see the module docstring for both modes).

    Every video (column) must own at least one caption: a caption-less video has no correct answer,
    so drop its column first (it can still be a t2v distractor). Absent videos get
    ``(number of candidates) + 1``: the number of caption groups in ``"group"`` mode, ``Nt`` in
    ``"caption"`` mode.
    """
    if mode not in ("group", "caption"):
        raise ValueError(f"v2t mode must be 'group' or 'caption', got {mode!r}")
    s, gt, present = _check_inputs(scores, gt_video, absent)
    nt, nv = s.shape
    counts = torch.bincount(gt, minlength=nv)
    if (counts == 0).any():
        empty = torch.nonzero(counts == 0).flatten()[:5].tolist()
        raise ValueError(f"{int((counts == 0).sum())} video column(s) own no caption (e.g. {empty}); "
                         "drop them before v2t ranking")
    if not present.all():
        s = torch.where(present[None, :], s, torch.zeros((), dtype=s.dtype))  # absent columns: any finite value
    # best[v] = max over v's own captions of scores[i, v]
    own = s.gather(1, gt[:, None]).squeeze(1)  # [Nt] score of each caption with its own video
    best = torch.full((nv,), -torch.inf, dtype=s.dtype).scatter_reduce(0, gt, own, "amax")
    if mode == "group":
        # M[g, v] = max over captions of group g of scores[i, v]
        # computed for a block of video columns at a time to bound memory at [Nv, block]
        out = torch.empty(nv, dtype=torch.long)
        for a in range(0, nv, _ROW_CHUNK):
            block = s[:, a : a + _ROW_CHUNK]
            idx = gt[:, None].expand(-1, block.shape[1])
            m = torch.full((nv, block.shape[1]), -torch.inf, dtype=s.dtype).scatter_reduce_(0, idx, block, "amax")
            # own group's row equals best: counted by ``>=``, so it stands for the ``1 +``
            out[a : a + _ROW_CHUNK] = (m >= best[None, a : a + _ROW_CHUNK]).sum(0)
        n_candidates = nv
    else:
        higher = torch.zeros(nv, dtype=torch.long)
        cols = torch.arange(nv)
        for a in range(0, nt, _ROW_CHUNK):
            other = gt[a : a + _ROW_CHUNK, None] != cols[None, :]  # only other videos' captions compete
            higher += ((s[a : a + _ROW_CHUNK] >= best[None, :]) & other).sum(0)
        out = 1 + higher
        n_candidates = nt
    out[~present] = n_candidates + 1
    return out.numpy()


def retrieval_metrics(ranks) -> dict[str, float]:
    """``{"R@1", "R@5", "R@10"}`` as percentages of queries with rank <= K, ``"MdR"`` / ``"MnR"`` the
    median / mean rank (1-based)."""
    r = np.asarray(ranks, dtype=np.float64).reshape(-1)
    if r.size == 0:
        raise ValueError("no ranks to summarise (empty query set)")
    if (r < 1).any() or not np.isfinite(r).all():
        raise ValueError("ranks must be finite and >= 1")
    return {
        "R@1": float(100.0 * np.mean(r <= 1)),
        "R@5": float(100.0 * np.mean(r <= 5)),
        "R@10": float(100.0 * np.mean(r <= 10)),
        "MdR": float(np.median(r)),
        "MnR": float(np.mean(r)),
    }


def dsl_scores(scores, temperature: float = 100.0, dim: int = 0) -> torch.Tensor:
    """Dual-softmax re-weighting, a LABELLED EXTRA only (peers.md §6.3): ``S * softmax(temperature*S, dim)``.

    ``dim=0`` (default, CLIP-ViP's "DSL" for t2v) normalises each video's column over all test
    captions: a caption-video score is weighted by how much that video prefers this caption over the
    other test captions. Use ``dim=1`` for v2t (each caption's row over all test videos). It needs the
    whole test query set at once, assumes a one-to-one pairing prior and is not available to a
    single online query, so DSL numbers must never be compared with plain ones.

    Non-finite entries (absent videos) are excluded from the softmax and stay NaN.
    """
    s = scores if isinstance(scores, torch.Tensor) else torch.as_tensor(np.asarray(scores))
    s = s.detach()
    if s.dtype not in (torch.float32, torch.float64):
        s = s.to(torch.float64)
    finite = torch.isfinite(s)
    logits = torch.where(finite, temperature * s, torch.full((), -torch.inf, dtype=s.dtype))
    w = torch.softmax(logits, dim=dim)
    return torch.where(finite, s * w, torch.full((), torch.nan, dtype=s.dtype))
