"""open_clip architecture configs and ``clip:ARCH`` models: which architectures exist, their configs (read
from their JSON files without importing open_clip, this package's ``model_configs/`` first), where CLIP
weights for one lie (``weight_source``), and what framework-``openclip`` models (open_clip's model used whole)
take from open_clip: the names it knows their configs by, their tokenizer and frame preprocessing.

``clip:ARCH`` names a Two-Tower mean-pooling (CLIP4Clip meanP) model over ANY open_clip architecture ``ARCH``
whose config follows the open_clip one (text context; embed dim and image size come from the built backbone).
It takes one of two paths (``clip_path(ARCH)``): CLIP's ViTs and ResNets with CLIP's text transformer and BPE
get framework ``meanp`` on hybridtower's own towers (the towers PIG, CLIP-ViP and X-Pool fine-tune); every
other architecture (timm or Hugging Face towers, SigLIP, CoCa, EVA, MobileCLIP, other tokenizers) gets
framework ``openclip``: open_clip's model used whole, with its own tokenizer and the image size / mean / std /
resize mode of its weights, all recorded in the model config.

Building models is ``hub``'s job, and ``hub`` re-exports every public name here.
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .clip_sources import WeightSource, one_line, resolve_weights
from .core.errors import CheckpointError, ConfigError
from .models import ModelConfig, OpenClipTokenizer
from .models.clip_backbone import OPENAI_MEAN, OPENAI_STD

_PACKAGE_CONFIGS = Path(__file__).parent / "model_configs"
_registered = False


def _register_package_archs() -> None:
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(_PACKAGE_CONFIGS)
        _registered = True


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


@functools.lru_cache(maxsize=1)
def _config_folders() -> tuple[Path, ...]:
    """Where architecture configs lie, highest precedence first: this package's ``model_configs/``, then
    open_clip's, found with ``importlib.util.find_spec`` (which does not import a top-level package)."""
    folders = [_PACKAGE_CONFIGS]
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        folders.append(Path(folder) / "model_configs")
    return tuple(folders)


@functools.lru_cache(maxsize=None)
def _config_names(folder: Path) -> frozenset:
    try:
        return frozenset(p[:-5] for p in os.listdir(folder) if p.endswith(".json"))
    except OSError:
        return frozenset()


@functools.lru_cache(maxsize=None)
def _config_text(arch: str) -> str | None:
    for folder in _config_folders():
        if arch in _config_names(folder):  # exact name, as open_clip's registry (also on case-blind disks)
            try:
                text = (folder / f"{arch}.json").read_text(encoding="utf-8")
                data = json.loads(text)
            except (OSError, ValueError):
                return None
            # open_clip registers a file only when it has these three keys
            return text if isinstance(data, dict) and all(k in data for k in ("embed_dim", "vision_cfg", "text_cfg")) \
                else None
    return None


def _config_from_file(arch: str) -> dict | None:
    """The config of ``arch`` read from its JSON file (this package's or open_clip's), without importing
    open_clip; None when there is no such file (or ``arch`` is an ``hf-hub:`` / ``local-dir:`` name)."""
    if not isinstance(arch, str) or not arch or any(c in arch for c in ":/\\") or arch.startswith("."):
        return None
    text = _config_text(arch)
    return json.loads(text) if text is not None else None


def open_clip_config(arch: str) -> dict | None:
    """open_clip's model config of architecture ``arch`` (built-in or this package's), or None. Read from the
    config file when open_clip is not imported yet (importing it costs seconds); else, and for any name
    without a file, ``open_clip.get_model_config`` (which also knows configs registered at run time)."""
    if "open_clip" not in sys.modules:
        model_cfg = _config_from_file(arch)
        if model_cfg is not None:
            return model_cfg
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


OPEN_CLIP = "openclip"  # the framework of open_clip models used whole (models.open_clip_tower)
_PRIVATE_PREFIX = "hybridtower-config-"  # names under which this process registers recorded open_clip configs


def clip_path(arch_or_cfg: str | dict) -> str:
    """The framework ``clip:ARCH`` builds for an open_clip architecture (name or model config): ``meanp``
    (hybridtower's own towers: CLIP ViTs / ResNets with CLIP's text transformer and BPE) or ``openclip``
    (open_clip's model used whole: every other architecture)."""
    model_cfg = open_clip_config(arch_or_cfg) if isinstance(arch_or_cfg, str) else arch_or_cfg
    return "meanp" if backbone_problem(model_cfg or {}) is None else OPEN_CLIP


