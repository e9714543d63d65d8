"""Where CLIP weights come from: an open_clip tag, ``hf-hub:ORG/NAME``, ``local-dir:PATH`` or a file.

``resolve_weights(arch, pretrained)`` turns any of them into a local weights file plus what is known about
those weights (their open_clip model config, preprocessing and QuickGELU setting). Downloads go through
open_clip / huggingface_hub and use their caches. When the hub cannot be reached, huggingface_hub is put in
offline mode for the call (cached files still load) instead of retrying for a minute, its retry logs are
silenced, and a missing file fails at once with ONE line that says what to download and how to pass it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from .core.errors import CheckpointError, HybridTowerError

SCHEMAS = ("hf-hub:", "local-dir:")
PROBE_TIMEOUT_S = 3.0
CONFIG_FILE = "open_clip_config.json"
# the file names open_clip looks for in a hub repo / local folder, most preferred first
WEIGHT_FILES = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
)
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_probe_cache: dict[str, tuple[float, bool]] = {}


@dataclass
class WeightSource:
    """A local CLIP weights file and what its origin says about it."""

    file: str
    description: str  # e.g. "the 'openai' weights of ViT-B-32", "hf-hub:laion/..."
    model_cfg: dict | None = None  # the open_clip model config shipped with the weights (hub / local-dir)
    preprocess: dict = field(default_factory=dict)  # open_clip preprocess keys (mean, std, interpolation, ...)
    quick_gelu: bool | None = None  # the activation the weights were trained with, when known


def _reachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` s (DNS included; cached for a minute)."""
    now = time.monotonic()
    key = f"{host}:{port}"
    cached = _probe_cache.get(key)
    if cached and now - cached[0] < 60:
        return cached[1]
    result: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    ok = bool(result and result[0])
    _probe_cache[key] = (now, ok)
    return ok


def _hub_endpoint() -> str:
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except ImportError:
        return "https://huggingface.co"


@contextlib.contextmanager
def hub_access(url: str | None = None):
    """Yields whether ``url``'s host (default: the Hugging Face endpoint) answers. When it does not,
    huggingface_hub runs in offline mode inside the block (cached files only, no retries); its retry and
    download warnings are silenced either way (a failure becomes one CheckpointError line)."""
    target = urlparse(url or _hub_endpoint())
    host = target.hostname or "huggingface.co"
    port = target.port or (80 if target.scheme == "http" else 443)
    online = any(os.environ.get(v) for v in _PROXY_VARS) or _reachable(host, port)
    hf_constants = None
    try:
        from huggingface_hub import constants as hf_constants
    except ImportError:
        pass
    was_offline = getattr(hf_constants, "HF_HUB_OFFLINE", False)
    if hf_constants is not None and not online:
        hf_constants.HF_HUB_OFFLINE = True
    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "open_clip")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    root_filter = _DropDownloadNoise()
    logging.getLogger().addFilter(root_filter)  # open_clip logs its download errors on the root logger
    try:
        yield online
    finally:
        if hf_constants is not None:
            hf_constants.HF_HUB_OFFLINE = was_offline
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        logging.getLogger().removeFilter(root_filter)


class _DropDownloadNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(("huggingface_hub", "open_clip")) and "download" not in record.getMessage().lower()


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, at most ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


_one_line = one_line


def _fetch(fetch, what: str, page: str, advice: str, url: str | None = None):
    with hub_access(url) as online:
        try:
            return fetch()
        except (ImportError, HybridTowerError):
            raise  # a missing package, or our own error, is not a download failure
        except Exception as exc:  # huggingface_hub / urllib / open_clip raise many types; all mean "not fetched"
            host = urlparse(url or page).hostname
            reason = f"no network? {host} is unreachable" if not online else one_line(exc)
            raise CheckpointError(f"cannot download {what} ({reason}); {advice}") from None


def _download(fetch, what: str, page: str, advice: str, url: str | None = None) -> str:
    return str(_fetch(fetch, what, page, advice, url))


def is_hub_name(name: str) -> bool:
    """Whether open_clip / transformers would look ``name`` (a tokenizer or text model) up on the Hugging Face
    hub, rather than in a local folder."""
    return bool(name) and not os.path.isdir(os.path.expanduser(name))


def hf_resource(fetch, what: str, repo: str):
    """``fetch()`` of something open_clip takes from the Hugging Face hub by name at build time (an
    architecture's tokenizer, a Hugging Face text tower's config): from huggingface_hub's cache when the hub
    cannot be reached (offline mode, no retries); a failure is ONE CheckpointError line saying what to do."""
    page = f"{_hub_endpoint()}/{repo}"
    advice = (f"build or load this model once where {urlparse(page).hostname} is reachable (huggingface_hub then "
              "keeps it in its cache, HF_HOME), or copy that cache from a machine that has it")
    return _fetch(fetch, what, page, advice)


