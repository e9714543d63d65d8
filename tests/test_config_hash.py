"""config_hash: fields listed in HASH_NEUTRAL drop out of the hash while they hold their neutral value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from hybridtower.core.config import config_hash, to_dict


@dataclass
class Inner:
    a: int = 1


@dataclass
class Old:
    x: int = 3
    inner: Inner = field(default_factory=Inner)


@dataclass
class New:
    HASH_NEUTRAL: ClassVar[dict] = {"y": 0, "inner.b": True}
    x: int = 3
    y: int = 0
    inner: "NewInner" = field(default_factory=lambda: NewInner())


@dataclass
class NewInner:
    a: int = 1
    b: bool = True


def test_new_fields_at_their_neutral_value_keep_the_old_hash():
    assert config_hash(New()) == config_hash(Old())
    assert config_hash(New()) == config_hash(to_dict(Old()))


def test_new_fields_away_from_neutral_change_the_hash():
    base = config_hash(New())
    assert config_hash(New(y=1)) != base
    assert config_hash(New(inner=NewInner(b=False))) != base
    assert config_hash(New(x=4)) != base


def test_plain_dicts_hash_as_before():
    assert config_hash({"y": 0}) != config_hash({})