def list_clip_archs(path: str | None = None) -> list[str]:
    """The open_clip architectures ``clip:ARCH`` can be built on: all of them (open_clip's built-ins and any
    registered). ``path="meanp"`` lists those on hybridtower's own towers (the ones PIG, CLIP-ViP and X-Pool
    can also be fine-tuned from, PIG and CLIP-ViP needing a ViT), ``path="openclip"`` the others."""
    import open_clip

    _register_package_archs()
    archs = [a for a in open_clip.list_models() if not a.startswith(_PRIVATE_PREFIX)]
    if path is None:
        return archs
    if path not in ("meanp", OPEN_CLIP):
        raise ValueError(f"path must be 'meanp' or {OPEN_CLIP!r}, not {path!r}")
    return [a for a in archs if clip_path(a) == path]


def _close(name: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    return f" (close: {', '.join(close)})" if close else ""


def clip_config(arch: str, overrides: list[str] | None = None) -> ModelConfig:
    """The ``clip:ARCH`` model: CLIP4Clip meanP (no new parameters) over open_clip architecture ``arch``, its
    text context and activation taken from the open_clip config. Framework ``meanp`` (own towers) where
    ``backbone_problem`` finds none, else ``openclip`` (open_clip's model whole, its config recorded in
    ``backbone.open_clip``); the override ``framework=openclip`` takes the second path for any architecture."""
    from .core.config import apply_overrides, from_dict

    model_cfg = open_clip_config(arch)
    if model_cfg is None:
        raise ConfigError(f"unknown open_clip architecture {arch!r} in '{CLIP_PREFIX}{arch}'"
                          f"{_close(arch, list_clip_archs())}; hybridtower.hub.list_clip_archs() lists them")
    framework = clip_path(model_cfg)
    data = {
        "framework": framework,
        "name": f"{CLIP_PREFIX}{arch}",
        "backbone": {"arch": arch, "quick_gelu": bool(model_cfg.get("quick_gelu", False))},
        "text_context_length": int(model_cfg.get("text_cfg", {}).get("context_length", 77)),
    }
    if framework == OPEN_CLIP:
        data["backbone"]["open_clip"] = model_cfg
    cfg = apply_overrides(from_dict(ModelConfig, data, where=f"{CLIP_PREFIX}{arch}"), overrides)
    if cfg.framework == OPEN_CLIP and not cfg.backbone.open_clip:
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, open_clip=model_cfg))
    problem = backbone_problem(model_cfg)
    if cfg.framework != OPEN_CLIP and problem:
        raise ConfigError(f"'{CLIP_PREFIX}{arch}' cannot be a {cfg.framework} model: {problem} (hybridtower's own "
                          f"towers need CLIP's; '{CLIP_PREFIX}{arch}' alone builds it as framework '{OPEN_CLIP}')")
    return cfg.validate()


def _arch_checker(arch: str):
    """A ``check`` for ``resolve_weights``: weights that come with an open_clip config (hf-hub, local-dir) must
    be of architecture ``arch`` (activation aside)."""

    def check(model_cfg: dict, description: str) -> None:
        own = open_clip_config(arch)
        theirs = _normalised(model_cfg)
        if own is not None and _normalised(own) == theirs:
            return
        same = [a for a in list_clip_archs() if _normalised(open_clip_config(a) or {}) == theirs]
        hint = (f"it is a {same[0]} model: use a {same[0]} model, e.g. '{CLIP_PREFIX}{same[0]}'" if same
                else "no open_clip built-in architecture has its config")
        raise CheckpointError(f"{description} does not fit architecture {arch}: {hint}")

    return check


def weight_source(arch: str, pretrained: str | None) -> WeightSource | None:
    """Where ``pretrained`` lies on disk (downloading it if needed), checked against ``arch``."""
    if not pretrained and _config_from_file(arch) is not None:
        return None  # a known architecture and no weights: nothing to import
    import open_clip

    _register_package_archs()
    if arch not in open_clip.list_models():
        raise ConfigError(f"unknown open_clip architecture {arch!r}{_close(arch, list_clip_archs())}")
    return resolve_weights(arch, str(pretrained), _arch_checker(arch)) if pretrained else None


# ----- framework "openclip": open_clip's model used whole -----

_private_dir: Path | None = None
_tokenizers: dict = {}  # (open_clip name, text config, context length) -> open_clip tokenizer


def _canonical(model_cfg: dict, quick_gelu: bool) -> str:
    data = copy.deepcopy(model_cfg)
    data["quick_gelu"] = bool(quick_gelu or data.get("quick_gelu", False))
    return json.dumps(data, sort_keys=True)


def _register_config(model_cfg: dict, quick_gelu: bool) -> str:
    """A name under which open_clip knows ``model_cfg`` (with ``quick_gelu``) in this process: a private name
    registered from a file in a temporary folder that lives as long as the process (open_clip rescans its
    config files whenever one is added, so the file must stay)."""
    global _private_dir
    import open_clip

    text = _canonical(model_cfg, quick_gelu)
    name = _PRIVATE_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:16]
    if open_clip.get_model_config(name) is None:
        if _private_dir is None:
            _private_dir = Path(tempfile.mkdtemp(prefix="hybridtower-open-clip-"))
            atexit.register(shutil.rmtree, _private_dir, True)
        path = _private_dir / f"{name}.json"
        path.write_text(text, encoding="utf-8")
        open_clip.add_model_config(path)
    return name


