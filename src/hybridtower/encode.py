"""Batched offline/online encoding shared by evaluation, indexing and analysis.

Evaluation and the search index encode videos and captions through these same functions, so the
vectors ``evaluate`` scores are the vectors ``index`` stores.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from .data.video.transforms import PreprocessConfig
from .models import RetrievalModel


def preprocess_from_dict(p: dict) -> PreprocessConfig:
    """A data-side preprocessing config from a backbone's preprocessing dict (``hub.load_clip``'s second value)."""
    return PreprocessConfig(
        image_size=int(p["image_size"]), mean=tuple(p["mean"]), std=tuple(p["std"]),
        resize_mode=p.get("resize_mode", "squash"), interpolation=p.get("interpolation", "bicubic"),
        fill=p.get("fill", 0),
    )


def preprocess_for(model: RetrievalModel) -> PreprocessConfig:
    """The data-side preprocessing config the model's backbone expects."""
    return preprocess_from_dict(model.preprocess_config())


# eval sampling name (model config / CLI) -> frame sampler mode of ``data.video.sampling``
_SAMPLER_MODE = {"middle": "uniform", "linspace": "linspace"}


def eval_sample_mode(model: RetrievalModel, override: str | None = None) -> str:
    """The frame sampler mode (``sample_indices``) for evaluating / indexing ``model``: ``"linspace"``
    for PIG and CLIP-ViP (their release), ``"uniform"`` (segment middles) for meanP and X-Pool, unless
    the model config's ``video.eval_sampling`` or ``override`` (``middle`` / ``linspace``) says otherwise."""
    return _SAMPLER_MODE[model.cfg.resolved_eval_sampling(override)]


def autocast_context(device: torch.device, precision: str = "fp32"):
    """bf16/fp16 autocast on CUDA; a no-op for fp32 or on the CPU."""
    if precision == "fp32" or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def encode_texts(model: RetrievalModel, texts: list[str], batch_size: int = 512, precision: str = "fp32") -> torch.Tensor:
    """Captions -> normalised text features [N, D] (float32, on the CPU)."""
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(texts), batch_size):
        tokens = model.tokenize(texts[s : s + batch_size]).to(device)
        with autocast_context(device, precision):
            out.append(model.encode_text(tokens).float().cpu())
    if not out:
        return torch.zeros(0, model.embed_dim)
    return torch.cat(out)


@dataclass
class EncodedVideos:
    features: torch.Tensor  # [N_ok, D] (query-independent), [N_ok, M, D] (PIG-M) or [N_ok, T, D] (X-Pool)
    indices: torch.Tensor  # [N_ok] dataset indices of the rows of ``features``
    errors: list[dict] = field(default_factory=list)  # {"video_index", "video_id", "error"} of skipped videos


@torch.no_grad()
def encode_videos(
    model: RetrievalModel,
    dataset: Dataset,
    batch_size: int = 16,
    num_workers: int = 0,
    precision: str = "fp32",
    progress: bool = True,
    desc: str = "encode videos",
) -> EncodedVideos:
    """Every item of a ``VideoFrames``-style dataset -> the model's stored video representation.

    Broken or missing videos are skipped and listed in ``errors``; they never stop the run.
    """
    from tqdm.auto import tqdm

    from .data.datasets import collate_skip_errors

    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skip_errors)
    feats, idx, errors = [], [], []
    bar = tqdm(total=len(dataset), desc=desc, unit="video", disable=not progress)
    for batch in loader:
        errors.extend(batch["errors"])
        if batch["frames"] is not None:
            with autocast_context(device, precision):
                f = model.encode_video(batch["frames"].to(device, non_blocking=True))
            feats.append(f.float().cpu())
            idx.append(batch["video_index"])
        bar.update(len(batch["video_index"]) + len(batch["errors"]))
    bar.close()
    if feats:
        return EncodedVideos(torch.cat(feats), torch.cat(idx), errors)
    m = getattr(model.cfg, "num_pseudo_queries", 1)
    empty = torch.zeros(0, m, model.embed_dim) if m > 1 else torch.zeros(0, model.embed_dim)
    return EncodedVideos(empty, torch.zeros(0, dtype=torch.long), errors)
