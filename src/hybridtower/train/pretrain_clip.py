"""``pretrain_clip``: train a small open_clip model from scratch on image-caption pairs (CPU-sized).

Without the network there are no OpenAI weights; the synthetic benchmark therefore starts every framework
from a tiny CLIP pretrained here, exactly as a real run starts from OpenAI's CLIP. Data: the ``images``
format (image-caption pairs), or any video format, in which case each access takes one random frame of
the caption's video. Loss: CLIP's symmetric contrastive loss (the MEAN of the two cross-entropies, as in
CLIP / open_clip), learnable temperature initialised to 1/0.07 and clamped at 100.

Output folder::

    open_clip_model.safetensors   the CLIP state dict (open_clip's naming), loadable by open_clip and by
                                  ``hub.create_model(preset, pretrained=<this file>)``
    checkpoint.pt                 ``{"state_dict": ..., "arch": ..., "step": ...}`` (open_clip's format)
    pretrain_config.yaml, metrics.jsonl, summary.json

Captions are tokenised to ``context_length`` tokens (default 32, the tiny presets' length) and encoded
with the package's text tower, which reads CLIP's first ``context_length`` positional embeddings: the
same computation the retrieval models do later.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.config import to_dict
from ..core.errors import ConfigError
from ..core.io import atomic_path, atomic_write_json, atomic_write_text


@dataclass
class PretrainConfig:
    data: str = ""  # FORMAT:ROOT (images:... or a video dataset)
    split: str = "train"
    val_split: str = "auto"  # auto: "val" if present (reports image->text R@1 at the end); none = skip
    arch: str = "hybridtower-tiny"  # any open_clip architecture name
    init: str | None = None  # optional starting weights (open_clip tag or file); None = random
    quick_gelu: bool = True
    epochs: int = 10
    steps: int = 0  # > 0: a step budget instead of epochs
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_ratio: float = 0.05
    grad_clip: float = 1.0
    context_length: int = 32
    num_workers: int = 2
    seed: int = 0
    precision: str = "fp32"
    log_every: int = 10

    def validate(self) -> "PretrainConfig":
        if not self.data:
            raise ConfigError("pretrain-clip needs --data FORMAT:ROOT")
        if self.epochs <= 0 and self.steps <= 0:
            raise ConfigError("pretrain-clip: epochs and steps are both 0")
        if self.batch_size < 2:
            raise ConfigError("pretrain-clip: batch_size must be >= 2 (contrastive loss)")
        return self


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's loss on normalised features: mean of image->text and text->image cross-entropy."""
    logits = logit_scale.exp() * image @ text.t()
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.t(), target))


@torch.no_grad()
def _image_text_r1(clip, text_encoder, tokenizer, dataset, device, batch_size: int = 256) -> dict:
    """Image->text and text->image R@1 over a held-out split (one caption per item; ties count against)."""
    from torch.utils.data import DataLoader

    from ..data.datasets import collate_skip_errors

    clip.eval()
    imgs, txts = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_skip_errors):
        if batch["frames"] is None:
            continue
        imgs.append(torch.nn.functional.normalize(clip.encode_image(batch["frames"][:, 0].to(device)), dim=-1))
        txts.append(torch.nn.functional.normalize(text_encoder(tokenizer(batch["texts"]).to(device)), dim=-1))
    clip.train()
    if not imgs:
        return {}
    sim = torch.cat(txts) @ torch.cat(imgs).t()
    diag = sim.diag()
    t2i = (sim > diag[:, None]).sum(1)  # strictly higher scores; identical captions share a rank
    i2t = (sim.t() > diag[:, None]).sum(1)
    return {"t2i_R@1": float((t2i == 0).float().mean() * 100), "i2t_R@1": float((i2t == 0).float().mean() * 100),
            "pairs": int(sim.shape[0])}


