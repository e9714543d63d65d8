"""Informativeness Token Selection (method.md section 1.2).

The video-CLS row of one layer's post-softmax attention scores every key; heads are reduced by max
(or mean); global and frame-CLS positions are excluded so only patch tokens compete; the top-k patches
over the whole video (not per frame) are kept, in order of decreasing score. Ties are broken by the
lower sequence position (a stable sort), so the selection is deterministic. Selection is hard: gradients
reach the selected features, not the indices.
"""

from __future__ import annotations

import torch


def reduce_heads(attn_row: torch.Tensor, how: str = "max") -> torch.Tensor:
    """[B, H, N] -> [B, N]."""
    if how == "max":
        return attn_row.amax(dim=1)
    if how == "mean":
        return attn_row.mean(dim=1)
    raise ValueError(f"unknown head reduction {how!r}")


def select_informative(scores: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    """Top-``k`` sequence positions among ``candidates`` by ``scores``.

    scores:     [B, N] one score per sequence position
    candidates: [C] sequence positions allowed to compete (the patch tokens)
    k:          how many to keep; ``-1`` (or ``k >= C``) keeps all candidates, sorted by score
    returns:    [B, k] long tensor of sequence positions, highest score first, ties -> lower position
    """
    num = candidates.numel()
    k = num if k < 0 else min(k, num)
    cand_scores = scores.index_select(1, candidates)  # [B, C]
    order = torch.sort(cand_scores, dim=1, descending=True, stable=True).indices[:, :k]
    return candidates[order]


def gather_tokens(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """tokens [B, N, D], positions [B, k] -> [B, k, D]."""
    return torch.gather(tokens, 1, positions[..., None].expand(-1, -1, tokens.shape[-1]))
