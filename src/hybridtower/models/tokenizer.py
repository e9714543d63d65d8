"""Caption tokenisation with open_clip's shipped CLIP BPE tokenizer (no network)."""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def _bpe():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


class Tokenizer:
    """Callable: list of captions -> LongTensor [N, context_length] (SOT ... EOT, zero padded, truncated)."""

    def __init__(self, context_length: int):
        self.context_length = context_length

    def __call__(self, texts: list[str] | str) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        return _bpe()(list(texts), context_length=self.context_length)

    def num_tokens(self, text: str) -> int:
        """Tokens the caption needs including SOT and EOT (before truncation)."""
        return len(_bpe().encode(text)) + 2

    def is_truncated(self, text: str) -> bool:
        return self.num_tokens(text) > self.context_length
