"""Score a dataset split with a model and compute the retrieval metrics.

Videos are encoded once (the offline side) and captions once (the online side) with
:func:`hybridtower.encode.encode_videos` / :func:`~hybridtower.encode.encode_texts`, the same functions
the search index uses, then scored by the model's own rule:

* query-independent models (PIG, Two-Tower meanP / CLIP-ViP): ``text @ video.T``, exactly what a
  search over the index computes; PIG-M (M vectors per video): the max over each video's M columns of
  ``text @ vectors.T`` (``model.score``);
* X-Pool: ``model.score`` (pairwise text-conditioned fusion), chunked over captions and videos so
  the ``[captions, videos, D]`` fusion tensor stays small.

Videos whose file is missing or cannot be decoded cannot be scored. They are counted, listed
(``skipped_videos``), warned about, and scored as failures: their captions get rank
``(videos scored) + 1`` in t2v and the videos themselves the worst v2t rank, so a broken video folder
can only lower the numbers. Metric denominators stay the full split. See ``docs/evaluation.md``.
"""

from __future__ import annotations

import inspect
import logging
import math

import numpy as np
import torch

from ..core.errors import HybridTowerError
from ..data.annotations import SplitData
from .metrics import dsl_scores, ranks_t2v, ranks_v2t, retrieval_metrics

__all__ = ["EvaluationError", "score_split", "evaluate", "V2T_DEFINITION", "TIE_POLICY"]

log = logging.getLogger(__name__)

TIE_POLICY = ("pessimistic: rank = 1 + number of other candidates scoring higher than or equal to the "
              "ground truth (a constant-score model gets R@1 = 0)")
# warn loudly when at least this fraction of the t2v queries tie exactly with another video
TIE_WARN_FRACTION = 0.01
V2T_DEFINITION = {
    "group": "per video, its best caption vs. the best caption of every other video (CLIP4Clip/X-Pool)",
    "caption": "per video, its best caption's rank among all captions (COCO style)",
}


class EvaluationError(HybridTowerError):
    """A split cannot be evaluated (no captions, or no video could be decoded)."""