def _tag_source(arch: str, tag: str) -> WeightSource:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    what = f"the {tag!r} weights of {arch}"
    if cfg.get("file"):
        return WeightSource(cfg["file"], what, preprocess=dict(cfg), quick_gelu=bool(cfg.get("quick_gelu", False)))
    hub_id = cfg.get("hf_hub", "")
    if hub_id:
        parts = hub_id.strip("/").split("/")
        repo = "/".join(parts[:2])
        filename = "/".join(parts[2:]) or "open_clip_model.safetensors"  # what open_clip fetches first
        page, url = f"{_hub_endpoint()}/{repo}", None
    else:
        page = url = cfg.get("url", "")
        filename = os.path.basename(urlparse(url).path) or f"{arch}.pt"
    advice = (f"on a machine with network access download {filename} from {page} "
              f"and pass --pretrained path/to/{filename}")
    file = _download(lambda: open_clip.download_pretrained(cfg), what, page, advice, url)
    if not file:
        raise CheckpointError(f"open_clip names no download for {what}")
    return WeightSource(file, what, preprocess=dict(cfg), quick_gelu=bool(cfg.get("quick_gelu", False)))


def _read_config(path: Path, name: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{name}: {CONFIG_FILE} is unreadable: {_one_line(exc)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_cfg"), dict):
        raise CheckpointError(f"{name}: {CONFIG_FILE} has no 'model_cfg' (not an open_clip model folder)")
    return data


def _hf_hub_source(name: str, check) -> WeightSource:
    from open_clip.pretrained import download_pretrained_from_hf

    repo = name[len("hf-hub:"):].strip("/")
    if repo.count("/") != 1:
        raise CheckpointError(f"{name!r}: expected hf-hub:ORG/NAME")
    page = f"{_hub_endpoint()}/{repo}"
    advice = (f"on a machine with network access download {CONFIG_FILE} and open_clip_model.safetensors from "
              f"{page} into one folder and pass --pretrained local-dir:path/to/that/folder")
    config_file = _download(lambda: download_pretrained_from_hf(repo, filename=CONFIG_FILE), name, page, advice)
    data = _read_config(Path(config_file), name)
    if check:
        check(data["model_cfg"], name)  # before fetching a large file
    weights = _download(lambda: download_pretrained_from_hf(repo), f"the weights of {name}", page, advice)
    return WeightSource(weights, name, data["model_cfg"], dict(data.get("preprocess_cfg") or {}),
                        bool(data["model_cfg"].get("quick_gelu", False)))


def _local_dir_source(name: str, check) -> WeightSource:
    folder = Path(os.path.expanduser(name[len("local-dir:"):]))
    if not folder.is_dir():
        raise CheckpointError(f"{name!r}: no such folder")
    if not (folder / CONFIG_FILE).is_file():
        raise CheckpointError(f"{name!r}: the folder has no {CONFIG_FILE} (pass a weights file directly instead)")
    data = _read_config(folder / CONFIG_FILE, name)
    if check:
        check(data["model_cfg"], name)
    found = [folder / f for f in WEIGHT_FILES if (folder / f).is_file()]
    if not found:
        found = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pth", ".pt"))
    if not found:
        raise CheckpointError(f"{name!r}: the folder holds no weights file ({', '.join(WEIGHT_FILES[:3])}, ...)")
    return WeightSource(str(found[0]), name, data["model_cfg"], dict(data.get("preprocess_cfg") or {}),
                        bool(data["model_cfg"].get("quick_gelu", False)))


def resolve_weights(arch: str, pretrained: str, check=None) -> WeightSource:
    """A local weights file for ``pretrained`` (tag of ``arch``, hf-hub:, local-dir: or a file path).
    ``check(model_cfg, description)``, when given, vets the open_clip config that hf-hub / local-dir weights
    come with before the weights are fetched (raise to refuse)."""
    import open_clip

    if pretrained.startswith("hf-hub:"):
        return _hf_hub_source(pretrained, check)
    if pretrained.startswith("local-dir:"):
        return _local_dir_source(pretrained, check)
    if os.path.isfile(pretrained):
        return WeightSource(pretrained, pretrained)
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        raise CheckpointError(
            f"--pretrained {pretrained!r} is neither a file nor an open_clip tag for {arch} "
            f"(tags: {', '.join(tags) or 'none'}; or hf-hub:ORG/NAME, local-dir:FOLDER)"
        )
    return _tag_source(arch, pretrained)
