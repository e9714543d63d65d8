"""Shared pieces of the ``hybridtower analyze`` analyses: PIG's per-video outputs over a split, scoring
with the evaluation protocol, and writing a table as Markdown + JSON.

Every analysis scores with :mod:`hybridtower.eval.metrics` (the evaluation protocol: tie policy, v2t
over caption groups, skipped videos ranked as failures), never with metrics of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.errors import HybridTowerError
from ..eval.runner import expand_scores  # the evaluation's own NaN-column layout, re-exported for the analyses

__all__ = [
    "AnalysisError",
    "PigFeatures",
    "require_pig",
    "subset_split",
    "collect_pig_features",
    "encode_captions",
    "expand_scores",
    "retrieval_from_scores",
    "retrieval_of_encoded",
    "markdown_table",
    "write_outputs",
]


class AnalysisError(HybridTowerError):
    """An analysis cannot run on what it was given (wrong model kind, empty split, bad option)."""


@dataclass
class PigFeatures:
    """PIG's offline outputs for the videos of a split that could be decoded (rows follow ``indices``)."""

    video: torch.Tensor  # [N, D] stored vectors v (normalised)
    pseudo_query: torch.Tensor  # [N, D] t_p (not normalised)
    fusion_tokens: torch.Tensor  # [N, n, D] the fusion's keys/values [x_v; x_f]
    video_cls: torch.Tensor  # [N, D] the encoder's video-CLS output (normalised): CLIP-ViP's vector
    its_positions: torch.Tensor  # [N, k] sequence positions ITS selected
    indices: torch.Tensor  # [N] positions in ``split.videos``
    errors: list[dict] = field(default_factory=list)


def require_pig(model, what: str = "this analysis") -> None:
    if model.cfg.framework != "pig":
        raise AnalysisError(f"{what} needs a PIG checkpoint, got a {model.cfg.framework!r} model "
                            f"({model.cfg.name or 'custom config'})")


def subset_split(split, max_videos: int | None):
    """The first ``max_videos`` videos of ``split`` and their captions (the whole split if None)."""
    if not max_videos or max_videos >= len(split.videos):
        return split
    from ..data.annotations import SplitData

    keep = split.videos[:max_videos]
    ids = {v.video_id for v in keep}
    return SplitData(name=split.name, videos=keep, captions=[c for c in split.captions if c.video_id in ids],
                     missing=[m for m in split.missing if m in ids], format=split.format, root=split.root,
                     video_root=split.video_root)


@torch.no_grad()
def collect_pig_features(model, split, k: int | None = None, batch_size: int = 16, num_workers: int = 0,
                         progress: bool = True, desc: str = "PIG video side") -> PigFeatures:
    """Run PIG's video side (``model.video_features(frames, k=k)``) over every video of ``split``."""
    return collect_pig_features_for_ks(model, split, [k], batch_size, num_workers, progress, desc)[k]


@torch.no_grad()
def collect_pig_features_for_ks(model, split, ks: list, batch_size: int = 16, num_workers: int = 0,
                                progress: bool = True, desc: str = "PIG video side") -> dict:
    """PIG's video side at every ITS top-k in ``ks`` (None = the checkpoint's): ``{k: PigFeatures}``.

    Each video is decoded and encoded once; only ITS, the generator and the fusion run once per k.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from ..data.datasets import VideoFrames, collate_skip_errors
    from ..encode import eval_sample_mode, preprocess_for

    require_pig(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    ds = VideoFrames(split, num_frames=model.cfg.video.num_frames, preprocess=preprocess_for(model),
                     sample_mode=eval_sample_mode(model))
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skip_errors)
    names = ("video", "pseudo_query", "fusion_tokens", "video_cls", "its")
    cols = {k: {name: [] for name in names} for k in ks}
    idx: list[torch.Tensor] = []
    errors: list[dict] = []
    bar = tqdm(total=len(ds), desc=desc, unit="video", disable=not progress)
    try:
        for batch in loader:
            errors.extend(batch["errors"])
            if batch["frames"] is not None:
                vt = model.video_encoder(batch["frames"].to(device), attn_layer=model.cfg.its.layer)
                fusion_tokens = model.fusion_tokens(vt).float().cpu()
                video_cls = torch.nn.functional.normalize(vt.video_cls.float(), dim=-1).cpu()
                for k in ks:
                    out = model.video_from_tokens(vt, k=k)
                    c = cols[k]
                    c["video"].append(out.video.float().cpu())
                    c["pseudo_query"].append(out.pseudo_query.float().cpu())
                    c["fusion_tokens"].append(fusion_tokens)
                    c["video_cls"].append(video_cls)
                    c["its"].append(out.its_positions.cpu())
                idx.append(batch["video_index"])
            bar.update(len(batch["video_index"]) + len(batch["errors"]))
    finally:
        bar.close()
        model.train(was_training)
    if not idx:
        first = "; ".join(f"{e['video_id']}: {e['error']}" for e in errors[:3])
        raise AnalysisError(f"no video of split {split.name!r} could be decoded ({first})")
    errors = sorted(errors, key=lambda e: e["video_index"])
    indices = torch.cat(idx)
    return {k: PigFeatures(**{name: torch.cat(c[name]) for name in names[:4]}, its_positions=torch.cat(c["its"]),
                           indices=indices, errors=errors) for k, c in cols.items()}


def encode_captions(model, split) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised caption features [Nt, D], ground-truth video index [Nt]) in ``split.captions`` order."""
    from ..encode import encode_texts

    if not split.captions:
        raise AnalysisError(f"split {split.name!r} has no captions")
    text = encode_texts(model, [c.text for c in split.captions])
    gt = torch.tensor(split.caption_video_indices(), dtype=torch.long)
    return text, gt


def retrieval_from_scores(scores: torch.Tensor, gt: torch.Tensor, absent: torch.Tensor) -> dict:
    """t2v and v2t metrics (R@1/5/10, MdR, MnR) of a full ``[Nt, Nv]`` score matrix, evaluation protocol."""
    from ..eval.runner import metrics_from_scores

    return metrics_from_scores(scores, gt, absent)


def retrieval_of_encoded(scored: torch.Tensor, indices: torch.Tensor, num_videos: int, gt: torch.Tensor) -> dict:
    """Metrics of scores over the encoded videos only (rows of ``indices``): expand, then rank."""
    scores, absent = expand_scores(scored, indices, num_videos)
    return retrieval_from_scores(scores, gt, absent)


def _cell(v) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        # small quantities (cosines, GFLOPs, scores) keep 3 decimals; recalls, ranks and ms get one, so a
        # column reads 7.1 / 24.5 rather than 7.100 / 24.5
        return f"{v:.3f}" if abs(v) < 1 else f"{v:.1f}"
    return "-" if v is None else str(v)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_outputs(out_dir, name: str, markdown: str, data: dict) -> dict[str, str]:
    """``OUT/name.md`` and ``OUT/name.json`` (atomic); returns their paths."""
    from ..core.io import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / f"{name}.md", out / f"{name}.json"
    atomic_write_text(md, markdown)
    atomic_write_json(js, data)
    return {"markdown": str(md), "json": str(js)}


def split_label(split) -> str:
    return f"{split.format}:{split.root} (split {split.name})" if split.format else f"{split.root} ({split.name})"


def save_figure(fig, path) -> None:
    from ..core.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
