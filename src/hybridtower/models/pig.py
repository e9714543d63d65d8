"""PIG: Fine-grained Pseudo-query Interaction and Generation (Hybrid-Tower, ICCV 2025).

Video side, computed offline from the video alone (method.md sections 1.1-1.4 and Appendix A)::

    tokens = ViP-ViT(frames)                      x_v: video CLS + proxies [M], x_f: frame CLS [T]
    its    = top-k patches by the ITS layer's video-CLS attention (max over heads)
    t_p    = Generator([x_v; x_f; its])           pseudo-query in the text feature space
    v      = XPoolFusion(t_p, [x_v; x_f])         the stored video vector (L2-normalised)

Online: ``score(t, v) = t . v`` (exactly Two-Tower's cost). Training (``forward``) also returns ``t_p``
for the reconstruction loss ``2 - 2 cos(t_p, t)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import ModelOutput, RetrievalModel
from .config import ModelConfig
from .fusion import XPoolFusion
from .generator import PseudoQueryGenerator
from .its import gather_tokens, reduce_heads, select_informative
from .video_encoder import VideoProxyEncoder, VideoTokens


@dataclass
class PigVideoOutput:
    video: torch.Tensor | None  # [B, D] normalised fused embedding (None if fusion was skipped)
    pseudo_query: torch.Tensor  # [B, D] t_p
    its_positions: torch.Tensor  # [B, k] sequence positions of the selected patches
    tokens: VideoTokens  # every encoder output


class PIG(RetrievalModel):
    query_independent = True

    def __init__(self, cfg: ModelConfig, clip: nn.Module, preprocess: dict):
        super().__init__(cfg, clip, preprocess)
        self.video_encoder = VideoProxyEncoder(clip.visual, cfg.video)
        self.generator = PseudoQueryGenerator(self.text_encoder, self.embed_dim, cfg.generator)
        out_dim = self.embed_dim if self.generator.text_projection is not None else self.text_encoder.width
        if out_dim != self.embed_dim:
            raise ValueError(
                f"generator output width {out_dim} differs from the joint dim {self.embed_dim}; "
                "enable generator.text_projection for this backbone"
            )
        self.fusion = XPoolFusion(self.embed_dim, cfg.fusion)

    # --- pieces, exposed for analysis ---
    def its_positions(self, vt: VideoTokens, k: int | None = None) -> torch.Tensor:
        k = self.cfg.its.k if k is None else k
        if k == 0:
            return torch.zeros(vt.tokens.shape[0], 0, dtype=torch.long, device=vt.tokens.device)
        scores = reduce_heads(vt.global_attn[:, :, 0], self.cfg.its.head_reduction)  # video-CLS row
        return select_informative(scores, vt.patch_positions, k)

    def generator_inputs(self, vt: VideoTokens, positions: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.cfg.generator.use_global_tokens:
            parts.append(vt.global_tokens)
        if self.cfg.generator.use_frame_tokens and vt.has_frame_cls:
            parts.append(vt.frame_tokens)
        parts.append(gather_tokens(vt.tokens, positions))
        return torch.cat(parts, dim=1)

    def fusion_tokens(self, vt: VideoTokens) -> torch.Tensor:
        """Keys/values of the fusion: [x_v; x_f] (ITS patches are not used here, as in the release)."""
        if vt.has_frame_cls:
            return torch.cat([vt.global_tokens, vt.frame_tokens], dim=1)
        return vt.global_tokens

    def video_features(self, frames: torch.Tensor, fuse: bool = True, k: int | None = None) -> PigVideoOutput:
        k = self.cfg.its.k if k is None else k
        vt = self.video_encoder(frames, attn_layer=self.cfg.its.layer if k != 0 else None)
        return self.video_from_tokens(vt, fuse=fuse, k=k)

    def video_from_tokens(self, vt: VideoTokens, fuse: bool = True, k: int | None = None) -> PigVideoOutput:
        """ITS + generator + fusion on encoder outputs (lets an analysis vary k without re-encoding)."""
        positions = self.its_positions(vt, k)
        t_p = self.generator(self.generator_inputs(vt, positions))
        video = F.normalize(self.fusion(t_p, self.fusion_tokens(vt)), dim=-1) if fuse else None
        return PigVideoOutput(video=video, pseudo_query=t_p, its_positions=positions, tokens=vt)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        return self.video_features(frames).video

    def forward(self, frames: torch.Tensor, tokens: torch.Tensor, fuse: bool = True) -> ModelOutput:
        """Training outputs. ``fuse=False`` (stage 1) skips the fusion: only t and t_p are needed."""
        out = self.video_features(frames, fuse=fuse)
        return ModelOutput(text=self.encode_text(tokens), video=out.video, pseudo_query=out.pseudo_query)