@torch.no_grad()
def _pairwise_scores(model, text: torch.Tensor, video: torch.Tensor, precision: str, progress: bool,
                     text_chunk: int, video_chunk: int) -> torch.Tensor:
    """X-Pool style ``model.score`` over all pairs, in caption chunks on the model's device."""
    from tqdm.auto import tqdm

    from ..encode import autocast_context

    device = next(model.parameters()).device
    vid = video.to(device)
    takes_chunk = "chunk" in inspect.signature(model.score).parameters
    out = []
    for a in tqdm(range(0, text.shape[0], text_chunk), desc="score pairs", unit="chunk", disable=not progress):
        t = text[a : a + text_chunk].to(device)
        with autocast_context(device, precision):
            out.append((model.score(t, vid, chunk=video_chunk) if takes_chunk else model.score(t, vid)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, video.shape[0])


@torch.no_grad()
def _multi_vector_scores(model, text: torch.Tensor, video: torch.Tensor, chunk: int) -> torch.Tensor:
    """``model.score`` (max over each video's M vectors) in caption chunks: [Nt, Nv] on the CPU."""
    out = [model.score(text[a : a + chunk], video) for a in range(0, text.shape[0], chunk)]
    return torch.cat(out) if out else torch.zeros(0, video.shape[0])


@torch.no_grad()
def score_split(
    model,
    split: SplitData,
    batch_size: int = 16,
    num_workers: int = 0,
    precision: str = "fp32",
    progress: bool = True,
    *,
    text_batch_size: int = 512,
    pair_text_chunk: int = 64,
    pair_video_chunk: int = 64,
    eval_sampling: str | None = None,
):
    """Encode and score a split: ``(scores [Nt, Nv] float32, gt_video [Nt] long, info)``.

    Rows follow ``split.captions``, columns ``split.videos`` (both in split order). Columns of videos
    that could not be encoded hold NaN and are flagged in ``info["absent"]``. ``info`` also holds
    ``"errors"`` (``{"video_index", "video_id", "error"}`` for every skipped video),
    ``"skipped_videos"`` (the same as ``{"video_id", "error"}``) and ``"num_encoded"``.

    ``eval_sampling`` (``middle`` / ``linspace``; None = the model config's ``video.eval_sampling``)
    picks the frames read per video; ``info["sample_mode"]`` says which sampler ran.

    The model is put in eval mode for the pass and restored to its previous mode afterwards.
    """
    from ..data.datasets import VideoFrames
    from ..encode import encode_texts, encode_videos, eval_sample_mode, preprocess_for

    if not split.captions:
        raise EvaluationError(f"split {split.name!r} of {split.format}:{split.root} has no captions to evaluate")
    if not split.videos:
        raise EvaluationError(f"split {split.name!r} of {split.format}:{split.root} has no videos")
    was_training = model.training
    model.eval()
    try:
        sample_mode = eval_sample_mode(model, eval_sampling)
        frames = VideoFrames(split, num_frames=model.cfg.video.num_frames, preprocess=preprocess_for(model),
                             sample_mode=sample_mode)
        enc = encode_videos(model, frames, batch_size=batch_size, num_workers=num_workers, precision=precision,
                            progress=progress, desc=f"encode videos ({split.name})")
        texts = [c.text for c in split.captions]
        text = encode_texts(model, texts, batch_size=text_batch_size, precision=precision)
        if model.query_independent and enc.features.dim() == 2:
            scored = text @ enc.features.t()
        elif model.query_independent:  # several stored vectors per video (PIG-M): max over each video's
            scored = _multi_vector_scores(model, text, enc.features, text_batch_size)
        else:
            scored = _pairwise_scores(model, text, enc.features, precision, progress, pair_text_chunk, pair_video_chunk)
    finally:
        model.train(was_training)

    scores, absent = expand_scores(scored, enc.indices, len(split.videos))
    gt = torch.tensor(split.caption_video_indices(), dtype=torch.long)
    errors = sorted(enc.errors, key=lambda e: e["video_index"])
    info = {
        "absent": absent,
        "errors": errors,
        "skipped_videos": [{"video_id": e["video_id"], "error": e["error"]} for e in errors],
        "num_encoded": int(enc.indices.numel()),
        "sample_mode": sample_mode,
    }
    return scores, gt, info


def expand_scores(scored: torch.Tensor, indices: torch.Tensor, num_videos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores over the encoded videos ``[Nt, N_ok]`` -> ``[Nt, num_videos]`` with NaN columns for the videos
    that could not be encoded, and that ``absent`` mask."""
    scores = torch.full((scored.shape[0], num_videos), math.nan, dtype=torch.float32)
    scores[:, indices] = scored.float()
    absent = torch.ones(num_videos, dtype=torch.bool)
    absent[indices] = False
    return scores, absent


def metrics_from_scores(scores: torch.Tensor, gt: torch.Tensor, absent: torch.Tensor, v2t_mode: str = "group") -> dict:
    """``{"t2v": {...}, "v2t": {...}}`` of a full ``[Nt, Nv]`` score matrix under this module's protocol."""
    t2v, v2t, _ = _rank_all(scores, gt, absent, v2t_mode, dsl=False)
    return {"t2v": retrieval_metrics(t2v), "v2t": retrieval_metrics(v2t)}


def _t2v_tied_queries(scores: torch.Tensor, gt: torch.Tensor, absent: torch.Tensor, chunk: int = 1024) -> int:
    """How many captions tie exactly with at least one other present video (where the tie policy matters)."""
    present = ~absent
    n = 0
    for a in range(0, scores.shape[0], chunk):
        s, g = scores[a : a + chunk], gt[a : a + chunk]
        own = s.gather(1, g[:, None])
        equal = (s[:, present] == own).sum(1) - 1  # minus the ground truth itself
        n += int(((equal > 0) & present[g]).sum())
    return n


def _rank_all(scores: torch.Tensor, gt: torch.Tensor, absent: torch.Tensor, v2t_mode: str, dsl: bool):
    """t2v ranks over every video; v2t ranks over the videos that own a caption."""
    if dsl:
        t2v_scores, v2t_scores = dsl_scores(scores, dim=0), dsl_scores(scores, dim=1)
    else:
        t2v_scores = v2t_scores = scores
    t2v = ranks_t2v(t2v_scores, gt, absent=absent)
    # a video without captions has no correct caption: not a v2t query (still a t2v distractor)
    has_caption = torch.bincount(gt, minlength=scores.shape[1]) > 0
    keep = torch.nonzero(has_caption).flatten()
    remap = torch.full((scores.shape[1],), -1, dtype=torch.long)
    remap[keep] = torch.arange(keep.numel())
    v2t = ranks_v2t(v2t_scores[:, keep], remap[gt], absent=absent[keep], mode=v2t_mode)
    return t2v, v2t, int((~has_caption).sum())


def evaluate(
    model,
    split: SplitData,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    precision: str = "fp32",
    dsl: bool = False,
    progress: bool = True,
    v2t_mode: str = "group",
    return_ranks: bool = False,
    eval_sampling: str | None = None,
) -> dict:
    """t2v and v2t R@1/R@5/R@10/MdR/MnR of ``model`` on ``split``.

    Returns ``{"t2v": {...}, "v2t": {...}, "num_videos", "num_captions", "skipped_videos": [{"video_id",
    "error"}], "model", "data", "split", "protocol": {...}}`` and, with ``dsl=True``, ``"dsl": {"t2v",
    "v2t", "note"}`` (a labelled extra, never to be compared with plain numbers). ``num_videos`` and
    ``num_captions`` count the whole split: skipped videos are scored as failures (module docstring).
    ``return_ranks=True`` adds ``"ranks": {"t2v": [Nt], "v2t": [Nv with captions]}`` (numpy arrays).
    ``eval_sampling``: ``middle`` / ``linspace`` frames (None: the model config's, see ``encode.eval_sample_mode``).

    Ties rank pessimistically (``TIE_POLICY``). ``"ties"`` reports how many t2v queries tie exactly with
    another video (``t2v_queries``, ``fraction``); at ``TIE_WARN_FRACTION`` or more a warning is logged
    and printed by :func:`format_table` (such scores look collapsed).
    """
    scores, gt, info = score_split(model, split, batch_size=batch_size, num_workers=num_workers,
                                   precision=precision, progress=progress, eval_sampling=eval_sampling)
    absent = info["absent"]
    if info["num_encoded"] == 0:
        first = "; ".join(f"{s['video_id']}: {s['error']}" for s in info["skipped_videos"][:3])
        raise EvaluationError(
            f"none of the {len(split.videos)} videos of split {split.name!r} ({split.format}:{split.root}) "
            f"could be decoded ({first}); check the video folder (--video-root)"
        )
    skipped = info["skipped_videos"]
    if skipped:
        n_caps = int(absent[gt].sum())
        log.warning(
            "%d of %d videos could not be encoded and are scored as failures (%d captions ranked last): %s%s",
            len(skipped), len(split.videos), n_caps, ", ".join(s["video_id"] for s in skipped[:10]),
            " ..." if len(skipped) > 10 else "",
        )
    t2v, v2t, no_caption = _rank_all(scores, gt, absent, v2t_mode, dsl=False)
    tied = _t2v_tied_queries(scores, gt, absent)
    tied_fraction = tied / max(1, len(split.captions))
    if tied_fraction >= TIE_WARN_FRACTION:
        log.warning(
            "%d of %d captions (%.1f%%) tie EXACTLY with another video: the scores look collapsed or "
            "quantised; they are ranked pessimistically (ties count against the caption)",
            tied, len(split.captions), 100 * tied_fraction,
        )
    result = {
        "t2v": retrieval_metrics(t2v),
        "v2t": retrieval_metrics(v2t),
        "num_videos": len(split.videos),
        "num_captions": len(split.captions),
        "skipped_videos": skipped,
        "model": model.cfg.name or model.cfg.framework,
        "data": f"{split.format}:{split.root}" if split.format else str(split.root),
        "split": split.name,
        "ties": {"t2v_queries": tied, "fraction": tied_fraction, "warning": tied_fraction >= TIE_WARN_FRACTION},
        "protocol": {
            "ties": TIE_POLICY,
            "v2t": f"{v2t_mode}: {V2T_DEFINITION[v2t_mode]}",
            "skipped_videos": "scored as failures (worst rank + 1); denominators are the whole split",
            "videos_without_captions": no_caption,
            "t2v_queries_with_ties": tied,
            "frames": f"{info['sample_mode']} sampling of {model.cfg.video.num_frames} frames per video",
            "scoring": _scoring_rule(model),
        },
    }
    if return_ranks:
        result["ranks"] = {"t2v": t2v, "v2t": v2t}
    if dsl:
        d_t2v, d_v2t, _ = _rank_all(scores, gt, absent, v2t_mode, dsl=True)
        result["dsl"] = {
            "t2v": retrieval_metrics(d_t2v),
            "v2t": retrieval_metrics(d_v2t),
            "note": "EXTRA: dual softmax (S * softmax(100 S) over the test captions for t2v, over the test "
            "videos for v2t); needs the whole test query set, not comparable with plain numbers",
        }
    return result


def _scoring_rule(model) -> str:
    if not model.query_independent:
        return "model.score (pairwise fusion)"
    m = getattr(model.cfg, "num_pseudo_queries", 1)
    if m > 1:
        return f"max over each video's {m} vectors of text @ vectors.T (PIG-M; an index needs {m} rows per video)"
    return "text @ video.T (index path)"


def format_table(result: dict) -> str:
    """A readable plain-text table of an :func:`evaluate` result."""
    lines = [
        f"{result.get('model', '?')} on {result.get('data', '?')} (split {result.get('split', '?')}): "
        f"{result['num_videos']} videos, {result['num_captions']} captions",
        f"{'':6}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'MdR':>8}{'MnR':>9}",
    ]

    def row(name, m):
        return f"{name:6}{m['R@1']:8.1f}{m['R@5']:8.1f}{m['R@10']:8.1f}{m['MdR']:8.1f}{m['MnR']:9.2f}"

    lines += [row("t2v", result["t2v"]), row("v2t", result["v2t"])]
    if "dsl" in result:
        lines += ["DSL (extra; not comparable with the rows above):",
                  row("t2v", result["dsl"]["t2v"]), row("v2t", result["dsl"]["v2t"])]
    tied = result.get("protocol", {}).get("t2v_queries_with_ties", 0)
    if result.get("ties", {}).get("warning"):
        lines.append(f"WARNING: {tied} caption(s) ({100 * result['ties']['fraction']:.1f}%) tie exactly with "
                     "another video: the scores look collapsed; ties rank against the caption (pessimistic)")
    elif tied:
        lines.append(f"note: {tied} caption(s) tie exactly with another video; ties rank against the caption")
    skipped = result.get("skipped_videos") or []
    if skipped:
        lines.append(f"WARNING: {len(skipped)} video(s) could not be decoded; their captions count as misses:")
        lines += [f"  {s['video_id']}: {s['error']}" for s in skipped[:10]]
        if len(skipped) > 10:
            lines.append(f"  ... and {len(skipped) - 10} more (see --json)")
    return "\n".join(lines)


def to_jsonable(result: dict) -> dict:
    """``result`` without numpy arrays (ranks become lists)."""
    out = dict(result)
    if "ranks" in out:
        out["ranks"] = {k: np.asarray(v).tolist() for k, v in out["ranks"].items()}
    return out
