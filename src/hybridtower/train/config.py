"""``TrainConfig``: everything a training run needs, as one dataclass (YAML via ``--config``, ``--set``).

The defaults are the paper's released B/32 recipe (method.md section 2.2) except the model preset and
epochs; the shipped files under ``configs/`` fill in the rest per benchmark. ``model.KEY=VALUE`` in
``--set`` reaches the model config (``--set model.its.k=8``), any other key this dataclass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import apply_overrides, from_dict, load_file, to_dict
from ..core.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "linear", "constant")
TRAIN_SPLIT_PREFERENCE = ("train-9k", "train", "train-7k", "train-full", "train9k")
VAL_SPLIT_PREFERENCE = ("val", "validate", "valid", "validation")


@dataclass
class TrainConfig:
    # --- model ---
    model: str = "pig-tiny"  # preset name {pig,meanp,clipvip,xpool}-{vit-b-32,vit-b-16,tiny}
    model_overrides: list[str] = field(default_factory=list)  # model config "key=value" (e.g. its.k=8)
    pretrained: str | None = None  # CLIP weights: open_clip tag (openai) or a local file / pretrain-clip dir
    logit_scale_from_clip: bool = False  # start the temperature from the CLIP checkpoint's (else the model config's)
    num_frames: int = 0  # 0 = the preset's frame count
    grad_checkpointing: bool = False
    # --- data ---
    data: str = ""  # FORMAT:ROOT
    video_root: str | None = None
    train_split: str = "auto"  # auto: the first of train-9k, train, train-7k, train-full present
    val_split: str = "auto"  # auto: "val" when the dataset has one; "none" = no model selection
    train_sample_mode: str = "jitter"  # frame sampling in training (release: jitter)
    num_workers: int = 2
    cache_frames: bool = False  # decode + preprocess every training video once, keep it in RAM (small sets)
    # --- stage 1 (PIG only): generator alone, reconstruction loss, encoders + fusion frozen ---
    stage1_epochs: int = 0  # 0 = skip (the official release's single-stage recipe)
    stage1_steps: int = 0  # > 0: a step budget instead of epochs
    stage1_data: str = ""  # another FORMAT:ROOT for stage 1 (e.g. images:...); "" = the training data
    stage1_split: str = "train"
    # generator-only training from CLIP text weights + a fresh mapper: an adapter-scale LR, not the
    # 3e-6 end-to-end fine-tuning LR (docs/method-decisions.md); 0 = lr
    stage1_lr: float = 1e-4
    # --- stage 2: everything, contrastive + lambda * reconstruction ---
    stage2_epochs: int = 5
    stage2_steps: int = 0  # > 0: a step budget instead of epochs
    lambda_recon: float = 1.0
    recon_stop_grad: bool = False  # True: the reconstruction target t is detached (release: no stop-grad)
    recon_multi_query: str = "best"  # PIG-M only: "best" = only the best-matching pseudo-query is pulled to t; "mean"
    # --- optimisation ---
    batch_size: int = 128  # GLOBAL batch (all processes, all accumulation micro-batches)
    grad_accum: int = 1
    lr: float = 3e-6
    new_module_lr_mult: float = 1.0  # LR multiplier of parameters that are not CLIP's (X-Pool: > 1)
    weight_decay: float = 0.2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_ratio: float = 0.01
    schedule: str = "cosine"
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast on CUDA; the CPU always runs fp32)
    seed: int = 42
    # --- evaluation, checkpoints, logging ---
    eval_every: int = 1  # validate every N epochs of stage 2 (and always at the end); 0 = end only
    eval_batch_size: int = 16
    select_metric: str = "t2v/R@1"  # validation metric that picks model.safetensors
    save_every: int = 0  # also checkpoint every N steps (0 = at the end of every epoch and of each stage)
    log_every: int = 10
    tensorboard: bool = False

    def validate(self) -> "TrainConfig":
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if len(self.betas) != 2:
            raise ConfigError(f"betas must be two numbers, got {self.betas!r}")
        for name in ("stage1_epochs", "stage1_steps", "stage2_epochs", "stage2_steps", "num_frames",
                     "num_workers", "eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.stage2_epochs == 0 and self.stage2_steps == 0 and self.stage1_epochs == 0 and self.stage1_steps == 0:
            raise ConfigError("nothing to train: stage1 and stage2 both have 0 epochs and 0 steps")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("batch_size and grad_accum must be >= 1")
        if self.lr <= 0:
            raise ConfigError("lr must be > 0")
        if self.recon_multi_query not in ("best", "mean"):
            raise ConfigError(f"recon_multi_query must be 'best' or 'mean', got {self.recon_multi_query!r}")
        if self.stage1_lr < 0:
            raise ConfigError("stage1_lr must be >= 0 (0 = lr)")
        if "/" not in self.select_metric:
            raise ConfigError(f"select_metric looks like t2v/R@1, got {self.select_metric!r}")
        return self


def split_overrides(overrides: list[str] | None) -> tuple[list[str], list[str]]:
    """``--set`` items -> (train overrides, model overrides); ``model.X=V`` goes to the model."""
    train, model = [], []
    for item in overrides or []:
        key = item.split("=", 1)[0].strip()
        if key.startswith("model."):
            model.append(item.strip()[len("model."):])
        else:
            train.append(item)
    return train, model


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None, **values) -> TrainConfig:
    """A config from a YAML/JSON file (optional), then keyword values (None = keep), then ``--set`` items."""
    data = load_file(path) if path else {}
    cfg = from_dict(TrainConfig, data, where=str(path) if path else "train config")
    changes = {k: v for k, v in values.items() if v is not None}
    if changes:
        unknown = set(changes) - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            raise ConfigError(f"unknown train config key(s) {sorted(unknown)}")
        cfg = from_dict(TrainConfig, {**to_dict(cfg), **changes})
    train_over, model_over = split_overrides(overrides)
    cfg = apply_overrides(cfg, train_over)
    if model_over:
        cfg = dataclasses.replace(cfg, model_overrides=list(cfg.model_overrides) + model_over)
    return cfg.validate()


def pick_split(available: list[str], requested: str, preference: tuple[str, ...], what: str, spec: str) -> str | None:
    """Resolve ``auto`` / ``none`` / an explicit split name against the dataset's splits."""
    if requested in ("none", "", None):
        return None
    if requested != "auto":
        if requested not in available:
            raise ConfigError(f"{spec} has no {what} split {requested!r}; available: {available}")
        return requested
    for name in preference:
        if name in available:
            return name
    return None
