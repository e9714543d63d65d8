"""Single-Tower X-Pool: the real caption attends over per-frame CLIP features (CVPR 2022).

The stored video side is the per-frame features [Nv, T, D]; every (query, video) pair needs a fusion pass
at search time, so the model is not indexable by a dot product (``query_independent = False``): search
retrieves candidates some other way and re-ranks them with ``score``.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FrameEncoder, RetrievalModel
from .config import ModelConfig
from .fusion import XPoolFusion


class XPool(RetrievalModel):
    query_independent = False

    def __init__(self, cfg: ModelConfig, clip: nn.Module, preprocess: dict):
        super().__init__(cfg, clip, preprocess)
        self.video_encoder = FrameEncoder(clip.visual)
        self.fusion = XPoolFusion(self.embed_dim, cfg.fusion)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame features [B, T, D] (what X-Pool can precompute offline)."""
        return self.video_encoder(frames)

    def score(self, text: torch.Tensor, video: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """Cosine of each text with the video pooled under that text: [Nt, Nv]."""
        return self.fusion.score_pairs(text, video, chunk=chunk)
