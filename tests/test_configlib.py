import dataclasses
from typing import Literal

import ml_collections
import pytest

from atommem_jax import configlib


@dataclasses.dataclass(frozen=True)
class Inner:
  k: int = 6
  policy: Literal["reject", "evict_oldest"] = "reject"


@dataclasses.dataclass(frozen=True)
class Outer:
  lr: float = 1e-6
  name: str = "x"
  buckets: tuple[int, ...] = (64, 128)
  inner: Inner = dataclasses.field(default_factory=Inner)
  path: str | None = None


def test_builds_nested_frozen_dataclass_from_configdict():
  cfg = ml_collections.ConfigDict({"lr": 1, "buckets": [8, 16], "inner": {"k": 3}})
  out = configlib.from_dict(Outer, cfg)
  assert out == Outer(lr=1.0, buckets=(8, 16), inner=Inner(k=3))
  assert isinstance(out.lr, float)
  with pytest.raises(dataclasses.FrozenInstanceError):
    out.lr = 2.0  # type: ignore[misc]


def test_unknown_key_is_named():
  with pytest.raises(configlib.ConfigError, match=r"Outer.inner: unknown config key\(s\) \['kk'\]"):
    configlib.from_dict(Outer, {"inner": {"kk": 3}})


@pytest.mark.parametrize("bad, where", [
    ({"lr": "fast"}, "Outer.lr"),
    ({"inner": {"policy": "evict_newest"}}, "Outer.inner.policy"),
    ({"inner": {"k": True}}, "Outer.inner.k"),
    ({"buckets": 5}, "Outer.buckets"),
])
def test_wrong_types_are_named(bad, where):
  with pytest.raises(configlib.ConfigError, match=where):
    configlib.from_dict(Outer, bad)


def test_optional_and_round_trip():
  out = configlib.from_dict(Outer, {"path": "/data"})
  assert out.path == "/data"
  assert configlib.from_dict(Outer, configlib.to_dict(out)) == out
