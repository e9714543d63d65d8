"""Build, save and load models: the library's entry points.

    import hybridtower
    model = hybridtower.create_model("pig-vit-b-32", pretrained="openai")       # a tag (needs the network)
    model = hybridtower.create_model("pig-vit-b-32", pretrained="ViT-B-32.pt")  # a local CLIP checkpoint
    hybridtower.save_model(model, "run/model.safetensors")
    model = hybridtower.load_model("run/model.safetensors")                     # needs nothing else

CLIP weights always go through open_clip: a tag (``openai``, ``laion2b_s34b_b79k``, ...) or a file in any
format open_clip reads (its own ``{"state_dict": ...}`` checkpoints, plain state dicts, safetensors, and
OpenAI's original TorchScript archives). Our checkpoints are safetensors files whose metadata holds the
resolved model config, so ``load_model(path)`` needs no other file.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

import torch

from . import __version__
from .core.config import to_dict
from .core.errors import CheckpointError, ConfigError
from .models import FRAMEWORK_CLASSES, ModelConfig, RetrievalModel, config_from_dict, preset_config

log = logging.getLogger(__name__)

CONFIG_KEY = "hybridtower.config"
VERSION_KEY = "hybridtower.version"
MODEL_FILE = "model.safetensors"
_PACKAGE_CONFIGS = Path(__file__).parent / "model_configs"
_registered = False


class _QuietNoPretrained(logging.Filter):
    """open_clip warns on the root logger whenever a model is built without weights; we do that on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def _register_package_archs() -> None:
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(_PACKAGE_CONFIGS)
        _registered = True


def _is_torchscript(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _create_quiet(arch: str, kwargs: dict):
    import open_clip

    quiet = _QuietNoPretrained()
    logging.getLogger().addFilter(quiet)
    try:
        return open_clip.create_model(arch, pretrained=None, **kwargs)
    finally:
        logging.getLogger().removeFilter(quiet)


def load_clip(arch: str, pretrained: str | None = None, quick_gelu: bool = True):
    """An open_clip CLIP model of architecture ``arch`` with weights from ``pretrained`` (tag, file or None)
    and its preprocessing dict (image_size, mean, std)."""
    import open_clip

    _register_package_archs()
    if arch not in open_clip.list_models():
        raise ConfigError(f"unknown open_clip architecture {arch!r}")
    kwargs = dict(force_quick_gelu=quick_gelu)
    try:
        if pretrained and os.path.isfile(pretrained) and _is_torchscript(pretrained):
            # OpenAI's original release is a TorchScript archive: take its state dict, same keys as open_clip
            clip = _create_quiet(arch, kwargs)
            state = torch.jit.load(pretrained, map_location="cpu").state_dict()
            persistent = set(clip.state_dict())
            for key in ["input_resolution", "context_length", "vocab_size"] + [n for n, _ in clip.named_buffers()]:
                if key not in persistent:
                    state.pop(key, None)  # metadata and non-persistent buffers (the causal mask)
            clip.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        else:
            if pretrained and not os.path.isfile(pretrained):
                tags = open_clip.list_pretrained_tags_by_model(arch)
                if pretrained not in tags:
                    raise CheckpointError(
                        f"--pretrained {pretrained!r} is neither a file nor an open_clip tag for {arch} "
                        f"(tags: {', '.join(tags) or 'none'})"
                    )
            if pretrained:
                clip = open_clip.create_model(arch, pretrained=pretrained, **kwargs)
            else:
                clip = _create_quiet(arch, kwargs)
    except CheckpointError:
        raise
    except (RuntimeError, KeyError, ValueError, OSError, AssertionError) as exc:
        raise CheckpointError(f"cannot load CLIP weights {pretrained!r} into {arch}: {exc}") from exc
    visual = clip.visual
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    pre = getattr(visual, "preprocess_cfg", {}) or {}
    preprocess = {
        "image_size": int(size),
        "mean": list(pre.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        "std": list(pre.get("std", open_clip.OPENAI_DATASET_STD)),
        "resize_mode": "squash",
        "interpolation": "bicubic",
    }
    return clip.float(), preprocess


def resolve_config(model: str | ModelConfig | dict, overrides: list[str] | None = None) -> ModelConfig:
    if isinstance(model, ModelConfig):
        from .core.config import apply_overrides

        return apply_overrides(model, overrides).validate()
    if isinstance(model, dict):
        from .core.config import apply_overrides

        return apply_overrides(config_from_dict(model), overrides).validate()
    return preset_config(model, overrides)


def create_model(
    model: str | ModelConfig | dict, pretrained: str | None = None, overrides: list[str] | None = None
) -> RetrievalModel:
    """A model from a preset name / config, its CLIP parts initialised from ``pretrained``.

    The PIG-specific parameters start as specified: proxies N(0,1) (or the class embedding), the frame-CLS
    token a copy of CLIP's class embedding, temporal embedding zeros, the generator a copy of the text
    tower (and its BOS/EOS from CLIP's token embeddings), fusion projections identities.
    """
    cfg = resolve_config(model, overrides)
    clip, preprocess = load_clip(cfg.backbone.arch, pretrained, cfg.backbone.quick_gelu)
    net = FRAMEWORK_CLASSES[cfg.framework](cfg, clip, preprocess)
    return net


def save_model(model: RetrievalModel, path: str | Path, metadata: dict | None = None) -> Path:
    """Write ``model`` as safetensors with its resolved config; atomic (temp file + rename)."""
    from safetensors.torch import save_file

    from .core.io import atomic_path

    path = Path(path)
    meta = {
        CONFIG_KEY: json.dumps(to_dict(model.cfg)),
        VERSION_KEY: __version__,
        "hybridtower.preprocess": json.dumps(model._preprocess),
    }
    for k, v in (metadata or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run folder holding ``model.safetensors``."""
    path = Path(path)
    if path.is_dir():
        candidate = path / MODEL_FILE
        if not candidate.is_file():
            raise CheckpointError(f"{path} is a folder without {MODEL_FILE}")
        return candidate
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def read_checkpoint_metadata(path: str | Path) -> dict:
    from safetensors import safe_open

    path = resolve_checkpoint_path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint: {exc}") from exc
    if CONFIG_KEY not in meta:
        raise CheckpointError(f"{path} is not a hybridtower checkpoint (no {CONFIG_KEY} in its metadata)")
    return meta


def load_model(path: str | Path, device: str | torch.device = "cpu") -> RetrievalModel:
    """Rebuild a model from one of our checkpoints (file or run folder); strict: every tensor must match."""
    from safetensors.torch import load_file

    path = resolve_checkpoint_path(path)
    meta = read_checkpoint_metadata(path)
    cfg = config_from_dict(json.loads(meta[CONFIG_KEY]))
    model = create_model(cfg, pretrained=None)
    state = load_file(str(path), device="cpu")
    missing, unexpected = _diff_keys(model.state_dict(), state)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match a {cfg.name or cfg.framework} model: "
            f"{len(missing)} missing tensor(s) {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}"
        )
    own = model.state_dict()
    bad = [k for k, v in state.items() if own[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{path}: shape mismatch for {bad[:5]} (checkpoint made for another config?)")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _diff_keys(own: dict, state: dict) -> tuple[list[str], list[str]]:
    return sorted(set(own) - set(state)), sorted(set(state) - set(own))
