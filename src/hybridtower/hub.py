"""Build, save and load models: the library's entry points.

    import hybridtower
    model = hybridtower.create_model("pig-vit-b-32", pretrained="openai")       # a tag (needs the network)
    model = hybridtower.create_model("pig-vit-b-32", pretrained="ViT-B-32.pt")  # a local CLIP checkpoint
    model = hybridtower.create_model("meanp-vit-b-32", pretrained="hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    model = hybridtower.create_model("clip:ViT-L-14", pretrained="openai")      # meanP over any CLIP, no training
    hybridtower.save_model(model, "run/model.safetensors")
    model = hybridtower.load_model("run/model.safetensors")                     # needs nothing else

CLIP weights always go through open_clip: a tag (``openai``, ``laion2b_s34b_b79k``, ...), a Hugging Face
Hub model (``hf-hub:ORG/NAME``), a local folder laid out like one (``local-dir:PATH``: its
``open_clip_config.json`` and weights file) or a file in any format open_clip reads (its own
``{"state_dict": ...}`` checkpoints, plain state dicts, safetensors, and OpenAI's original TorchScript
archives). Downloads fail within seconds when the hub cannot be reached, with one line naming the file to
fetch elsewhere. ``clip:ARCH`` names a Two-Tower mean-pooling (CLIP4Clip meanP) model over open_clip
architecture ``ARCH`` whose config follows the open_clip one (text context; embed dim and image size come
from the built backbone). Our checkpoints are safetensors files whose metadata holds the resolved model
config, so ``load_model(path)`` needs no other file.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import zipfile
from pathlib import Path

import torch

from . import __version__
from .clip_sources import WeightSource, resolve_weights
from .core.config import to_dict
from .core.errors import CheckpointError, ConfigError, HybridTowerError
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


CLIP_PREFIX = "clip:"


def _normalised(model_cfg: dict) -> dict:
    """An open_clip model config without its activation flag and default-valued (false / empty) keys."""

    def clean(node):
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items() if v not in (False, None, {}, [])}
        return list(node) if isinstance(node, tuple) else node

    out = clean(copy.deepcopy(model_cfg))
    out.pop("quick_gelu", None)
    return out


def open_clip_config(arch: str) -> dict | None:
    """open_clip's model config of architecture ``arch`` (built-in or this package's), or None."""
    import open_clip

    _register_package_archs()
    return open_clip.get_model_config(arch)


def backbone_problem(model_cfg: dict) -> str | None:
    """Why hybridtower's models cannot be built on an open_clip model config, or None when they can: the
    text side is CLIP's transformer read at EOT with CLIP's BPE, and the video side reads the image tower's
    ``output_dim`` (which open_clip's timm towers lack)."""
    text = model_cfg.get("text_cfg", {})
    problems = []
    if model_cfg.get("custom_text") or "hf_model_name" in text or "multimodal_cfg" in model_cfg:
        problems.append("its text tower is not CLIP's own transformer")
    if "hf_tokenizer_name" in text or "tokenizer_kwargs" in text or "eos_id" in text:
        problems.append("it uses another tokenizer than CLIP's BPE")
    if text.get("pool_type", "argmax") != "argmax" or text.get("embed_cls") or text.get("no_causal_mask"):
        problems.append("its text feature is not read at the EOT token of a causal transformer")
    if "timm_model_name" in model_cfg.get("vision_cfg", {}):
        problems.append("its image tower is a timm model")
    return "; ".join(problems) or None


def list_clip_archs() -> list[str]:
    """The open_clip architectures ``clip:ARCH`` can be built on (PIG and CLIP-ViP also need a ViT image tower)."""
    import open_clip

    _register_package_archs()
    return [a for a in open_clip.list_models() if backbone_problem(open_clip_config(a) or {}) is None]


def _close(name: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    return f" (close: {', '.join(close)})" if close else ""


def clip_config(arch: str, overrides: list[str] | None = None) -> ModelConfig:
    """The ``clip:ARCH`` model: CLIP4Clip meanP (no new parameters) over open_clip architecture ``arch``,
    its text context and activation taken from the open_clip config."""
    import open_clip

    from .core.config import apply_overrides, from_dict

    model_cfg = open_clip_config(arch)
    if model_cfg is None:
        raise ConfigError(f"unknown open_clip architecture {arch!r} in '{CLIP_PREFIX}{arch}'"
                          f"{_close(arch, open_clip.list_models())}; hybridtower.hub.list_clip_archs() lists them")
    problem = backbone_problem(model_cfg)
    if problem:
        raise ConfigError(f"'{CLIP_PREFIX}{arch}' is not supported: {problem} (hybridtower.hub.list_clip_archs() "
                          "lists the supported architectures: CLIP's ViTs and ResNets)")
    data = {
        "framework": "meanp",
        "name": f"{CLIP_PREFIX}{arch}",
        "backbone": {"arch": arch, "quick_gelu": bool(model_cfg.get("quick_gelu", False))},
        "text_context_length": int(model_cfg.get("text_cfg", {}).get("context_length", 77)),
    }
    cfg = from_dict(ModelConfig, data, where=f"{CLIP_PREFIX}{arch}")
    return apply_overrides(cfg, overrides).validate()


def _arch_checker(arch: str):
    """A ``check`` for ``resolve_weights``: weights that come with an open_clip config (hf-hub, local-dir) must
    be of architecture ``arch`` (activation aside)."""

    def check(model_cfg: dict, description: str) -> None:
        import open_clip

        own = open_clip_config(arch)
        theirs = _normalised(model_cfg)
        if own is not None and _normalised(own) == theirs:
            return
        same = [a for a in open_clip.list_models() if _normalised(open_clip_config(a) or {}) == theirs]
        hint = (f"it is a {same[0]} model: use a {same[0]} model, e.g. '{CLIP_PREFIX}{same[0]}'" if same
                else "no open_clip built-in architecture has its config")
        raise CheckpointError(f"{description} does not fit architecture {arch}: {hint}")

    return check


def weight_source(arch: str, pretrained: str | None) -> WeightSource | None:
    """Where ``pretrained`` lies on disk (downloading it if needed), checked against ``arch``."""
    import open_clip

    _register_package_archs()
    if arch not in open_clip.list_models():
        raise ConfigError(f"unknown open_clip architecture {arch!r}{_close(arch, open_clip.list_models())}")
    return resolve_weights(arch, str(pretrained), _arch_checker(arch)) if pretrained else None


def load_clip(arch: str, pretrained: str | WeightSource | None = None, quick_gelu: bool = True, *,
              device: str | None = None):
    """An open_clip CLIP model of architecture ``arch`` with weights from ``pretrained`` (an open_clip tag,
    ``hf-hub:ORG/NAME``, ``local-dir:PATH``, a weights file, or None) and its preprocessing dict
    (image_size, mean, std). ``device="meta"`` (no weights only) builds it without memory or random init."""
    import open_clip

    source = pretrained if isinstance(pretrained, WeightSource) else weight_source(arch, pretrained)
    if device == "meta" and source is not None:
        raise ValueError("load_clip(device='meta') builds an empty model: pass no weights")
    kwargs = dict(force_quick_gelu=quick_gelu)
    if device is not None:
        kwargs["device"] = device
    if source is not None and source.preprocess:
        kwargs["force_preprocess_cfg"] = source.preprocess
    try:
        if source is not None and _is_torchscript(source.file):
            # OpenAI's original release is a TorchScript archive: take its state dict, same keys as open_clip
            clip = _create_quiet(arch, kwargs)
            state = torch.jit.load(source.file, map_location="cpu").state_dict()
            persistent = set(clip.state_dict())
            for key in ["input_resolution", "context_length", "vocab_size"] + [n for n, _ in clip.named_buffers()]:
                if key not in persistent:
                    state.pop(key, None)  # metadata and non-persistent buffers (the causal mask)
            clip.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        elif source is not None:
            clip = open_clip.create_model(arch, pretrained=source.file, **kwargs)
        else:
            clip = _create_quiet(arch, kwargs)
    except ImportError as exc:
        raise ConfigError(f"architecture {arch} needs a package that is not installed: {exc}") from exc
    except (RuntimeError, KeyError, ValueError, OSError, AssertionError) as exc:
        what = source.description if source else "no weights"
        raise CheckpointError(f"cannot load CLIP weights {what!r} into {arch}: {exc}") from exc
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
    """A model config from a preset name (``pig-vit-b-32``), ``clip:ARCH``, a ModelConfig or its dict."""
    if isinstance(model, ModelConfig):
        from .core.config import apply_overrides

        return apply_overrides(model, overrides).validate()
    if isinstance(model, dict):
        from .core.config import apply_overrides

        return apply_overrides(config_from_dict(model), overrides).validate()
    if str(model).startswith(CLIP_PREFIX):
        return clip_config(str(model)[len(CLIP_PREFIX):], overrides)
    return preset_config(model, overrides)


def create_model(
    model: str | ModelConfig | dict, pretrained: str | None = None, overrides: list[str] | None = None, *,
    device: str | None = None,
) -> RetrievalModel:
    """A model from a preset name / ``clip:ARCH`` / config, its CLIP parts initialised from ``pretrained``.

    ``device="meta"`` (no ``pretrained``) builds it with every tensor on the meta device: shapes, dtypes and
    parameter counts without memory or random init (what ``hybridtower info`` needs of a preset).

    When the origin of the weights says which activation they were trained with (an open_clip tag,
    hf-hub:, local-dir:), ``backbone.quick_gelu`` follows it (OpenAI's: QuickGELU; LAION's: GELU) and the
    returned model's config records it.

    The PIG-specific parameters start as specified: proxies N(0,1) (or the class embedding), the frame-CLS
    token a copy of CLIP's class embedding, temporal embedding zeros, the generator a copy of the text
    tower (and its BOS/EOS from CLIP's token embeddings), fusion projections identities.
    """
    cfg = resolve_config(model, overrides)
    if device == "meta":
        if pretrained:
            raise ValueError("create_model(device='meta') builds an empty model: pass no weights")
        return _build_empty(cfg)
    if device is not None:
        raise ValueError(f"create_model builds on the CPU or (device='meta') empty, not on {device!r}: "
                         "call .to(device) on the model")
    source = weight_source(cfg.backbone.arch, pretrained)
    if source is not None and source.quick_gelu is not None and source.quick_gelu != cfg.backbone.quick_gelu:
        log.info("backbone.quick_gelu=%s: the activation %s was trained with", source.quick_gelu, source.description)
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, quick_gelu=source.quick_gelu))
    clip, preprocess = load_clip(cfg.backbone.arch, source, cfg.backbone.quick_gelu)
    net = FRAMEWORK_CLASSES[cfg.framework](cfg, clip, preprocess)
    return net


