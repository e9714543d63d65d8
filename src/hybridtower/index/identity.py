"""Model identity: what ties an index to the exact model that encoded it.

Identity = framework + config hash (``core.config.config_hash`` of the resolved ModelConfig) + a SHA-256 of
the weights (every tensor of the state dict, in key order, as float32 little-endian bytes). Two checkpoints
with the same weights but different file metadata are the same model; a fine-tuned copy is not.

Per-part digests (``weights_parts``): a SHA-256 over each of two disjoint sets of tensors, ``text`` (what
encoding a text and scoring read: ``hub.text_part_keys``) and ``rest`` (the video tower and everything
else), under the rule ``PARTS_RULE`` (:func:`tensors_sha256`: each tensor's float32 bytes hashed on its own,
in 8 MiB chunks, in parallel threads since hashlib releases the GIL; then name, shape and that digest in
key order). An index records them (its manifest's ``model``), so a text
search loads and verifies only the text part (``load_checkpoint(..., parts="text")``: the video tower's
bytes are not read), and the rest is verified against ``rest`` when it is loaded (:func:`materialise`). An
index without them (built before they existed, or with another rule) is checked on every weight as before.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from .. import __version__
from ..core.config import config_hash
from ..core.display import printable, printable_path
from .store import IndexMismatchError

PARTS_RULE = "text-v2"  # text = text_encoder.*, logit_scale (+ fusion.* when scores are query-dependent);
# digests by tensors_sha256 (v1, a sequential digest, lived minutes in development: such indexes get the full check)
TEXT = "text"
REST = "rest"


def _float32_bytes(tensor):
    """A tensor's values as float32 bytes on the host (the bytes of ``.tobytes()``, without copying them)."""
    import torch

    return tensor.detach().to("cpu", torch.float32).contiguous().numpy().reshape(-1).view("u1")


