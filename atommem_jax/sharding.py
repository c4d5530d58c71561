"""The one table that maps logical axes to mesh axes, and the mesh built from config.

Every parameter and every activation constraint names logical axes ("batch", "embed", ...); this file alone decides
which mesh axis ("data", "fsdp", "tensor") each one lands on. A spec that puts two logical axes of one array on the
same mesh axis is refused, so a typo in the table cannot silently replicate or double-shard a tensor.

Meshes use `AxisType.Auto` (GSPMD propagation): jitted steps pass explicit in/out shardings built from this table and
activations are pinned with `constrain`.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

MeshAxes = str | tuple[str, ...] | None

# Parameters shard their `embed` dimension over fsdp; activations keep `act_embed` whole and shard `batch` over
# data x fsdp instead (the two would otherwise collide on fsdp inside one spec).
LOGICAL_AXIS_RULES: Mapping[str, MeshAxes] = {
    # activations
    "batch": ("data", "fsdp"),
    "length": None,
    "act_embed": None,
    "act_heads": "tensor",
    "act_kv_heads": "tensor",
    "act_mlp": "tensor",
    "act_vocab": "tensor",
    "cache_length": None,
    # parameters
    "layers": None,
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "mlp": "tensor",
    "vocab": "tensor",
    "norm": None,
    # memory state (per trajectory)
    "memory_slots": None,
    "entry_tokens": None,
    "embed_dim": None,
}


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  data: int = 1
  fsdp: int = 1
  tensor: int = 1

  @property
  def shape(self) -> tuple[int, int, int]:
    return (self.data, self.fsdp, self.tensor)


@dataclasses.dataclass(frozen=True)
class ShardingRules:
  """Logical axis name -> mesh axis (or axes, or None for replicated)."""

  rules: Mapping[str, MeshAxes] = dataclasses.field(default_factory=lambda: dict(LOGICAL_AXIS_RULES))

  def spec(self, axes: Sequence[str | None]) -> PartitionSpec:
    used: dict[str, str] = {}
    out = []
    for logical in axes:
      if logical is None:
        out.append(None)
        continue
      if logical not in self.rules:
        raise KeyError(f"logical axis {logical!r} is not in the sharding table; known: {sorted(self.rules)}")
      mesh_axes = self.rules[logical]
      for mesh_axis in (mesh_axes,) if isinstance(mesh_axes, str) else (mesh_axes or ()):
        if mesh_axis in used:
          raise ValueError(
              f"logical axes {used[mesh_axis]!r} and {logical!r} both map to mesh axis {mesh_axis!r} in spec {tuple(axes)}")
        used[mesh_axis] = logical
      out.append(mesh_axes)
    return PartitionSpec(*out)

  def named(self, mesh: Mesh, axes: Sequence[str | None]) -> NamedSharding:
    return NamedSharding(mesh, self.spec(axes))


DEFAULT_RULES = ShardingRules()


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh of Auto axes over `devices` (all devices by default)."""
  devices = list(jax.devices() if devices is None else devices)
  need = int(np.prod(config.shape))
  if need != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, config.shape))} needs {need} devices, {len(devices)} are available")
  return jax.make_mesh(config.shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def constrain(x: jax.Array, axes: Sequence[str | None], rules: ShardingRules = DEFAULT_RULES) -> jax.Array:
  """Pins an activation's sharding under the current mesh (`jax.set_mesh`); a no-op without one."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, rules.spec(axes))