def _build_empty(cfg: ModelConfig) -> RetrievalModel:
    """The model of ``cfg`` with every tensor on the meta device (shapes and dtypes only: no memory, no random
    init)."""
    with torch.device("meta"):
        clip, preprocess = load_clip(cfg.backbone.arch, None, cfg.backbone.quick_gelu, device="meta")
        return FRAMEWORK_CLASSES[cfg.framework](cfg, clip, preprocess)


def _empty_model(cfg: ModelConfig) -> RetrievalModel | None:
    """``_build_empty(cfg)``, or None when the model cannot be built on the meta device (the caller then
    builds it normally)."""
    try:
        return _build_empty(cfg)
    except (RuntimeError, NotImplementedError, TypeError, ValueError, HybridTowerError) as exc:
        log.debug("building %s on the meta device failed (%s); building it normally", cfg.name, exc)
        return None


def _meta_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the tensors of ``model`` still on the meta device: parameters, buffers and plain tensor
    attributes (a non-persistent buffer or attribute is not in a checkpoint, so loading cannot fill it)."""
    out = []
    for prefix, module in model.named_modules():
        tensors = {**module._parameters, **module._buffers,
                   **{k: v for k, v in vars(module).items() if isinstance(v, torch.Tensor)}}
        out += [f"{prefix}.{k}".lstrip(".") for k, v in tensors.items() if v is not None and v.is_meta]
    return out


def _shares_tensors(model: torch.nn.Module) -> bool:
    """Whether one parameter or buffer sits under two names (loading by assignment would untie them)."""
    named = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))
    return len({id(t) for _, t in named}) != len(named)


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
    """Rebuild a model from one of our checkpoints (file or run folder); strict: every tensor must match.

    The model is built on the meta device and the checkpoint's tensors are adopted as its parameters (cast to
    the model's dtypes), so no memory is allocated and no random init runs for weights that are overwritten
    anyway (seconds for a ViT-B model). A model that cannot be built that way (tied weights, a tensor the
    checkpoint does not hold, an op without a meta kernel) is built normally and loaded by copying."""
    from safetensors.torch import load_file

    path = resolve_checkpoint_path(path)
    meta = read_checkpoint_metadata(path)
    cfg = config_from_dict(json.loads(meta[CONFIG_KEY]))
    model = _empty_model(cfg)
    empty = model is not None
    if not empty:
        model = create_model(cfg, pretrained=None)
    state = load_file(str(path), device="cpu")
    own = model.state_dict()
    missing, unexpected = _diff_keys(own, state)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match a {cfg.name or cfg.framework} model: "
            f"{len(missing)} missing tensor(s) {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}"
        )
    bad = [k for k, v in state.items() if own[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{path}: shape mismatch for {bad[:5]} (checkpoint made for another config?)")
    if empty and not _shares_tensors(model):
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True, assign=True)
        left = _meta_tensors(model)
        if not left:
            return model.to(device).eval()
        log.debug("%s: tensors %s are not in the checkpoint; building the model normally", path, left[:5])
    if empty:
        model = create_model(cfg, pretrained=None)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _diff_keys(own: dict, state: dict) -> tuple[list[str], list[str]]:
    return sorted(set(own) - set(state)), sorted(set(state) - set(own))
