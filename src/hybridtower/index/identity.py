"""Model identity: what ties an index to the exact model that encoded it.

Identity = framework + config hash (``core.config.config_hash`` of the resolved ModelConfig) + a SHA-256 of
the weights (every tensor of the state dict, in key order, as float32 little-endian bytes). Two checkpoints
with the same weights but different file metadata are the same model; a fine-tuned copy is not.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .. import __version__
from ..core.config import config_hash
from ..core.display import printable, printable_path
from .store import IndexMismatchError


def weights_sha256(model) -> str:
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().reshape(-1).view("u1"))  # the bytes of .tobytes(), without copying them
    return h.hexdigest()


def model_identity(model, checkpoint: str | Path | None) -> dict:
    return {
        "framework": model.cfg.framework,
        "name": model.cfg.name or model.cfg.framework,
        "config_hash": config_hash(model.cfg),
        "weights_sha256": weights_sha256(model),
        "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
        "embed_dim": int(model.embed_dim),
        "query_independent": bool(model.query_independent),
        "text_context_length": int(model.cfg.text_context_length),
        "package_version": __version__,
    }


_CACHE: dict = {}
_CACHE_SIZE = 2


def load_checkpoint(checkpoint: str | Path, device: str = "cpu"):
    """(model in eval mode, its identity) from one of our checkpoints (file or run folder).

    The last two models loaded are kept (keyed by resolved path, size, mtime and device), so indexing and
    then searching in one process (``hybridtower demo``, tests) loads and hashes a checkpoint once. The
    returned model is shared: treat it as read-only.
    """
    from .. import hub

    path = hub.resolve_checkpoint_path(checkpoint).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, str(device))
    if key in _CACHE:
        _CACHE[key] = _CACHE.pop(key)  # most recently used last
        return _CACHE[key]
    model = hub.load_model(path, device=device)
    model.requires_grad_(False)
    result = (model, model_identity(model, path))
    _CACHE[key] = result
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    return result


def same_model(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("framework", "config_hash", "weights_sha256"))


def check_same_model(index_model: dict, offered: dict, index_dir, what: str = "checkpoint") -> None:
    """Raise IndexMismatchError with a message naming both models when they differ."""
    if same_model(index_model, offered):
        return

    def show(m: dict) -> str:
        return printable(f"{m.get('name')} [{m.get('framework')}], config {m.get('config_hash')}, "
                         f"weights {str(m.get('weights_sha256'))[:12]}")

    diffs = [k for k in ("framework", "config_hash", "weights_sha256") if index_model.get(k) != offered.get(k)]
    raise IndexMismatchError(
        f"the index {printable_path(index_dir)} was built with a different model than {what} "
        f"{printable_path(offered.get('checkpoint') or '?')} (differs in {', '.join(diffs)}):\n"
        f"  index: {show(index_model)} (from {printable_path(index_model.get('checkpoint') or '?')})\n"
        f"  {what}: {show(offered)}\nits vectors are not comparable; use the checkpoint the index was built with, "
        f"or build a new index (`hybridtower index ... --overwrite`)"
    )
