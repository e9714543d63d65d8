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
fetch elsewhere. ``clip:ARCH`` names a Two-Tower mean-pooling (CLIP4Clip meanP) model over ANY open_clip
architecture ``ARCH`` whose config follows the open_clip one (text context; embed dim and image size come
from the built backbone). It takes one of two paths (``clip_path(ARCH)``): CLIP's ViTs and ResNets with
CLIP's text transformer and BPE get framework ``meanp`` on hybridtower's own towers (the towers PIG,
CLIP-ViP and X-Pool fine-tune); every other architecture (timm or Hugging Face towers, SigLIP, CoCa, EVA,
MobileCLIP, other tokenizers) gets framework ``openclip``: open_clip's model used whole, with its own
tokenizer and the image size / mean / std / resize mode of its weights, all recorded in the model config.
The CLIP towers of the frameworks other than ``openclip`` are hybridtower's own (``models.clip_backbone``,
state dicts laid out like open_clip's ``CLIP``) for every ViT architecture they implement: open_clip still
builds and initialises (or loads) the model, and the own towers adopt its tensors, so weights and random
streams are unchanged; ``load_model`` and ``create_model(device="meta")`` build them without importing
open_clip at all (architecture configs are read from their JSON files). Our checkpoints are safetensors
files whose metadata holds the resolved model config, so ``load_model(path)`` needs no other file (an ``openclip`` model whose tokenizer or text-tower config comes
from the Hugging Face hub needs that hub's cache, or fails at once in one line saying so).
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from . import __version__
from .clip_sources import WeightSource, hub_access, one_line, resolve_weights
from .core.config import to_dict
from .core.errors import CheckpointError, ConfigError, HybridTowerError
from .models import (FRAMEWORK_CLASSES, ModelConfig, OpenClipMeanPooling, OpenClipTokenizer, RetrievalModel,
                     config_from_dict, preset_config)
from .models.clip_backbone import OPENAI_MEAN, OPENAI_STD, adopt_open_clip, build_backbone, unsupported

log = logging.getLogger(__name__)

CONFIG_KEY = "hybridtower.config"
VERSION_KEY = "hybridtower.version"
PREPROCESS_KEY = "hybridtower.preprocess"
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


def _open_clip_model(name: str, source: WeightSource | None, quick_gelu: bool, device: str | None = None,
                     **extra):
    """open_clip's model of registered architecture ``name`` (float32), weights from ``source`` or none."""
    import open_clip

    _register_package_archs()
    kwargs = dict(force_quick_gelu=quick_gelu, **extra)
    if device is not None:
        kwargs["device"] = device
    if source is not None and source.preprocess:
        kwargs["force_preprocess_cfg"] = source.preprocess
    try:
        if source is not None and _is_torchscript(source.file):
            # OpenAI's original release is a TorchScript archive: take its state dict, same keys as open_clip
            clip = _create_quiet(name, kwargs)
            state = torch.jit.load(source.file, map_location="cpu").state_dict()
            persistent = set(clip.state_dict())
            for key in ["input_resolution", "context_length", "vocab_size"] + [n for n, _ in clip.named_buffers()]:
                if key not in persistent:
                    state.pop(key, None)  # metadata and non-persistent buffers (the causal mask)
            clip.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        elif source is not None:
            clip = open_clip.create_model(name, pretrained=source.file, **kwargs)
        else:
            clip = _create_quiet(name, kwargs)
    except ImportError as exc:
        raise ConfigError(f"architecture {name} needs a package that is not installed: {exc}") from exc
    except (RuntimeError, KeyError, ValueError, OSError, AssertionError) as exc:
        if "pip install transformers" in str(exc):  # open_clip's word for a Hugging Face text tower
            raise ConfigError(f"architecture {name} has a Hugging Face text tower: pip install transformers") from exc
        what = source.description if source else "no weights"
        raise CheckpointError(f"cannot load CLIP weights {what!r} into {name}: {one_line(exc)}") from exc
    return clip.float()


def load_clip(arch: str, pretrained: str | WeightSource | None = None, quick_gelu: bool = True, *,
              device: str | None = None):
    """CLIP model of architecture ``arch`` with weights from ``pretrained`` (an open_clip tag,
    ``hf-hub:ORG/NAME``, ``local-dir:PATH``, a weights file, or None) and its preprocessing dict
    (image_size, mean, std) for hybridtower's own towers. ``device="meta"`` (no weights only) builds it
    without memory or random init.

    The model is hybridtower's :class:`~hybridtower.models.clip_backbone.ClipBackbone` for every
    architecture it implements (``clip_backbone.unsupported`` finds nothing), else open_clip's own model.
    Weights and random init always come from open_clip, bit for bit as before: open_clip builds its model,
    and the backbone adopts its tensors. Only an empty (meta) model is built without open_clip, and then
    without importing it."""
    source = pretrained if isinstance(pretrained, WeightSource) else weight_source(arch, pretrained)
    if device == "meta" and source is not None:
        raise ValueError("load_clip(device='meta') builds an empty model: pass no weights")
    model_cfg = open_clip_config(arch)
    own = model_cfg is not None and unsupported(model_cfg) is None
    if own and source is None and device == "meta":
        clip, pre = build_backbone(model_cfg, quick_gelu, device="meta"), {}  # open_clip's defaults, as below
    else:
        clip = _open_clip_model(arch, source, quick_gelu, device)
        pre = getattr(clip.visual, "preprocess_cfg", {}) or {}
        if own:
            try:
                clip = adopt_open_clip(clip, model_cfg, quick_gelu)
            except ValueError as exc:
                raise ConfigError(f"architecture {arch}: {exc}") from exc
    visual = clip.visual
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    preprocess = {
        "image_size": int(size),
        "mean": list(pre.get("mean", OPENAI_MEAN)),
        "std": list(pre.get("std", OPENAI_STD)),
        "resize_mode": "squash",
        "interpolation": "bicubic",
    }
    return clip, preprocess


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


def _build_open_clip(cfg: ModelConfig, source: WeightSource | None, device: str | None = None) -> RetrievalModel:
    """An ``openclip`` model: the tokenizer first (it may fail fast without network), then open_clip's model of
    the recorded config with weights from ``source`` (or none), then its preprocessing, recorded in the
    returned model's config."""
    tokenizer = open_clip_tokenizer(cfg)  # cached per process: a load that built it first pays nothing here
    name = _open_clip_name(cfg)
    extra = {}
    repo = hub_names(cfg.backbone.open_clip).get("text_tower")
    if "hf_model_name" in cfg.backbone.open_clip.get("text_cfg", {}):
        extra["pretrained_hf"] = False  # never fetch the text tower's own pretrained weights: ours replace them
    if repo is None:
        clip = _open_clip_model(name, source, cfg.backbone.quick_gelu, device, **extra)
    else:  # open_clip reads the Hugging Face text model's config by name: fetch (or find cached) it first
        from .clip_sources import hf_resource

        try:
            from transformers import AutoConfig
        except ImportError as exc:
            raise ConfigError(f"architecture {cfg.backbone.arch} has a Hugging Face text tower: pip install "
                              f"transformers ({one_line(exc)})") from exc
        hf_resource(lambda: AutoConfig.from_pretrained(repo), f"the text-tower config of {cfg.backbone.arch} "
                    f"({repo})", repo)
        with hub_access():  # cached now: offline mode when the hub cannot be reached, so no retries
            clip = _open_clip_model(name, source, cfg.backbone.quick_gelu, device, **extra)
    preprocess = _open_clip_preprocess(clip, cfg.backbone.preprocess if source is None else None)
    cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, preprocess=preprocess))
    return OpenClipMeanPooling(cfg, clip, preprocess, tokenizer)


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
    return _create(cfg, pretrained)


