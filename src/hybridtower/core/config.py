"""Dataclass configs <-> plain dicts, with unknown keys rejected and ``a.b=value`` overrides.

Configs everywhere in the package are (nested) dataclasses. This module turns them into JSON/YAML
friendly dicts and back, and applies command-line overrides such as ``--set generator.use_bos=false``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    """A dataclass (nested) as a plain dict of JSON types."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where) if len(args) == 1 else value
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        seq = [_convert(inner, v, where) for v in value]
        return tuple(seq) if origin is tuple else seq
    if tp is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{where}: expected a boolean, got {value!r}")
        return bool(value)
    if tp in (int, float):
        try:
            return tp(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from exc
    if tp is str:
        return str(value)
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys are an error naming the key and its place."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` -> (["a", "b"], 3). The value is parsed as YAML (numbers, booleans, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (for example generator.use_bos=false)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(cfg: T, overrides: list[str] | None) -> T:
    """Return a copy of ``cfg`` with every ``key=value`` override applied (validated through from_dict)."""
    if not overrides:
        return cfg
    data = to_dict(cfg)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a config section")
            node = node[part]
        if path[-1] not in node:
            raise ConfigError(f"override {text!r}: unknown key {'.'.join(path)!r}; valid here: {sorted(node)}")
        node[path[-1]] = value
    return from_dict(type(cfg), data)


# The shipped recipes (the repository's configs/ folder, packaged as hybridtower/recipes)
RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the package (``msrvtt-1ka-pig-vit-b-32``, ...)."""
    if not RECIPES_DIR.is_dir():
        return []
    return sorted(p.stem for p in RECIPES_DIR.iterdir() if p.suffix in CONFIG_SUFFIXES and p.is_file())


def resolve_config_file(path: str | Path) -> Path:
    """``path`` when it is a file; otherwise, for a bare name (``msrvtt-1ka-pig-vit-b-32``, with or without
    ``.yaml``) or a ``configs/NAME.yaml`` path from the repository's docs, the shipped config of that name.
    A miss is a ConfigError that lists the closest shipped names and all of them."""
    path = Path(path)
    if path.is_file():
        return path
    if path.parent in (Path("."), Path("configs")):
        stem = path.name[: -len(path.suffix)] if path.suffix in CONFIG_SUFFIXES else path.name
        for suffix in ((path.suffix,) if path.suffix in CONFIG_SUFFIXES else CONFIG_SUFFIXES):
            shipped = RECIPES_DIR / f"{stem}{suffix}"
            if shipped.is_file():
                return shipped
        names = shipped_configs()
        close = difflib.get_close_matches(stem, names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        listing = f" Shipped configs: {', '.join(names)}" if names else ""
        raise ConfigError(f"config {str(path)!r} is neither a file nor a shipped config{hint}{listing}")
    raise ConfigError(f"config file not found: {path}")


def load_file(path: str | Path) -> dict:
    """Read a JSON or YAML config file into a dict: a path, or the name of a shipped config
    (``msrvtt-1ka-pig-vit-b-32``; see ``resolve_config_file``)."""
    path = resolve_config_file(path)
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level")
    return data


def _drop_neutral(data: dict, neutral: dict[str, Any]) -> dict:
    """``data`` without the dotted keys of ``neutral`` whose value equals the neutral one."""
    data = copy.deepcopy(data)
    for dotted, value in neutral.items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node and node[leaf] == value:
            del node[leaf]
    return data


def config_hash(cfg: Any) -> str:
    """A short stable hash of a config (used to tie indexes and checkpoints to a model).

    A dataclass may list, in a ``HASH_NEUTRAL`` class attribute (dotted key -> value), fields added after
    indexes were first built together with the value that reproduces the old behaviour: such a field is left
    out of the hash while it holds that value, so adding an option does not orphan every existing index.
    """
    if dataclasses.is_dataclass(cfg):
        data = to_dict(cfg)
        neutral = getattr(type(cfg), "HASH_NEUTRAL", None)
        if neutral:
            data = _drop_neutral(data, neutral)
    else:
        data = cfg
    blob = json.dumps(data, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