def _open_clip_name(cfg: ModelConfig, part: str | None = None) -> str:
    """The open_clip name to build ``cfg``'s model (or, ``part="text_cfg"``, its tokenizer) from: the
    architecture's own name where open_clip's config of it equals the recorded one (on ``part`` alone when
    given), else a private name registered for the recorded config."""
    recorded = cfg.backbone.open_clip
    own = open_clip_config(cfg.backbone.arch)
    if own is not None:
        if part is not None and own.get(part, {}) == recorded.get(part, {}):
            return cfg.backbone.arch
        if _canonical(own, cfg.backbone.quick_gelu) == _canonical(recorded, cfg.backbone.quick_gelu):
            return cfg.backbone.arch
    return _register_config(recorded, cfg.backbone.quick_gelu)


def hub_names(model_cfg: dict) -> dict[str, str]:
    """What building an open_clip model of ``model_cfg`` takes from the Hugging Face hub by name:
    ``{"tokenizer": repo}`` (a Hugging Face tokenizer) and/or ``{"text_tower": repo}`` (a Hugging Face text
    model's config). Local folders are not hub names; CLIP's BPE ships with open_clip."""
    from .clip_sources import is_hub_name

    text = model_cfg.get("text_cfg", {})
    out = {}
    if is_hub_name(text.get("hf_tokenizer_name", "")):
        out["tokenizer"] = text["hf_tokenizer_name"]
    if is_hub_name(text.get("hf_model_name", "")):
        out["text_tower"] = text["hf_model_name"]
    return out


def open_clip_tokenizer(cfg: ModelConfig) -> OpenClipTokenizer:
    """open_clip's tokenizer of an ``openclip`` model config. A Hugging Face tokenizer comes from
    huggingface_hub's cache when the hub cannot be reached; when it is not there either, ONE line says so
    within seconds (CheckpointError); a missing ``transformers`` package is a ConfigError naming it."""
    import open_clip

    _register_package_archs()
    name = _open_clip_name(cfg, "text_cfg")
    limit = int(cfg.backbone.open_clip.get("text_cfg", {}).get("context_length", 77))
    if cfg.text_context_length > limit:
        raise ConfigError(f"text_context_length {cfg.text_context_length} exceeds the {limit} tokens of the "
                          f"{cfg.backbone.arch} text tower")
    repo = hub_names(cfg.backbone.open_clip).get("tokenizer")

    key = (name, json.dumps(cfg.backbone.open_clip.get("text_cfg", {}), sort_keys=True), cfg.text_context_length)
    if key in _tokenizers:  # stateless, and open_clip's CLIP BPE takes seconds to read
        return OpenClipTokenizer(_tokenizers[key], cfg.text_context_length)

    def build():
        return open_clip.get_tokenizer(name, context_length=cfg.text_context_length)

    needs_hf = repo is not None or "hf_tokenizer_name" in cfg.backbone.open_clip.get("text_cfg", {})
    if needs_hf and importlib.util.find_spec("transformers") is None:
        raise ConfigError(f"the tokenizer of {cfg.backbone.arch} is a Hugging Face tokenizer: pip install transformers")
    try:
        if repo is None:
            tok = build()
        else:
            from .clip_sources import hf_resource

            tok = hf_resource(build, f"the tokenizer of {cfg.backbone.arch} ({repo})", repo)
    except ImportError as exc:
        raise ConfigError(f"the tokenizer of {cfg.backbone.arch} needs a package that is not installed: "
                          f"{one_line(exc)}") from exc
    _tokenizers[key] = tok
    return OpenClipTokenizer(tok, cfg.text_context_length)


def _open_clip_preprocess(clip, recorded: dict | None = None) -> dict:
    """The frame preprocessing of an open_clip model (its weights' size, mean, std, resize mode and
    interpolation, as open_clip's own ``image_transform`` would use them), checked against what
    hybridtower's frame pipeline implements."""
    from .encode import preprocess_from_dict

    if recorded:
        out = dict(recorded)
    else:
        pre = getattr(clip.visual, "preprocess_cfg", {}) or {}
        size = pre.get("size") or getattr(clip.visual, "image_size", 224)
        out = {
            "image_size": int(size[0] if isinstance(size, (tuple, list)) else size),
            "mean": [float(x) for x in pre.get("mean", OPENAI_MEAN)],
            "std": [float(x) for x in pre.get("std", OPENAI_STD)],
            "resize_mode": str(pre.get("resize_mode", "shortest")),
            "interpolation": str(pre.get("interpolation", "bicubic")),
        }
    preprocess_from_dict(out)  # a resize mode / interpolation the frame pipeline lacks is a ConfigError now
    return out