def _create(cfg: ModelConfig, pretrained: str | None) -> RetrievalModel:
    if cfg.framework == OPEN_CLIP and not pretrained:
        source = None  # the recorded config is enough: the architecture need not be registered here
    else:
        source = weight_source(cfg.backbone.arch, pretrained)
    if source is not None and source.quick_gelu is not None and source.quick_gelu != cfg.backbone.quick_gelu:
        log.info("backbone.quick_gelu=%s: the activation %s was trained with", source.quick_gelu, source.description)
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, quick_gelu=source.quick_gelu))
    if cfg.framework == OPEN_CLIP:
        return _build_open_clip(cfg, source)
    clip, preprocess = load_clip(cfg.backbone.arch, source, cfg.backbone.quick_gelu)
    net = FRAMEWORK_CLASSES[cfg.framework](cfg, clip, preprocess)
    return net


_RANDOM_FACTORIES = ("rand", "randn", "randint", "randperm", "normal", "bernoulli", "multinomial", "poisson",
                     "rand_like", "randn_like", "randint_like")
_RANDOM_METHODS = ("normal_", "uniform_", "bernoulli_", "exponential_", "geometric_", "cauchy_", "log_normal_",
                   "random_")


class _ValuelessMeta(torch.overrides.TorchFunctionMode):
    """While a model is built on the meta device: initialisers (``torch.nn.init``, random fills, random
    factories) of meta tensors do nothing, since a meta tensor has no values to set. Running them anyway
    sends each through torch's Python meta kernels, whose first use imports torch._dynamo, torch.fx and
    sympy (about 2 s of a CLI start-up); every other operation runs as it would."""

    def __init__(self):
        super().__init__()
        self._init = {getattr(torch.nn.init, n) for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")}
        self._methods = {getattr(torch.Tensor, n) for n in _RANDOM_METHODS}
        self._factories = {getattr(torch, n) for n in _RANDOM_FACTORIES if hasattr(torch, n)}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._init or func in self._methods:
            target = args[0] if args else kwargs.get("tensor")
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        elif func in self._factories:
            out = self._empty_like_factory(func, args, kwargs)
            if out is not None:
                return out
        elif func is torch.eye and isinstance(kwargs.get("out"), torch.Tensor) and kwargs["out"].is_meta:
            n = args[0]  # nn.init.eye_ fills its tensor through torch.eye(n, m, out=tensor)
            m = args[1] if len(args) > 1 else n
            if tuple(kwargs["out"].shape) == (n, m):
                return kwargs["out"]
        return func(*args, **kwargs)

    @staticmethod
    def _empty_like_factory(func, args, kwargs):
        name = func.__name__
        device = kwargs.get("device")
        if name.endswith("_like"):
            src = args[0]
            dev = torch.device(device) if device is not None else src.device
            if dev.type != "meta":
                return None
            return torch.empty_like(src, dtype=kwargs.get("dtype"), device=dev)
        if name in ("rand", "randn"):
            size = kwargs.get("size", args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args)
            dev = torch.device(device) if device is not None else torch.empty(0).device
            if dev.type != "meta" or kwargs.get("out") is not None:
                return None
            return torch.empty(tuple(size), dtype=kwargs.get("dtype"), device=dev,
                               requires_grad=bool(kwargs.get("requires_grad", False)))
        return None  # other random factories: run as they are


def _build_empty(cfg: ModelConfig) -> RetrievalModel:
    """The model of ``cfg`` with every tensor on the meta device (shapes and dtypes only: no memory, no random
    init)."""
    with torch.device("meta"), _ValuelessMeta():
        if cfg.framework == OPEN_CLIP:
            return _build_open_clip(cfg, None, device="meta")
        clip, preprocess = load_clip(cfg.backbone.arch, None, cfg.backbone.quick_gelu, device="meta")
        return FRAMEWORK_CLASSES[cfg.framework](cfg, clip, preprocess)


def _empty_model(cfg: ModelConfig) -> RetrievalModel | None:
    """``_build_empty(cfg)``, or None when the model cannot be built on the meta device (the caller then
    builds it normally)."""
    try:
        return _build_empty(cfg)
    except (RuntimeError, NotImplementedError, TypeError, ValueError, AttributeError, HybridTowerError) as exc:
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


def _rebuild_causal_masks(model: torch.nn.Module, names: list[str]) -> list[str]:
    """Fill open_clip's non-persistent ``attn_mask`` buffers (always the causal mask: -inf above the diagonal,
    which open_clip builds at init and no checkpoint holds) left on the meta device; the other names."""
    left = []
    for name in names:
        owner_name, _, leaf = name.rpartition(".")
        try:
            owner = model.get_submodule(owner_name) if owner_name else model
        except AttributeError:
            owner = None
        mask = getattr(owner, leaf, None) if leaf == "attn_mask" else None
        if owner is not None and type(owner).__module__.startswith("open_clip") and isinstance(mask, torch.Tensor) \
                and mask.dim() == 2 and mask.shape[0] == mask.shape[1]:
            built = torch.full(tuple(mask.shape), float("-inf"), dtype=mask.dtype).triu_(1)
            if leaf in owner._buffers:
                owner._buffers[leaf] = built
            else:
                setattr(owner, leaf, built)
        else:
            left.append(name)
    return left


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
        PREPROCESS_KEY: json.dumps(model._preprocess),
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


TEXT_PART = "text"  # ``load_model(parts=TEXT_PART)``: what encoding a text and scoring need, nothing else
_PARTIAL_ATTR = "_hybridtower_partial"  # on a model loaded by parts: where the rest of its tensors lie


def text_part_keys(model: RetrievalModel) -> set[str] | None:
    """The state-dict keys ``model`` needs to encode a text and to score (``encode_text``, ``score``): the text
    tower (``text_encoder.*``), ``logit_scale`` and, for a model that scores a query against stored frames
    (X-Pool: ``query_independent`` False), its ``fusion.*``. None when the model cannot be loaded by parts
    (open_clip models used whole: their text and image towers are one module)."""
    if model.cfg.framework == OPEN_CLIP:
        return None
    prefixes = ("text_encoder.",) + (() if model.query_independent else ("fusion.",))
    return {k for k in model.state_dict() if k == "logit_scale" or k.startswith(prefixes)}


def is_partial(model) -> bool:
    """Whether ``model`` was loaded by parts and some of its tensors (the video tower) are not read yet."""
    return getattr(model, _PARTIAL_ATTR, None) is not None


def _check_checkpoint_keys(path: Path, cfg: ModelConfig, own: dict, shapes: dict) -> None:
    missing, unexpected = _diff_keys(own, shapes)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match a {cfg.name or cfg.framework} model: "
            f"{len(missing)} missing tensor(s) {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}"
        )
    bad = [k for k, v in shapes.items() if tuple(own[k].shape) != tuple(v)]
    if bad:
        raise CheckpointError(f"{path}: shape mismatch for {bad[:5]} (checkpoint made for another config?)")


