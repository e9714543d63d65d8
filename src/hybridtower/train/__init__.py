"""Training: both stages of PIG and the baselines' fine-tuning, DDP, resume, and tiny-CLIP pretraining.

    from hybridtower.train import TrainConfig, load_train_config, train
    cfg = load_train_config("configs/synthetic-pig-tiny.yaml", ["stage2_steps=100"], data="msrvtt:data/synth")
    summary = train(cfg, "runs/pig")                 # -> runs/pig/model.safetensors, metrics.jsonl, ...

    from hybridtower.train import PretrainConfig, pretrain_clip
    pretrain_clip(PretrainConfig(data="images:data/synth/images.jsonl"), "runs/clip")

See ``docs/training.md``.
"""

from .config import TrainConfig, load_train_config
from .pretrain_clip import PretrainConfig, pretrain_clip
from .trainer import TrainError, Trainer, train

__all__ = ["TrainConfig", "load_train_config", "Trainer", "TrainError", "train", "PretrainConfig", "pretrain_clip"]
