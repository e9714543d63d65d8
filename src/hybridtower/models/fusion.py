"""X-Pool cross-attention pooling, used as PIG's pseudo-interaction fusion and as the X-Pool baseline.

For one query ``q`` (pseudo-query or real caption feature) and video tokens ``X`` [n, D]
(method.md section 1.4, peers.md section 2.2)::

    q~ = LN1(q), X~ = LN1(X)                 (one LayerNorm shared by both)
    Q = Wq q~ + bq, K = X~ Wk^T + bk, V = X~ Wv^T + bv
    alpha = softmax_j(K_j . Q / (sqrt(head_dim) * temperature))
    a = LN2(Wo (sum_j alpha_j V_j) + bo)
    v = LN3(a + Dropout(Wl a + bl))

No FFN, no skip from the video CLS. Every projection starts as the identity with zero bias, so at
initialisation (dropout off) ``v = LN(LN2(sum_j alpha_j LN1(X_j)))`` with alpha from ``LN1(X).LN1(q)/sqrt(D)``.

``forward`` pools each video with its *own* query (the diagonal: O(B) memory, what PIG needs);
``forward_pairs`` pools every video for every query (what X-Pool needs at search time).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import FusionConfig


class XPoolFusion(nn.Module):
    def __init__(self, dim: int, cfg: FusionConfig):
        super().__init__()
        if dim % cfg.num_heads:
            raise ValueError(f"fusion dim {dim} is not divisible by num_heads {cfg.num_heads}")
        self.dim, self.heads, self.temperature = dim, cfg.num_heads, cfg.temperature
        self.layer_norm1 = nn.LayerNorm(dim)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.layer_norm2 = nn.LayerNorm(dim)
        self.linear_proj = nn.Linear(dim, dim)
        self.layer_norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Identity projections, zero biases, default LayerNorms (as X-Pool and the PIG release)."""
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.linear_proj):
            nn.init.eye_(lin.weight)
            nn.init.zeros_(lin.bias)
        for ln in (self.layer_norm1, self.layer_norm2, self.layer_norm3):
            ln.reset_parameters()

    def _keys_values(self, tokens: torch.Tensor):
        x = self.layer_norm1(tokens)
        hd = self.dim // self.heads
        k = self.k_proj(x).unflatten(-1, (self.heads, hd))  # [..., n, H, hd]
        v = self.v_proj(x).unflatten(-1, (self.heads, hd))
        return k, v

    def _finish(self, pooled: torch.Tensor) -> torch.Tensor:
        a = self.layer_norm2(self.out_proj(pooled))
        return self.layer_norm3(a + self.dropout(self.linear_proj(a)))

    def forward(self, query: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """query [B, D], tokens [B, n, D] -> fused [B, D] (video i pooled with query i)."""
        hd = self.dim // self.heads
        q = self.q_proj(self.layer_norm1(query)).unflatten(-1, (self.heads, hd))  # [B, H, hd]
        k, v = self._keys_values(tokens)  # [B, n, H, hd]
        logits = torch.einsum("bhd,bnhd->bhn", q, k) / (math.sqrt(hd) * self.temperature)
        alpha = logits.softmax(dim=-1)
        pooled = torch.einsum("bhn,bnhd->bhd", alpha, v).flatten(1)
        return self._finish(pooled)

    def forward_pairs(self, query: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """query [Nq, D], tokens [Nv, n, D] -> fused [Nq, Nv, D] (every video pooled with every query)."""
        hd = self.dim // self.heads
        q = self.q_proj(self.layer_norm1(query)).unflatten(-1, (self.heads, hd))  # [Nq, H, hd]
        k, v = self._keys_values(tokens)  # [Nv, n, H, hd]
        logits = torch.einsum("qhd,vnhd->qvhn", q, k) / (math.sqrt(hd) * self.temperature)
        alpha = logits.softmax(dim=-1)
        pooled = torch.einsum("qvhn,vnhd->qvhd", alpha, v).flatten(2)
        return self._finish(pooled)

    def score_pairs(self, text: torch.Tensor, tokens: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """Cosine of each L2-normalised text [Nq, D] with its own fused video: [Nq, Nv] float32, chunked over
        videos. The fusion may run under autocast; the normalisation and the cosine are always fp32."""
        text_n = F.normalize(text.float(), dim=-1)
        out = []
        for s in range(0, tokens.shape[0], chunk):
            fused = self.forward_pairs(text, tokens[s : s + chunk])
            with torch.autocast(device_type=fused.device.type, enabled=False):
                out.append(torch.einsum("qd,qvd->qv", text_n, F.normalize(fused.float(), dim=-1)))
        return torch.cat(out, dim=1) if out else text.new_zeros(text.shape[0], 0, dtype=torch.float32)