def _read_tensors(path: Path, keys, own: dict) -> dict:
    """The tensors ``keys`` of the checkpoint ``path``, each read on its own (safetensors maps the file: the
    bytes of other tensors are not read), cast to the dtypes of ``own``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k).to(own[k].dtype) for k in sorted(keys)}
    except (OSError, RuntimeError, ValueError) as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path} cannot be read any more: {exc}") from exc


def _move_loaded(model: torch.nn.Module, device) -> None:
    """Move every tensor that holds values to ``device`` (those still on the meta device stay there). Nothing
    to do on the CPU (tensors are read there), so a model in use by other threads is not touched at all."""
    device = torch.device(device)
    if device.type == "cpu":
        return
    model._apply(lambda t: t if t.is_meta or t.device == device else t.to(device))


def _load_text_part(model: RetrievalModel, path: Path, cfg: ModelConfig, recorded, device) -> RetrievalModel | None:
    """``model`` (built empty) with only the tensors of :func:`text_part_keys` read from ``path``; the others
    stay on the meta device until :func:`load_rest`. None when the model cannot be used that way (the caller
    loads it whole)."""
    from safetensors import safe_open

    keys = text_part_keys(model)
    if keys is None or _shares_tensors(model):
        return None
    own = model.state_dict()
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # the header only
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint: {exc}") from exc
    _check_checkpoint_keys(path, cfg, own, shapes)
    model.load_state_dict(_read_tensors(path, keys, own), strict=False, assign=True)
    rest = sorted(set(own) - keys)
    left = [n for n in _rebuild_causal_masks(model, _meta_tensors(model)) if n not in set(rest)]
    if left:
        log.debug("%s: tensors %s are not in the checkpoint; loading the model whole", path, left[:5])
        return None
    _move_loaded(model, device)
    setattr(model, _PARTIAL_ATTR, {"path": path, "device": str(device), "rest": rest})
    return _with_preprocess(model, recorded).eval()


def read_rest(model: RetrievalModel) -> dict:
    """The tensors a model loaded by parts still lacks (name -> tensor, cast to the model's dtypes), read from
    its checkpoint; not adopted yet (see :func:`adopt_rest`), so a caller can verify them first."""
    partial = getattr(model, _PARTIAL_ATTR, None)
    if partial is None:
        return {}
    return _read_tensors(partial["path"], partial["rest"], model.state_dict())


def adopt_rest(model: RetrievalModel, rest: dict) -> RetrievalModel:
    """Make ``rest`` (from :func:`read_rest`) the model's missing tensors: the model is whole afterwards."""
    partial = getattr(model, _PARTIAL_ATTR, None)
    if partial is None:
        return model
    if set(rest) != set(partial["rest"]):
        raise ValueError("adopt_rest: these are not the tensors the model lacks")
    model.load_state_dict(rest, strict=False, assign=True)
    left = _meta_tensors(model)
    if left:
        raise CheckpointError(f"{partial['path']}: tensors {left[:5]} are still not loaded")
    _move_loaded(model, partial["device"])
    setattr(model, _PARTIAL_ATTR, None)
    return model.eval()


def load_model(path: str | Path, device: str | torch.device = "cpu", parts: str | None = None) -> RetrievalModel:
    """Rebuild a model from one of our checkpoints (file or run folder); strict: every tensor must match.

    The model is built on the meta device and the checkpoint's tensors are adopted as its parameters (cast to
    the model's dtypes), so no memory is allocated and no random init runs for weights that are overwritten
    anyway (seconds for a ViT-B model). A model that cannot be built that way (tied weights, a tensor the
    checkpoint does not hold, an op without a meta kernel) is built normally and loaded by copying.

    ``parts="text"`` (:data:`TEXT_PART`) reads only the tensors needed to encode a text and score
    (:func:`text_part_keys`; the file's header still checks every name and shape): the video tower stays on
    the meta device, no byte of it is read, and :func:`is_partial` is True until :func:`read_rest` +
    :func:`adopt_rest` load it. A model that cannot be loaded by parts (open_clip models used whole, shared
    tensors) is loaded whole (then ``is_partial`` is False)."""
    from safetensors.torch import load_file

    if parts not in (None, TEXT_PART):
        raise ValueError(f"load_model: parts must be None (everything) or {TEXT_PART!r}, got {parts!r}")
    path = resolve_checkpoint_path(path)
    meta = read_checkpoint_metadata(path)
    cfg = config_from_dict(json.loads(meta[CONFIG_KEY]))
    if cfg.framework == OPEN_CLIP:
        open_clip_tokenizer(cfg)  # first (then cached): the one part that may need the network fails before any build
    model = _empty_model(cfg)
    empty = model is not None
    if empty and parts == TEXT_PART:
        partial = _load_text_part(model, path, cfg, _recorded_preprocess(meta), device)
        if partial is not None:
            return partial
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
    recorded = _recorded_preprocess(meta)
    if empty and not _shares_tensors(model):
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True, assign=True)
        left = _rebuild_causal_masks(model, _meta_tensors(model))
        if not left:
            return _with_preprocess(model, recorded).to(device).eval()
        log.debug("%s: tensors %s are not in the checkpoint; building the model normally", path, left[:5])
    if empty:
        model = create_model(cfg, pretrained=None)
    model.load_state_dict(state, strict=True)
    return _with_preprocess(model, recorded).to(device).eval()


def _recorded_preprocess(meta: dict) -> dict | None:
    """The frame preprocessing ``save_model`` recorded (what the weights were trained with), if readable."""
    try:
        pre = json.loads(meta.get(PREPROCESS_KEY) or "null")
    except ValueError:
        return None
    ok = (isinstance(pre, dict) and isinstance(pre.get("image_size"), int)
          and all(isinstance(pre.get(k), list) and len(pre[k]) == 3 for k in ("mean", "std")))
    return pre if ok else None


def _with_preprocess(model: RetrievalModel, recorded: dict | None) -> RetrievalModel:
    """``model`` with the checkpoint's recorded preprocessing: a model fine-tuned from weights normalised
    otherwise than OpenAI's (e.g. ViT-L-14 laion2b_s32b_b82k: mean = std = 0.5) keeps that normalisation,
    where rebuilding from the architecture alone would give OpenAI's. Ignored if it is for another size."""
    if recorded and recorded["image_size"] == model._preprocess.get("image_size") \
            and set(recorded) == set(model._preprocess):
        model._preprocess = dict(recorded)
    return model


def _diff_keys(own: dict, state: dict) -> tuple[list[str], list[str]]:
    return sorted(set(own) - set(state)), sorted(set(state) - set(own))
