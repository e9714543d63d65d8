"""AdamW parameter groups and the warm-up + cosine schedule (method.md section 2.2).

Weight decay: every trainable parameter decays except **biases and the logit scale** (the release's
name rule ``bias`` / ``logit_scale``; CLIP's LayerNorm gains and the embeddings do decay there because
their names do not match ``LayerNorm``). One learning rate for everything, as released;
``new_module_lr_mult`` multiplies it for the parameters that do not come from CLIP (fusion, generator
mapper and BOS/EOS, video proxies, frame CLS, temporal embedding), which is X-Pool's recipe.
"""

from __future__ import annotations

import math

import torch

NEW_MODULE_PREFIXES = (
    "fusion.",
    "generator.mapper",
    "generator.bos",
    "generator.eos",
    "video_encoder.proxy_tokens",
    "video_encoder.frame_cls",
    "video_encoder.temporal_embedding",
)


def is_new_module(name: str) -> bool:
    return name.startswith(NEW_MODULE_PREFIXES)


def no_weight_decay(name: str) -> bool:
    return "bias" in name or "logit_scale" in name


def param_groups(model: torch.nn.Module, lr: float, weight_decay: float, new_module_lr_mult: float = 1.0) -> list[dict]:
    """Trainable parameters in up to four groups (decay x new-module), each with its ``name``."""
    groups: dict[tuple[bool, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = not no_weight_decay(name)
        new = is_new_module(name) and new_module_lr_mult != 1.0
        key = (decay, new)
        if key not in groups:
            groups[key] = {
                "params": [],
                "param_names": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr": lr * (new_module_lr_mult if new else 1.0),
                "name": ("decay" if decay else "no_decay") + ("_new" if new else ""),
            }
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups, key=lambda k: (not k[0], k[1]))]


def build_optimizer(model, lr, weight_decay, betas, eps, new_module_lr_mult=1.0) -> torch.optim.AdamW:
    groups = param_groups(model, lr, weight_decay, new_module_lr_mult)
    if not groups:
        raise ValueError("no trainable parameters")
    for g in groups:
        g.pop("param_names")
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str = "cosine") -> float:
    """Multiplier of the base LR at optimizer step ``step`` (0-based): linear warm-up, then decay to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer, total_steps: int, warmup_ratio: float, schedule: str = "cosine"):
    warmup = int(math.ceil(warmup_ratio * total_steps)) if warmup_ratio > 0 else 0
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, schedule)
    )