def weights_sha256(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(_float32_bytes(tensor))
    return h.hexdigest()


_CHUNK = 8 * 2**20  # bytes hashed per task: a large tensor (CLIP's token embedding, 100 MB) is split


def tensors_sha256(tensors: dict) -> str:
    """The digest of a set of tensors (name -> tensor) under ``PARTS_RULE``: SHA-256 over, in key order, each
    name, shape and tensor digest; a tensor's digest is the SHA-256 of the SHA-256s of its float32 bytes in
    8 MiB chunks. The chunks are hashed in parallel threads (hashlib releases the GIL): this is what
    verifying the weights a search loads costs."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    names = sorted(tensors)
    data = [_float32_bytes(tensors[n]) for n in names]
    chunks = [(i, start) for i, b in enumerate(data) for start in range(0, max(len(b), 1), _CHUNK)]

    def digest(task) -> bytes:
        i, start = task
        return hashlib.sha256(data[i][start : start + _CHUNK]).digest()

    workers = max(1, min(len(chunks), os.cpu_count() or 1))
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(digest, chunks))
    else:
        parts = [digest(c) for c in chunks]
    per_tensor = [hashlib.sha256() for _ in names]
    for (i, _), d in zip(chunks, parts):
        per_tensor[i].update(d)
    h = hashlib.sha256()
    for name, t in zip(names, per_tensor):
        h.update(name.encode())
        h.update(str(tuple(tensors[name].shape)).encode())
        h.update(t.digest())
    return h.hexdigest()


def _weights_digests(model) -> tuple[str, dict | None]:
    """(weights_sha256, weights_parts or None)."""
    from .. import hub

    state = model.state_dict()
    text_keys = hub.text_part_keys(model)
    full = weights_sha256(model)
    if text_keys is None:
        return full, None
    return full, {"rule": PARTS_RULE, TEXT: tensors_sha256({k: v for k, v in state.items() if k in text_keys}),
                  REST: tensors_sha256({k: v for k, v in state.items() if k not in text_keys})}


def _identity(model, checkpoint, weights: str | None, parts: dict | None) -> dict:
    out = {
        "framework": model.cfg.framework,
        "name": model.cfg.name or model.cfg.framework,
        "config_hash": config_hash(model.cfg),
        "weights_sha256": weights,
        "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
        "embed_dim": int(model.embed_dim),
        "query_independent": bool(model.query_independent),
        "text_context_length": int(model.cfg.text_context_length),
        "package_version": __version__,
    }
    if parts is not None:
        out["weights_parts"] = parts
    return out


def model_identity(model, checkpoint: str | Path | None) -> dict:
    return _identity(model, checkpoint, *_weights_digests(model))


def recorded_parts(identity: dict) -> dict | None:
    """The per-part digests an index recorded, when they are usable (this rule, both digests), else None."""
    parts = identity.get("weights_parts") if isinstance(identity, dict) else None
    if isinstance(parts, dict) and parts.get("rule") == PARTS_RULE and all(
            isinstance(parts.get(p), str) and len(parts[p]) == 64 for p in (TEXT, REST)):
        return parts
    return None


_CACHE: dict = {}
_CACHE_SIZE = 2
_CACHE_LOCK = threading.Lock()
_MATERIALISE_LOCK = threading.Lock()
_REST_DIGEST = "_hybridtower_rest_sha256"  # on a model whose rest was loaded by materialise(): its digest


def load_checkpoint(checkpoint: str | Path, device: str = "cpu", parts: str | None = None):
    """(model in eval mode, its identity) from one of our checkpoints (file or run folder).

    ``parts="text"``: only the tensors a text search needs are read (``hub.load_model(parts="text")``); the
    identity then has ``weights_sha256`` None and ``weights_parts`` = {"rule", "text"} (the text part's digest
    only). A model that cannot be loaded by parts is loaded whole, with its full identity.

    The last two models loaded are kept (keyed by resolved path, size, mtime, device and parts), so indexing
    and then searching in one process (``hybridtower demo``, tests) loads and hashes a checkpoint once; a
    text-only request is answered by a whole model already kept. The returned model is shared: treat it as
    read-only.
    """
    from .. import hub

    path = hub.resolve_checkpoint_path(checkpoint).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, str(device))
    with _CACHE_LOCK:
        for k in ((key + (None,), key + (TEXT,)) if parts == TEXT else (key + (None,),)):
            if k in _CACHE:
                _CACHE[k] = _CACHE.pop(k)  # most recently used last
                return _CACHE[k]
    model = hub.load_model(path, device=device, parts=parts)
    model.requires_grad_(False)
    if hub.is_partial(model):
        text_keys = hub.text_part_keys(model)
        digest = tensors_sha256({k: v for k, v in model.state_dict().items() if k in text_keys})
        result = (model, _identity(model, path, None, {"rule": PARTS_RULE, TEXT: digest}))
        key = key + (TEXT,)
    else:
        result = (model, model_identity(model, path))
        key = key + (None,)
    with _CACHE_LOCK:
        _CACHE[key] = result
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
    return result


def materialise(model, index_model: dict, index_dir, what: str = "checkpoint"):
    """Load the tensors a text-only model (``load_checkpoint(parts="text")``) still lacks, after checking
    them against the index's recorded ``rest`` digest (IndexMismatchError, the model left as it was, when
    they differ); returns the whole model. Thread-safe; a model already whole is returned as it is (but its
    rest, when it was loaded here, is still checked against this index's digest)."""
    from .. import hub

    parts = recorded_parts(index_model)
    with _MATERIALISE_LOCK:
        if hub.is_partial(model):
            rest = hub.read_rest(model)
            digest = tensors_sha256(rest)
            if parts is None or digest != parts[REST]:
                _refuse_rest(index_model, digest, index_dir, what, model)
            hub.adopt_rest(model, rest)
            setattr(model, _REST_DIGEST, digest)
            return model
        digest = getattr(model, _REST_DIGEST, None)
    if digest is not None and (parts is None or digest != parts[REST]):
        _refuse_rest(index_model, digest, index_dir, what, model)
    return model


def _refuse_rest(index_model: dict, digest: str, index_dir, what: str, model) -> None:
    from .. import hub

    partial = getattr(model, "_hybridtower_partial", None) or {}
    ckpt = partial.get("path") or index_model.get("checkpoint") or "?"
    parts = recorded_parts(index_model) or {}
    raise IndexMismatchError(
        f"the index {printable_path(index_dir)} was built with a different model than {what} "
        f"{printable_path(ckpt)}: its video tower (the weights besides the text tower) differs "
        f"(index: {str(parts.get(REST))[:12]}, {what}: {digest[:12]}); text search is not affected, but image "
        f"search needs the model the index was built with: use that checkpoint, or build a new index "
        f"(`hybridtower index ... --overwrite`)")


def _weights_match(a: dict, b: dict) -> bool:
    """The weights of identities ``a`` and ``b`` are the same as far as both know: the full digest when both
    have one, else the text part's when both record it under the same rule."""
    if isinstance(a.get("weights_sha256"), str) and isinstance(b.get("weights_sha256"), str):
        return a["weights_sha256"] == b["weights_sha256"]
    pa, pb = a.get("weights_parts") or {}, b.get("weights_parts") or {}
    return (isinstance(pa, dict) and isinstance(pb, dict) and pa.get("rule") == pb.get("rule") == PARTS_RULE
            and isinstance(pa.get(TEXT), str) and pa.get(TEXT) == pb.get(TEXT))


def same_model(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("framework", "config_hash")) and _weights_match(a, b)


def check_same_model(index_model: dict, offered: dict, index_dir, what: str = "checkpoint") -> None:
    """Raise IndexMismatchError with a message naming both models when they differ."""
    if same_model(index_model, offered):
        return
    text_only = not isinstance(offered.get("weights_sha256"), str)

    def weights(m: dict) -> str:
        if text_only:
            return f"text tower {str((m.get('weights_parts') or {}).get(TEXT))[:12]}"
        return str(m.get("weights_sha256"))[:12]

    def show(m: dict) -> str:
        return printable(f"{m.get('name')} [{m.get('framework')}], config {m.get('config_hash')}, "
                         f"weights {weights(m)}")

    diffs = [k for k in ("framework", "config_hash") if index_model.get(k) != offered.get(k)]
    if not _weights_match(index_model, offered):
        diffs.append("weights_sha256 (its text tower: weights_parts.text)" if text_only else "weights_sha256")
    raise IndexMismatchError(
        f"the index {printable_path(index_dir)} was built with a different model than {what} "
        f"{printable_path(offered.get('checkpoint') or '?')} (differs in {', '.join(diffs)}):\n"
        f"  index: {show(index_model)} (from {printable_path(index_model.get('checkpoint') or '?')})\n"
        f"  {what}: {show(offered)}\nits vectors are not comparable; use the checkpoint the index was built with, "
        f"or build a new index (`hybridtower index ... --overwrite`)"
    )