def pretrain_clip(cfg: PretrainConfig, output_dir: str | Path, *, device: str = "auto", progress: bool = True) -> dict:
    """Train ``cfg.arch`` contrastively on ``cfg.data``; write the checkpoint files; return a summary."""
    from safetensors.torch import save_file
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from .. import hub
    from ..core.seeding import seed_everything
    from ..data import list_splits, load_split
    from ..data.datasets import ImageCaptions, collate_skip_errors
    from ..encode import autocast_context, preprocess_from_dict
    from ..models.text_encoder import TextEncoder
    from ..models.tokenizer import Tokenizer
    from .distributed import pick_device
    from .optim import build_scheduler

    cfg.validate()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    seed_everything(cfg.seed)
    clip, pre = hub.load_clip(cfg.arch, cfg.init, cfg.quick_gelu)
    clip = clip.to(dev).train()
    text_encoder = TextEncoder(clip)
    if cfg.context_length > text_encoder.context_length:
        raise ConfigError(f"context_length {cfg.context_length} exceeds {cfg.arch}'s {text_encoder.context_length}")
    tokenizer = Tokenizer(cfg.context_length)
    preprocess = preprocess_from_dict(pre)
    split = load_split(cfg.data, cfg.split).available()
    dataset = ImageCaptions(split, preprocess, seed=cfg.seed)
    val_name = None
    if cfg.val_split not in ("none", ""):
        splits = list_splits(cfg.data)
        val_name = ("val" if "val" in splits else None) if cfg.val_split == "auto" else cfg.val_split
    val_set = ImageCaptions(load_split(cfg.data, val_name).available(), preprocess, seed=cfg.seed, frame_mode="middle") if val_name else None

    if cfg.batch_size > len(dataset):
        raise ConfigError(f"pretrain-clip: batch_size {cfg.batch_size} exceeds the {len(dataset)} pairs")
    per_epoch = len(dataset) // cfg.batch_size
    total = cfg.steps if cfg.steps > 0 else cfg.epochs * per_epoch
    decay, no_decay = [], []
    for name, p in clip.named_parameters():
        # open_clip's rule: no decay for gains, biases, 1-d tensors and the temperature
        (no_decay if p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
         else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    scheduler = build_scheduler(optimizer, total, cfg.warmup_ratio, "cosine")
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")
    atomic_write_text(out / "pretrain_config.yaml", __import__("yaml").safe_dump(to_dict(cfg), sort_keys=False))

    bar = tqdm(total=total, desc=f"pretrain {cfg.arch}", unit="step", disable=not progress, dynamic_ncols=True)
    step, epoch, t0 = 0, 0, time.time()
    window_t, window_n = time.time(), 0
    loss_value = float("nan")
    while step < total:
        dataset.set_epoch(epoch)
        g = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
        loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=g,
                            num_workers=cfg.num_workers, collate_fn=collate_skip_errors)
        for batch in loader:
            if batch["frames"] is None or batch["frames"].shape[0] < 2:
                continue
            images = batch["frames"][:, 0].to(dev, non_blocking=True)
            tokens = tokenizer(batch["texts"]).to(dev)
            with autocast_context(dev, cfg.precision):
                img = torch.nn.functional.normalize(clip.encode_image(images), dim=-1)
                txt = torch.nn.functional.normalize(text_encoder(tokens), dim=-1)
            loss = clip_loss(img.float(), txt.float(), clip.logit_scale.float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(clip.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                clip.logit_scale.clamp_(0, math.log(100))
            step += 1
            window_n += images.shape[0]
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise ConfigError(f"pretrain-clip: loss became {loss_value} at step {step}; lower --lr")
            vps = window_n / max(time.time() - window_t, 1e-9)
            bar.set_postfix(loss=f"{loss_value:.3f}", img_s=f"{vps:.0f}")
            bar.update(1)
            if step % max(1, cfg.log_every) == 0 or step in (1, total):
                with open(metrics_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"step": step, "epoch": epoch, "loss": loss_value,
                                         "lr": optimizer.param_groups[0]["lr"],
                                         "logit_scale": clip.logit_scale.detach().exp().item(), "images_per_s": vps}) + "\n")
                window_t, window_n = time.time(), 0
            if step >= total:
                break
        epoch += 1
    bar.close()

    state = {k: v.detach().contiguous().cpu() for k, v in clip.state_dict().items()}
    with atomic_path(out / "open_clip_model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"arch": cfg.arch, "step": str(step)})
    with atomic_path(out / "checkpoint.pt") as tmp:
        torch.save({"state_dict": state, "arch": cfg.arch, "step": step}, tmp)
    summary = {"arch": cfg.arch, "data": cfg.data, "steps": step, "final_loss": loss_value,
               "seconds": round(time.time() - t0, 2), "weights": str(out / "open_clip_model.safetensors")}
    if val_set is not None:
        summary["val"] = {"split": val_name, **_image_text_r1(clip, text_encoder, tokenizer, val_set, dev)}
    atomic_write_json(out / "summary.json", summary)
    return summary
