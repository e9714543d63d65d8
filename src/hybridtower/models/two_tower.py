"""Two-Tower baselines: CLIP4Clip meanP and CLIP-ViP (video CLS). Video vectors need no text."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import FrameEncoder, RetrievalModel
from .config import ModelConfig
from .video_encoder import VideoProxyEncoder


class MeanPooling(RetrievalModel):
    """CLIP4Clip meanP: each frame's CLIP image feature L2-normalised, averaged, normalised again
    (CLIP4Clip normalises the frame outputs before its mean pooling)."""

    query_independent = True

    def __init__(self, cfg: ModelConfig, clip: nn.Module, preprocess: dict):
        super().__init__(cfg, clip, preprocess)
        self.video_encoder = FrameEncoder(clip.visual)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        frames_n = F.normalize(self.video_encoder(frames), dim=-1)
        return F.normalize(frames_n.mean(dim=1), dim=-1)


class ClipVip(RetrievalModel):
    """CLIP-ViP: the projected video-CLS output of the video-proxy encoder, L2-normalised."""

    query_independent = True

    def __init__(self, cfg: ModelConfig, clip: nn.Module, preprocess: dict):
        super().__init__(cfg, clip, preprocess)
        self.video_encoder = VideoProxyEncoder(clip.visual, cfg.video)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.video_encoder(frames, attn_layer=None).video_cls, dim=-1)
