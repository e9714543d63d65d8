"""The interface every retrieval framework implements.

    tokens = model.tokenize(["a red ball bounces"])
    t = model.encode_text(tokens)          # [Nt, D], L2-normalised
    v = model.encode_video(frames)         # frames [Nv, T, 3, S, S]; see ``video_embedding_shape``
    s = model.score(t, v)                  # [Nt, Nv] cosine-type scores, higher = better

``query_independent`` says whether ``encode_video`` yields one stored vector per video that is scored by a
dot product (PIG, Two-Tower: indexable), or features that need the query at search time (X-Pool:
re-rank only). ``forward(frames, tokens)`` returns what the training losses need.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .text_encoder import TextEncoder
from .tokenizer import Tokenizer


@dataclass
class ModelOutput:
    text: torch.Tensor  # [B, D] normalised text features
    video: torch.Tensor | None  # what ``score`` takes as the video side (None when not computed)
    pseudo_query: torch.Tensor | None = None  # PIG's t_p [B, D] ([B, M, D] for PIG-M; not normalised)


def multi_vector_scores(text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """fp32 scores [Nt, Nv]: ``text @ video.T`` for video [Nv, D]; for video [Nv, M, D] one matrix
    product over the Nv x M stored vectors, then the max over each video's M columns."""
    with torch.autocast(device_type=text.device.type, enabled=False):
        t, v = text.float(), video.float()
        if v.dim() == 2:
            return t @ v.t()
        if v.dim() != 3:
            raise ValueError(f"video vectors must be [Nv, D] or [Nv, M, D], got {tuple(v.shape)}")
        nv, m = v.shape[:2]
        return (t @ v.flatten(0, 1).t()).view(t.shape[0], nv, m).amax(dim=-1)


class FrameEncoder(nn.Module):
    """Per-frame CLIP image features (CLIP4Clip / X-Pool): [B, T, 3, S, S] -> [B, T, D]."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual
        self.grad_checkpointing = False

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        return self.visual(frames.flatten(0, 1)).view(b, t, -1)


class RetrievalModel(nn.Module):
    query_independent: bool = True
    # the text feature is read at the EOT token (the highest id) of a causal transformer, so positions after
    # a batch's last EOT cannot change any row (the search path skips them); False for other text towers
    causal_text: bool = True

    def __init__(self, cfg: ModelConfig, clip: nn.Module, preprocess: dict):
        super().__init__()
        self.cfg = cfg
        self.text_encoder = TextEncoder(clip)
        self.embed_dim = int(clip.visual.output_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)))
        self._preprocess = dict(preprocess)
        self._tokenizer = Tokenizer(cfg.text_context_length)

    # ----- text side (online) -----
    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    def tokenize(self, texts: list[str] | str) -> torch.Tensor:
        return self._tokenizer(texts).to(self.logit_scale.device)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_encoder(tokens), dim=-1)

    # ----- video side (offline) -----
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """[Nt, D] x video side -> [Nt, Nv] float32. Query-independent models: one matrix product
        (video [Nv, D]), or for several stored vectors per video (PIG-M, video [Nv, M, D]) the max over
        each video's M vectors (see :func:`multi_vector_scores`).

        Always computed in fp32, also under a bf16/fp16 autocast: the training logits are these scores
        times ~100, and a 16-bit product (3 significant digits in bf16) would blur their ranking.
        """
        return multi_vector_scores(text, video)

    def forward(self, frames: torch.Tensor, tokens: torch.Tensor) -> ModelOutput:
        return ModelOutput(text=self.encode_text(tokens), video=self.encode_video(frames))

    @property
    def vectors_per_video(self) -> int:
        """Stored vectors per video of a query-independent model: 1, or M for PIG-M (``encode_video`` then
        returns [B, M, D] and a video's score is the max over its M vectors)."""
        return int(getattr(self.cfg, "num_pseudo_queries", 1))

    # ----- bookkeeping -----
    @property
    def framework(self) -> str:
        return self.cfg.framework

    def preprocess_config(self) -> dict:
        """How frames must be prepared: image_size, mean, std, num_frames, resize_mode, interpolation."""
        return dict(self._preprocess, num_frames=self.cfg.video.num_frames)

    def part_of(self, name: str) -> str:
        for part in ("video_encoder", "text_encoder", "generator", "fusion"):
            if name.startswith(part + "."):
                return part
        return "other"

    def parameter_counts(self) -> dict[str, int]:
        counts = {"video_encoder": 0, "text_encoder": 0, "generator": 0, "fusion": 0, "other": 0}
        for name, p in self.named_parameters():
            counts[self.part_of(name)] += p.numel()
        counts["total"] = sum(counts.values())
        return counts

    def set_trainable(self, parts: str | list[str] = "all") -> None:
        """``"all"`` trains everything; otherwise only the named parts (e.g. ``["generator"]`` for stage 1)."""
        if parts == "all":
            for p in self.parameters():
                p.requires_grad_(True)
            return
        parts = [parts] if isinstance(parts, str) else list(parts)
        known = {"video_encoder", "text_encoder", "generator", "fusion", "other"}
        if unknown := set(parts) - known:
            raise ValueError(f"unknown model part(s) {sorted(unknown)}; known: {sorted(known)}")
        for name, p in self.named_parameters():
            p.requires_grad_(self.part_of(name) in parts)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if isinstance(self.video_encoder, FrameEncoder):
            self.video_encoder.visual.set_grad_checkpointing(enable)
        else:
            self.video_encoder.grad_checkpointing = enable
        self.text_encoder.transformer.grad_checkpointing = enable

    def clamp_logit_scale(self) -> None:
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, self.cfg.logit_scale_max)
