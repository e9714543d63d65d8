"""Two-Tower CLIP4Clip meanP through open_clip's own model: any open_clip architecture, no training needed.

hybridtower's own towers (``meanp``, ``pig``, ...) re-use CLIP's causal text transformer and open_clip's
VisionTransformer / ModifiedResNet module by module. The other open_clip architectures (timm image towers,
Hugging Face text towers, SigLIP, CoCa, EVA, MobileCLIP, other tokenizers) are used whole here:

    v = normalize(mean_t normalize(clip.encode_image(frame_t)))      # CLIP4Clip meanP, no new parameters
    t = normalize(clip.encode_text(tokenizer(caption)))              # open_clip's tokenizer of that arch

The model receives the built open_clip model, its frame preprocessing and its tokenizer from
``hybridtower.hub`` (which handles weights, configs and downloads); it knows nothing about files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import RetrievalModel
from .config import ModelConfig



class OpenClipTokenizer:
    """An open_clip tokenizer (``open_clip.get_tokenizer``) behind the interface of ``models.tokenizer``:
    callable, list of captions -> LongTensor [N, context_length]; ``num_tokens`` / ``is_truncated``."""

    def __init__(self, tokenizer, context_length: int):
        self.tokenizer = tokenizer
        self.context_length = int(context_length)

    def __call__(self, texts: list[str] | str) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer(list(texts), context_length=self.context_length).long()

    def num_tokens(self, text: str) -> int:
        """Tokens the caption needs, special tokens included (before truncation)."""
        tok = self.tokenizer
        hf = getattr(tok, "tokenizer", None)  # open_clip's HFTokenizer / SigLipTokenizer wrap a HF tokenizer
        if hf is not None and callable(hf):
            clean = getattr(tok, "clean_fn", None) or (lambda s: s)
            return len(hf(clean(text))["input_ids"])
        if hasattr(tok, "encode"):  # open_clip's SimpleTokenizer (CLIP BPE): encode() cleans; + SOT and EOT
            return len(tok.encode(text)) + 2
        return int((self([text]) != 0).sum())

    def is_truncated(self, text: str) -> bool:
        return self.num_tokens(text) > self.context_length


class OpenClipMeanPooling(RetrievalModel):
    """CLIP4Clip meanP over an open_clip model used whole (``self.clip``): frame features from
    ``encode_image`` L2-normalised, averaged over time, normalised again; text from ``encode_text``."""

    query_independent = True
    causal_text = False  # SigLIP reads the last token, BERT-like towers CLS: every position may count

    def __init__(self, cfg: ModelConfig, clip: nn.Module, preprocess: dict, tokenizer: OpenClipTokenizer):
        nn.Module.__init__(self)  # RetrievalModel's own __init__ takes CLIP's text transformer apart: not here
        self.cfg = cfg
        self.clip = clip
        self.embed_dim = int(cfg.backbone.open_clip.get("embed_dim") or _probe_dim(clip))
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)))
        self._preprocess = dict(preprocess)
        self._tokenizer = tokenizer

    # ----- text side (online) -----
    def tokenize(self, texts: list[str] | str) -> torch.Tensor:
        return self._tokenizer(texts).to(self.logit_scale.device)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_text(tokens), dim=-1)

    # ----- video side (offline) -----
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, S, S] -> L2-normalised per-frame features [B, T, D]."""
        b, t = frames.shape[:2]
        return F.normalize(self.clip.encode_image(frames.flatten(0, 1)), dim=-1).view(b, t, -1)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encode_frames(frames).mean(dim=1), dim=-1)

    # ----- bookkeeping -----
    def part_of(self, name: str) -> str:
        if name.startswith("clip.visual."):
            return "video_encoder"
        if name.startswith(("clip.logit_", "clip.text_decoder.", "logit_scale")):
            return "other"  # CLIP's own temperature / bias, CoCa's caption decoder (unused for retrieval)
        return "text_encoder" if name.startswith("clip.") else "other"

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.clip.set_grad_checkpointing(enable)


def _probe_dim(clip: nn.Module) -> int:
    visual = clip.visual
    dim = getattr(visual, "output_dim", None)
    if dim is None:
        raise ValueError("cannot tell the embedding size of this open_clip model (no embed_dim in its config)")
    return int(dim)
