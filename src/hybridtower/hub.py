"""Build models, and the library's entry point for building, saving and loading them.

    import hybridtower
    model = hybridtower.create_model("pig-vit-b-32", pretrained="openai")       # a tag (needs the network)
    model = hybridtower.create_model("pig-vit-b-32", pretrained="ViT-B-32.pt")  # a local CLIP checkpoint
    model = hybridtower.create_model("meanp-vit-b-32", pretrained="hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    model = hybridtower.create_model("clip:ViT-L-14", pretrained="openai")      # meanP over any CLIP, no training
    hybridtower.save_model(model, "run/model.safetensors")
    model = hybridtower.load_model("run/model.safetensors")                     # needs nothing else

This module's one job is building: a model from a preset, ``clip:ARCH`` or a config, its CLIP parts from
open_clip (``load_clip``), or empty on the meta device. Architecture configs and ``clip:ARCH`` live in
``hybridtower.archs``, checkpoints (``save_model``, ``load_model``, loading by parts) in
``hybridtower.checkpoints``; every public name of both is importable from here too, so ``hybridtower.hub``
stays the one documented entry point. (``checkpoints`` builds models with this module, so its names are
re-exported on first use, by ``__getattr__``, rather than imported here: that keeps imports one way,
checkpoints -> hub -> archs.)

CLIP weights always go through open_clip: a tag (``openai``, ``laion2b_s34b_b79k``, ...), a Hugging Face
Hub model (``hf-hub:ORG/NAME``), a local folder laid out like one (``local-dir:PATH``: its
``open_clip_config.json`` and weights file) or a file in any format open_clip reads (its own
``{"state_dict": ...}`` checkpoints, plain state dicts, safetensors, and OpenAI's original TorchScript
archives). Downloads fail within seconds when the hub cannot be reached, with one line naming the file to
fetch elsewhere. ``clip:ARCH`` names a Two-Tower mean-pooling (CLIP4Clip meanP) model over ANY open_clip
architecture ``ARCH`` (see ``hybridtower.archs``): CLIP's ViTs and ResNets with CLIP's text transformer and
BPE get framework ``meanp`` on hybridtower's own towers, every other architecture framework ``openclip``
(open_clip's model used whole). The CLIP towers of the frameworks other than ``openclip`` are hybridtower's
own (``models.clip_backbone``, state dicts laid out like open_clip's ``CLIP``) for every ViT architecture they
implement: open_clip still builds and initialises (or loads) the model, and the own towers adopt its tensors,
so weights and random streams are unchanged; ``load_model`` and ``create_model(device="meta")`` build them
without importing open_clip at all (architecture configs are read from their JSON files). Our checkpoints
are safetensors files whose metadata holds the resolved model config, so ``load_model(path)`` needs no other
file (an ``openclip`` model whose tokenizer or text-tower config comes from the Hugging Face hub needs that
hub's cache, or fails at once in one line saying so).
"""

from __future__ import annotations

import dataclasses
import logging
import zipfile
from typing import TYPE_CHECKING

import torch

from .archs import (CLIP_PREFIX, OPEN_CLIP, _config_folders, _config_from_file, _config_names,  # noqa: F401
                    _open_clip_name, _open_clip_preprocess, _register_package_archs, backbone_problem, clip_config,
                    clip_path, hub_names, list_clip_archs, open_clip_config, open_clip_tokenizer, weight_source)
from .clip_sources import WeightSource, hub_access, one_line
from .core.errors import CheckpointError, ConfigError, HybridTowerError
from .models import FRAMEWORK_CLASSES, ModelConfig, OpenClipMeanPooling, RetrievalModel, config_from_dict, preset_config
from .models.clip_backbone import OPENAI_MEAN, OPENAI_STD, adopt_open_clip, build_backbone, unsupported

if TYPE_CHECKING:  # for type checkers; at run time these come from __getattr__ below
    from .checkpoints import (CONFIG_KEY, MODEL_FILE, PREPROCESS_KEY, TEXT_PART, VERSION_KEY,  # noqa: F401
                              _meta_tensors, adopt_rest, is_partial, load_model, read_checkpoint_metadata,
                              read_rest, resolve_checkpoint_path, save_model, text_part_keys)

log = logging.getLogger(__name__)

# hybridtower.checkpoints' names this module re-exports (that module imports this one: see the docstring)
_CHECKPOINT_NAMES = frozenset({
    "CONFIG_KEY", "VERSION_KEY", "PREPROCESS_KEY", "MODEL_FILE", "TEXT_PART", "save_model", "load_model",
    "resolve_checkpoint_path", "read_checkpoint_metadata", "text_part_keys", "is_partial", "read_rest",
    "adopt_rest", "_meta_tensors",
})


def __getattr__(name: str):
    if name in _CHECKPOINT_NAMES:
        from . import checkpoints

        return getattr(checkpoints, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _CHECKPOINT_NAMES)


class _QuietNoPretrained(logging.Filter):
    """open_clip warns on the root logger whenever a model is built without weights; we do that on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


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
