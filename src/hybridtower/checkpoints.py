"""Our checkpoints: safetensors files whose metadata holds the resolved model config (and the frame
preprocessing the weights were trained with), so ``load_model(path)`` needs no other file. Saving, reading the
metadata, and loading: whole (built on the meta device, the file's tensors adopted) or by parts (``parts="text"``:
only what encoding a text and scoring need; ``read_rest`` + ``adopt_rest`` load the rest later).

Models are built by ``hub`` (this module depends on it, never the reverse); ``hub`` re-exports every public
name here, so ``hybridtower.hub`` stays the one entry point.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from . import __version__
from .archs import OPEN_CLIP, open_clip_tokenizer
from .core.config import to_dict
from .core.errors import CheckpointError
from .hub import _empty_model, create_model
from .models import ModelConfig, RetrievalModel, config_from_dict

log = logging.getLogger(__name__)

CONFIG_KEY = "hybridtower.config"
VERSION_KEY = "hybridtower.version"
PREPROCESS_KEY = "hybridtower.preprocess"
MODEL_FILE = "model.safetensors"


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
