"""CLIP text tower (open_clip modules, reused as they are) with a shorter context than CLIP's 77.

Captions are tokenised to ``text_context_length`` tokens (50 in the paper's recipe); the first that
many positional embeddings are used and the causal mask is cut to match. The feature is read at the EOT
token (the highest id in each row, as in CLIP) and projected by ``text_projection``. Padding after EOT
cannot change it: the mask is causal.
"""

from __future__ import annotations

import torch
from torch import nn


def _project(x: torch.Tensor, projection) -> torch.Tensor:
    if projection is None:
        return x
    if isinstance(projection, nn.Linear):
        return projection(x)
    return x @ projection


def causal_mask(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    return torch.full((n, n), float("-inf"), device=device, dtype=dtype).triu_(1)


class TextEncoder(nn.Module):
    def __init__(self, clip: nn.Module):
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection

    @property
    def width(self) -> int:
        return self.token_embedding.embedding_dim

    @property
    def context_length(self) -> int:
        return self.positional_embedding.shape[0]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, L] (L <= CLIP's context) -> text features [B, D], not normalised."""
        length = tokens.shape[1]
        if length > self.context_length:
            raise ValueError(f"{length} tokens exceed the text tower's context of {self.context_length}")
        x = self.token_embedding(tokens) + self.positional_embedding[:length].to(self.token_embedding.weight.dtype)
        x = self.transformer(x, attn_mask=causal_mask(length, x.device, x.dtype))
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return _project(x, self.text_projection)
