"""Pseudo-query generator (method.md section 1.3).

Input: video tokens in the joint space ``U = [x_v; x_f; ITS tokens]`` [B, n, D]. A video mapper (Linear,
or Linear-GELU-Linear) takes them to the text width; the sequence ``[BOS] + mapper(U) + [EOS]`` plus CLIP's
first ``n + 2`` text positional embeddings runs through a *separate copy* of the CLIP text transformer
under a causal mask; the pseudo-query ``t_p`` is ``ln_final`` of the output at the EOS slot, then a copy of
CLIP's text projection (fpig; ``text_projection=False`` gives the release's variant).

Choices (docs/method-decisions.md): BOS/EOS are learnable parameters initialised from CLIP's
``<start_of_text>`` / ``<end_of_text>`` token embeddings (the paper figure and fpig; ``learnable_bos_eos=False``
keeps them frozen as in the release); the copy starts from the same CLIP text weights the text encoder
starts from, and the two never share storage.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .config import GeneratorConfig
from .text_encoder import TextEncoder, _project, causal_mask

SOT_TOKEN_ID = 49406  # CLIP BPE <start_of_text>
EOT_TOKEN_ID = 49407  # CLIP BPE <end_of_text>


class PseudoQueryGenerator(nn.Module):
    def __init__(self, text: TextEncoder, in_dim: int, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        width = text.width
        if cfg.mapper == "linear":
            self.mapper = nn.Linear(in_dim, width)
        else:
            self.mapper = nn.Sequential(nn.Linear(in_dim, width), nn.GELU(), nn.Linear(width, width))
        self.transformer = copy.deepcopy(text.transformer)
        self.positional_embedding = nn.Parameter(text.positional_embedding.detach().clone())
        self.ln_final = copy.deepcopy(text.ln_final)
        if cfg.text_projection and text.text_projection is not None:
            proj = text.text_projection
            self.text_projection = copy.deepcopy(proj) if isinstance(proj, nn.Module) else nn.Parameter(proj.detach().clone())
        else:
            self.text_projection = None
        emb = text.token_embedding.weight.detach()
        bos, eos = emb[SOT_TOKEN_ID].clone(), emb[EOT_TOKEN_ID].clone()
        if cfg.learnable_bos_eos:
            self.bos = nn.Parameter(bos)
            self.eos = nn.Parameter(eos)
        else:
            self.register_buffer("bos", bos)
            self.register_buffer("eos", eos)

    def reset_from_text(self, text: TextEncoder) -> None:
        """Copy the (newly loaded) text-tower weights into the generator again; mapper left as is."""
        with torch.no_grad():
            self.transformer.load_state_dict(text.transformer.state_dict())
            self.positional_embedding.copy_(text.positional_embedding)
            self.ln_final.load_state_dict(text.ln_final.state_dict())
            if self.text_projection is not None:
                src = text.text_projection
                if isinstance(src, nn.Module):
                    self.text_projection.load_state_dict(src.state_dict())
                else:
                    self.text_projection.copy_(src)
            emb = text.token_embedding.weight
            self.bos.copy_(emb[SOT_TOKEN_ID])
            self.eos.copy_(emb[EOT_TOKEN_ID])

    def sequence_length(self, num_tokens: int) -> int:
        return num_tokens + 1 + int(self.cfg.use_bos)

    def build_sequence(self, video_tokens: torch.Tensor) -> torch.Tensor:
        """[B, n, D] -> the generator's input embeddings [B, n + 1 (+1 with BOS), width]."""
        b = video_tokens.shape[0]
        x = self.mapper(video_tokens)
        parts = [self.bos.to(x.dtype).expand(b, 1, -1)] if self.cfg.use_bos else []
        parts += [x, self.eos.to(x.dtype).expand(b, 1, -1)]
        x = torch.cat(parts, dim=1)
        length = x.shape[1]
        if length > self.positional_embedding.shape[0]:
            raise ValueError(
                f"generator sequence of {length} tokens exceeds the text context "
                f"{self.positional_embedding.shape[0]}; lower its.k or the number of frames"
            )
        return x + self.positional_embedding[:length].to(x.dtype)

    def forward(self, video_tokens: torch.Tensor) -> torch.Tensor:
        """video_tokens [B, n, D] -> pseudo-query t_p [B, D'] (D' = D with the projection)."""
        x = self.build_sequence(video_tokens)
        length = x.shape[1]
        x = self.transformer(x, attn_mask=causal_mask(length, x.device, x.dtype))
        x = self.ln_final(x[:, -1])
        return _project(x, self.text_projection)
