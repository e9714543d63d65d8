"""PIG: Fine-grained Pseudo-query Interaction and Generation (Hybrid-Tower, ICCV 2025).

Video side, computed offline from the video alone (method.md sections 1.1-1.4 and Appendix A)::

    tokens = ViP-ViT(frames)                      x_v: video CLS + proxies [M], x_f: frame CLS [T]
    its    = top-k patches by the ITS layer's video-CLS attention (max over heads)
    t_p    = Generator([x_v; x_f; its])           pseudo-query in the text feature space
    v      = XPoolFusion(t_p, [x_v; x_f])         the stored video vector (L2-normalised)

``fusion.enabled = False`` (preset ``pig-nofusion-*``, an ablation for the investigation of issue 9) stores
``v = t_p / |t_p|`` instead: the same generator and losses, no pseudo-interaction fusion (the fusion
weights stay in the model, untrained and unused).

Online: ``score(t, v) = t . v`` (exactly Two-Tower's cost). Training (``forward``) also returns ``t_p``
for the reconstruction loss ``2 - 2 cos(t_p, t)``.

PIG-M (``cfg.num_pseudo_queries = M > 1``, opt-in, past the paper): the T frames are cut into M
contiguous temporal segments; pseudo-query m is generated from ``[x_v; x_f of segment m; ITS patches of
segment m]`` (the top ``ceil(k / M)`` patches among that segment's frames, by the same video-CLS
attention), so the M generator inputs differ by construction; each t_p,m is fused against ALL the
video's tokens ``[x_v; x_f]`` with the same X-Pool fusion. ``encode_video`` then returns ``[B, M, D]``
and ``score(t, v)`` is the max over the M vectors (a matrix product over M x N stored vectors, then a
max per video). With M = 1 every path is the paper's PIG, bit for bit.
"""

from __future__ import annotations

