"""Training losses as pure functions of tensors (method.md section 2.1).

No tokenizer, network or file access happens here; features are passed in already gathered.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def symmetric_infonce(similarity: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE on a square [B, B] similarity matrix (text rows, video columns).

    ``logit_scale`` is the *log* temperature; the loss is the SUM of the text->video and video->text
    cross-entropies, as in the PIG release (not CLIP's average), which fixes the 1:1 balance with lambda.
    Computed in fp32 whatever the autocast state (the logits are ~100 x the similarity).
    """
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square [B, B], got {tuple(similarity.shape)}")
    with torch.autocast(device_type=similarity.device.type, enabled=False):
        logits = logit_scale.float().exp() * similarity.float()
        target = torch.arange(similarity.shape[0], device=similarity.device)
        return F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)


MULTI_QUERY_RECON = ("best", "mean")


def reconstruction_loss(pseudo_query: torch.Tensor, text: torch.Tensor, stop_grad: bool = False,
                        multi: str = "best") -> torch.Tensor:
    """Mean over the batch of ``|| t_p/|t_p| - t/|t| ||^2 = 2 - 2 cos(t_p, t)``, in fp32.

    ``stop_grad=False`` (the release) lets the gradient reach the text tower through ``t`` too;
    ``stop_grad=True`` detaches the target so only the generator side learns from this loss.

    PIG-M (pseudo_query [B, M, D]): ``multi="best"`` pulls only each video's best-matching pseudo-query
    toward its caption (``2 - 2 max_m cos``: the other slots stay free to cover other content), ``"mean"``
    pulls all M (``mean_m``).
    """
    target = text.detach() if stop_grad else text
    if multi not in MULTI_QUERY_RECON:
        raise ValueError(f"multi must be one of {MULTI_QUERY_RECON}, got {multi!r}")
    with torch.autocast(device_type=pseudo_query.device.type, enabled=False):
        if pseudo_query.dim() == 3:
            cos = F.cosine_similarity(pseudo_query.float(), target.float()[:, None, :], dim=-1)  # [B, M]
            cos = cos.amax(dim=1) if multi == "best" else cos.mean(dim=1)
        else:
            cos = F.cosine_similarity(pseudo_query.float(), target.float(), dim=-1)
        return (2.0 - 2.0 * cos).mean()


def clamp_logit_scale_(logit_scale: torch.Tensor, max_value: float) -> None:
    """Clamp the learnable log temperature in place to [0, max_value] (call after each optimizer step)."""
    with torch.no_grad():
        logit_scale.clamp_(0.0, max_value)
