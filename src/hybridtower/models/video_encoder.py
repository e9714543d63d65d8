"""CLIP-ViP style video encoder around an open_clip ``VisionTransformer`` (method.md section 1.1).

Token sequence per video, in this order::

    [c, a_1..a_P, (f_1, x_1,1..x_1,N), ..., (f_T, x_T,1..x_T,N)]

``c`` is CLIP's class embedding, ``a_i`` the video proxy tokens (M = 1 + P global tokens, no temporal
embedding), ``f_t`` one *shared* frame-CLS token plus the temporal embedding of frame t, ``x_t,i`` the
patch embeddings plus spatial and temporal embeddings. Every layer uses *video-proxy-guided* attention:
global rows attend to every token; the rows of frame t attend to the global tokens and frame t only.

The attention is computed block-wise with the block's own ``in_proj`` / ``out_proj`` weights (global rows
against the whole sequence; each frame's rows against ``M + L`` keys), never as a dense masked
``N x N`` map, so ViT-B/16's 2,368-token sequence costs ``O(N * (M + L))`` rather than ``O(N^2)``.
``dense_reference_forward`` is the dense masked version, kept for tests.

Reused from open_clip (weights load unchanged): ``conv1``, ``class_embedding``, ``positional_embedding``,
``ln_pre``, every residual block, ``ln_post`` and ``proj``. New parameters: ``proxy_tokens``,
``frame_cls``, ``temporal_embedding``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import VideoConfig


@dataclass
class VideoTokens:
    """Outputs of the video encoder, all projected into the joint space (D = embed dim).

    tokens:       [B, N, D] every token after ln_post and the visual projection (N = M + T * L)
    global_attn:  [B, H, M, N] post-softmax attention of the global rows in the ITS layer
    num_global:   M;  num_frames: T;  frame_len: L (= 1 frame-CLS + P patches, or P without frame CLS)
    """

    tokens: torch.Tensor
    global_attn: torch.Tensor | None
    num_global: int
    num_frames: int
    frame_len: int
    has_frame_cls: bool

    @property
    def video_cls(self) -> torch.Tensor:  # [B, D]
        return self.tokens[:, 0]

    @property
    def global_tokens(self) -> torch.Tensor:  # x_v: [B, M, D]
        return self.tokens[:, : self.num_global]

    @property
    def frame_cls_positions(self) -> torch.Tensor:
        if not self.has_frame_cls:
            return torch.zeros(0, dtype=torch.long, device=self.tokens.device)
        return self.num_global + torch.arange(self.num_frames, device=self.tokens.device) * self.frame_len

    @property
    def frame_tokens(self) -> torch.Tensor:  # x_f: [B, T, D]
        return self.tokens[:, self.frame_cls_positions]

    @property
    def patch_positions(self) -> torch.Tensor:
        """Sequence positions of every patch token (global and frame-CLS positions excluded)."""
        n = self.tokens.shape[1]
        mask = torch.ones(n, dtype=torch.bool, device=self.tokens.device)
        mask[: self.num_global] = False
        mask[self.frame_cls_positions] = False
        return mask.nonzero().squeeze(1)

    @property
    def patch_tokens(self) -> torch.Tensor:  # x_p: [B, T*P, D]
        return self.tokens[:, self.patch_positions]


def vip_attention_mask(num_global: int, num_frames: int, frame_len: int, device=None) -> torch.Tensor:
    """Boolean [N, N] mask (True = may attend) of video-proxy-guided attention, built entry by entry."""
    n = num_global + num_frames * frame_len
    allowed = torch.zeros(n, n, dtype=torch.bool, device=device)
    allowed[:num_global, :] = True
    allowed[num_global:, :num_global] = True
    for t in range(num_frames):
        s = num_global + t * frame_len
        allowed[s : s + frame_len, s : s + frame_len] = True
    return allowed


class VideoProxyEncoder(nn.Module):
    """Video encoder over an open_clip ``VisionTransformer`` (held as ``self.visual``, not copied)."""

    def __init__(self, visual: nn.Module, cfg: VideoConfig):
        super().__init__()
        if getattr(visual, "attn_pool", None) is not None:
            raise ValueError("attentional-pool vision towers are not supported by the video encoder")
        self.visual = visual
        self.cfg = cfg
        width = visual.class_embedding.shape[0]
        self.width = width
        self.heads = visual.transformer.resblocks[0].attn.num_heads
        self.proxy_tokens = nn.Parameter(torch.randn(cfg.num_proxies, width))
        if cfg.proxy_init == "class":
            with torch.no_grad():
                self.proxy_tokens.copy_(visual.class_embedding.detach().expand(cfg.num_proxies, -1))
        self.frame_cls = nn.Parameter(visual.class_embedding.detach().clone()) if cfg.frame_cls else None
        self.temporal_embedding = (
            nn.Parameter(torch.zeros(1, cfg.num_frames, width)) if cfg.temporal_embedding else None
        )
        self.grad_checkpointing = False

    def reset_new_parameters(self) -> None:
        """Re-initialise the ViP additions from the (possibly newly loaded) CLIP weights."""
        with torch.no_grad():
            if self.cfg.proxy_init == "class":
                self.proxy_tokens.copy_(self.visual.class_embedding.expand_as(self.proxy_tokens))
            else:
                self.proxy_tokens.normal_()
            if self.frame_cls is not None:
                self.frame_cls.copy_(self.visual.class_embedding)
            if self.temporal_embedding is not None:
                self.temporal_embedding.zero_()

    @property
    def num_global(self) -> int:
        return 1 + self.cfg.num_proxies

    @property
    def num_layers(self) -> int:
        return len(self.visual.transformer.resblocks)

    def _temporal(self, num_frames: int, dtype) -> torch.Tensor:
        te = self.temporal_embedding
        if te.shape[1] != num_frames:  # linear interpolation over time
            te = F.interpolate(te.transpose(1, 2), size=num_frames, mode="linear", align_corners=False).transpose(1, 2)
        return te.to(dtype)

    def embed(self, frames: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """frames [B, T, 3, S, S] -> (sequence [B, N, W] after ln_pre, T, L)."""
        b, t = frames.shape[:2]
        v = self.visual
        x = v.conv1(frames.flatten(0, 1))  # [B*T, W, g, g]
        x = x.flatten(2).transpose(1, 2)  # [B*T, P, W]
        pos = v.positional_embedding.to(x.dtype)
        x = (x + pos[1:]).view(b, t, -1, self.width)
        if self.temporal_embedding is not None:
            temporal = self._temporal(t, x.dtype)  # [1, T, W]
            x = x + temporal[:, :, None, :]
        if self.frame_cls is not None:
            fcls = (self.frame_cls + pos[0]).to(x.dtype).expand(b, t, 1, -1)
            if self.temporal_embedding is not None:
                fcls = fcls + temporal[:, :, None, :]
            x = torch.cat([fcls, x], dim=2)  # [B, T, L, W]
        frame_len = x.shape[2]
        glob = torch.cat([v.class_embedding[None], self.proxy_tokens], dim=0) + pos[0]
        glob = glob.to(x.dtype).expand(b, -1, -1)
        seq = torch.cat([glob, x.flatten(1, 2)], dim=1)
        return v.ln_pre(seq), t, frame_len

    def _attention(self, block, y: torch.Tensor, t: int, frame_len: int, need_probs: bool):
        """Video-proxy-guided attention of one block over ``y`` [B, N, W] -> (output [B, N, W], probs).

        ``probs`` (the global rows' post-softmax attention [B, H, M, N]) is computed by hand only when
        ``need_probs`` (the ITS layer); everywhere else, and for the frame rows always, the attention is
        ``F.scaled_dot_product_attention`` on 4-D ``[batch, heads, rows, head_dim]`` tensors, the shape its
        fused CPU / GPU kernels take (a 5-D call falls back to the unfused math path)."""
        attn = block.attn
        b, n, w = y.shape
        m = self.num_global
        h = attn.num_heads
        hd = w // h
        qkv = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).view(b, n, 3, h, hd)
        q, k, v = (z.transpose(1, 2) for z in qkv.unbind(2))  # [B, H, N, hd] views
        # global rows: attend to the whole sequence
        probs = None
        if need_probs:
            logits = (q[:, :, :m] @ k.transpose(-1, -2)) / math.sqrt(hd)
            probs = logits.softmax(dim=-1)  # [B, H, M, N]
            out_g = probs @ v
        else:
            out_g = F.scaled_dot_product_attention(q[:, :, :m], k, v)
        # frame rows: attend to the global tokens and their own frame only; frames become batch entries
        # (B*T), each with the M global keys/values placed before its own L
        frames = qkv[:, m:].view(b, t, frame_len, 3, h, hd)
        glob_kv = qkv[:, None, :m, 1:].expand(b, t, m, 2, h, hd)
        kv = torch.cat([glob_kv, frames[:, :, :, 1:]], dim=2).view(b * t, m + frame_len, 2, h, hd)
        qf = frames[:, :, :, 0].reshape(b * t, frame_len, h, hd).transpose(1, 2)  # [B*T, H, L, hd]
        out_f = F.scaled_dot_product_attention(qf, kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2))
        out = y.new_empty(b, n, h, hd)  # both parts written in place (autograd records the slice copies)
        out[:, :m] = out_g.transpose(1, 2)
        out[:, m:] = out_f.transpose(1, 2).reshape(b, t * frame_len, h, hd)
        return F.linear(out.reshape(b, n, w), attn.out_proj.weight, attn.out_proj.bias), probs

    def _block(self, block, x, t, frame_len, need_probs):
        a, probs = self._attention(block, block.ln_1(x), t, frame_len, need_probs)
        x = x + block.ls_1(a)
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
        return x, probs

    def forward(self, frames: torch.Tensor, attn_layer: int | None = -1) -> VideoTokens:
        """frames [B, T, 3, S, S] -> VideoTokens. ``attn_layer``: layer whose global attention is returned."""
        x, t, frame_len = self.embed(frames)
        blocks = self.visual.transformer.resblocks
        want = None if attn_layer is None else attn_layer % len(blocks)
        global_attn = None
        for i, block in enumerate(blocks):
            need = i == want
            if self.grad_checkpointing and self.training and not need:
                x, _ = checkpoint(self._block, block, x, t, frame_len, False, use_reentrant=False)
            else:
                x, probs = self._block(block, x, t, frame_len, need)
                if need:
                    global_attn = probs
        tokens = self.visual.ln_post(x) @ self.visual.proj
        return VideoTokens(tokens, global_attn, self.num_global, t, frame_len, self.frame_cls is not None)

    def dense_reference_forward(self, frames: torch.Tensor) -> torch.Tensor:
        """The same encoder with a dense boolean mask and the blocks' own MultiheadAttention (tests only)."""
        x, t, frame_len = self.embed(frames)
        allowed = vip_attention_mask(self.num_global, t, frame_len, device=x.device)
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(~allowed, float("-inf"))
        for block in self.visual.transformer.resblocks:
            y = block.ln_1(x)
            a = block.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
            x = x + block.ls_1(a)
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        return self.visual.ln_post(x) @ self.visual.proj