import math
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
    video: torch.Tensor | None  # [B, D] normalised fused embedding ([B, M, D] for PIG-M; None if not fused)
    pseudo_query: torch.Tensor  # [B, D] t_p ([B, M, D] for PIG-M)
    its_positions: torch.Tensor  # [B, k] sequence positions of the selected patches ([B, M, k_seg] for PIG-M)
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
        """Keys/values of the fusion: [x_v; x_f] (ITS patches are not used here, as in the release); the
        ``fusion.keys`` ablations keep only the frame CLS tokens x_f or only the global tokens x_v."""
        keys = self.cfg.fusion.keys
        if not vt.has_frame_cls or keys == "global":
            return vt.global_tokens
        if keys == "frames":
            return vt.frame_tokens
        return torch.cat([vt.global_tokens, vt.frame_tokens], dim=1)

    def video_features(self, frames: torch.Tensor, fuse: bool = True, k: int | None = None) -> PigVideoOutput:
        k = self.cfg.its.k if k is None else k
        vt = self.video_encoder(frames, attn_layer=self.cfg.its.layer if k != 0 else None)
        return self.video_from_tokens(vt, fuse=fuse, k=k)

    @property
    def num_pseudo_queries(self) -> int:
        return self.cfg.num_pseudo_queries

    def video_from_tokens(self, vt: VideoTokens, fuse: bool = True, k: int | None = None) -> PigVideoOutput:
        """ITS + generator + fusion on encoder outputs (lets an analysis vary k without re-encoding)."""
        if self.num_pseudo_queries > 1:
            return self._multi_from_tokens(vt, fuse=fuse, k=k)
        positions = self.its_positions(vt, k)
        t_p = self.generator(self.generator_inputs(vt, positions))
        video = self._video_vectors(t_p, vt) if fuse else None
        return PigVideoOutput(video=video, pseudo_query=t_p, its_positions=positions, tokens=vt)

    @property
    def fusion_enabled(self) -> bool:
        return bool(getattr(self.cfg.fusion, "enabled", True))

    def _video_vectors(self, t_p: torch.Tensor, vt: VideoTokens, repeat: int = 1) -> torch.Tensor:
        """The stored vectors of ``t_p`` [B*repeat, D]: ``fusion(t_p, [x_v; x_f])`` normalised (the paper's
        PIG), or with ``fusion.enabled = False`` ("PIG without fusion", an ablation) ``t_p`` itself,
        normalised. ``repeat`` pseudo-queries per video (PIG-M) each see the whole video."""
        if not self.fusion_enabled:
            return F.normalize(t_p, dim=-1)
        kv = self.fusion_tokens(vt)
        if repeat > 1:
            kv = kv.repeat_interleave(repeat, dim=0)
        return F.normalize(self.fusion(t_p, kv), dim=-1)

    # --- PIG-M: one pseudo-query per temporal segment ---
    def segments(self, num_frames: int) -> list[list[int]]:
        """The frames of each of the M segments: contiguous, nearly equal, in order. With fewer frames than
        M (an image fed as a 1-frame video) segments share frames (their pseudo-queries then coincide)."""
        m = self.num_pseudo_queries
        out = []
        for i in range(m):
            lo = (i * num_frames) // m
            hi = max(lo + 1, ((i + 1) * num_frames) // m)
            out.append(list(range(lo, min(hi, num_frames))) or [num_frames - 1])
        return out

    def segment_k(self, k: int | None = None) -> int:
        """ITS patches per segment: ceil(k / M) (all of the segment's for k = -1, none for k = 0)."""
        k = self.cfg.its.k if k is None else k
        return k if k <= 0 else math.ceil(k / self.num_pseudo_queries)

    def _segment_patch_positions(self, vt: VideoTokens, frames: list[int]) -> torch.Tensor:
        off = 1 if vt.has_frame_cls else 0
        patches = vt.frame_len - off
        base = torch.tensor(frames, device=vt.tokens.device) * vt.frame_len + vt.num_global + off
        return (base[:, None] + torch.arange(patches, device=vt.tokens.device)[None, :]).flatten()

    def _segment_inputs(self, vt: VideoTokens, frames: list[int], k_seg: int, scores) -> tuple[torch.Tensor, torch.Tensor]:
        b = vt.tokens.shape[0]
        if k_seg == 0:
            positions = torch.zeros(b, 0, dtype=torch.long, device=vt.tokens.device)
        else:
            positions = select_informative(scores, self._segment_patch_positions(vt, frames), k_seg)
        parts = []
        if self.cfg.generator.use_global_tokens:
            parts.append(vt.global_tokens)
        if self.cfg.generator.use_frame_tokens and vt.has_frame_cls:
            parts.append(vt.frame_tokens[:, frames])
        parts.append(gather_tokens(vt.tokens, positions))
        return torch.cat(parts, dim=1), positions

    def _multi_from_tokens(self, vt: VideoTokens, fuse: bool, k: int | None) -> PigVideoOutput:
        b, m = vt.tokens.shape[0], self.num_pseudo_queries
        k_seg = self.segment_k(k)
        scores = reduce_heads(vt.global_attn[:, :, 0], self.cfg.its.head_reduction) if k_seg != 0 else None
        inputs, positions = zip(*(self._segment_inputs(vt, seg, k_seg, scores) for seg in self.segments(vt.num_frames)))
        if len({x.shape[1] for x in inputs}) == 1:  # one generator pass over the B x M sequences
            stacked = torch.stack(inputs, dim=1)  # [B, M, n, D]
            t_p = self.generator(stacked.flatten(0, 1)).view(b, m, -1)
        else:  # segments of unequal length (T not a multiple of M): one pass per segment
            t_p = torch.stack([self.generator(x) for x in inputs], dim=1)
        video = None
        if fuse:
            video = self._video_vectors(t_p.flatten(0, 1), vt, repeat=m).view(b, m, -1)
        return PigVideoOutput(video=video, pseudo_query=t_p, its_positions=torch.stack(positions, dim=1), tokens=vt)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, D] stored vectors (PIG), or [B, M, D] for PIG-M (``score`` takes the max over M)."""
        return self.video_features(frames).video

    def forward(self, frames: torch.Tensor, tokens: torch.Tensor, fuse: bool = True) -> ModelOutput:
        """Training outputs. ``fuse=False`` (stage 1) skips the fusion: only t and t_p are needed."""
        out = self.video_features(frames, fuse=fuse)
        return ModelOutput(text=self.encode_text(tokens), video=out.video, pseudo_query=out.pseudo_query)
