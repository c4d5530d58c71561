"""The fixed-shape KV cache pytree and left-padding positions.

Shapes: L layers, B batch, S cache slots, K kv heads, H head dim, T new tokens.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh, NamedSharding

from atommem_jax import sharding as sharding_lib
from atommem_jax.model.config import Qwen3Config

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# Logical axes of each cache field, for explicit in/out shardings of jitted prefill/decode steps.
_KV_AXES = ("layers", "batch", "cache_length", "act_kv_heads", "head_dim")
_MASK_AXES = ("batch", "cache_length")
_DECODE_K_AXES = ("batch", "act_kv_heads", "head_dim", "cache_length")
_DECODE_V_AXES = ("batch", "act_kv_heads", "cache_length", "head_dim")


@struct.dataclass
class KVCache:
  """Keys/values of every layer for S slots; slot s holds a real token iff `mask_BxS[:, s]`.

  `index` is the next slot to write, shared by the batch (prompts are left-padded to one length).
  """

  k_LxBxSxKxH: jax.Array
  v_LxBxSxKxH: jax.Array
  mask_BxS: jax.Array
  index: jax.Array

  @classmethod
  def init(cls, config: Qwen3Config, batch: int, max_len: int, dtype: str | jnp.dtype | None = None) -> "KVCache":
    dtype = _DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    dtype = dtype or _DTYPES[config.dtype]
    shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_dim)
    return cls(
        k_LxBxSxKxH=jnp.zeros(shape, dtype),
        v_LxBxSxKxH=jnp.zeros(shape, dtype),
        mask_BxS=jnp.zeros((batch, max_len), jnp.bool_),
        index=jnp.zeros((), jnp.int32),
    )

  @property
  def max_len(self) -> int:
    return self.mask_BxS.shape[1]

  @staticmethod
  def shardings(mesh: Mesh, rules: sharding_lib.ShardingRules = sharding_lib.DEFAULT_RULES) -> "KVCache":
    """A KVCache-shaped tree of `NamedSharding`s from the logical-axis table."""
    kv = rules.named(mesh, _KV_AXES)
    return KVCache(k_LxBxSxKxH=kv, v_LxBxSxKxH=kv, mask_BxS=rules.named(mesh, _MASK_AXES),
                   index=NamedSharding(mesh, jax.sharding.PartitionSpec()))


@struct.dataclass
class DecodeKV:
  """The cache in the layout of the single-token decode loop: one key and one value array per layer.

  Keys are stored transposed, `k_BxKxHxS`, so the query-key product reduces over H with S as the contiguous
  (vectorised) axis; with keys as `BxSxKxH` that reduction runs along the innermost axis and was the slowest op of a
  CPU decode step (about 190 us of a 1.2 ms step at S=288). Values stay `v_BxKxSxH` (the probability-weighted sum
  reduces over S with H contiguous). Separate per-layer arrays let each layer's single-slot write happen in place
  in the decode loop's carry, with no slicing of a stacked cache. `mask_BxS` and `index` are as in `KVCache`;
  S may be smaller than the `KVCache` it came from (`grow` adds slots).
  """

  k_layers_BxKxHxS: tuple[jax.Array, ...]
  v_layers_BxKxSxH: tuple[jax.Array, ...]
  mask_BxS: jax.Array
  index: jax.Array

  @classmethod
  def from_cache(cls, cache: KVCache, slots: int) -> "DecodeKV":
    """The first `slots` slots of `cache` (which must hold every written slot) in the decode layout."""
    k_LxBxKxHxS = cache.k_LxBxSxKxH[:, :, :slots].transpose(0, 1, 3, 4, 2)
    v_LxBxKxSxH = cache.v_LxBxSxKxH[:, :, :slots].transpose(0, 1, 3, 2, 4)
    layers = range(k_LxBxKxHxS.shape[0])
    return cls(k_layers_BxKxHxS=tuple(k_LxBxKxHxS[l] for l in layers),
               v_layers_BxKxSxH=tuple(v_LxBxKxSxH[l] for l in layers),
               mask_BxS=cache.mask_BxS[:, :slots], index=cache.index)

  def to_cache(self, max_len: int) -> KVCache:
    """Back to the stacked `KVCache` layout with `max_len` slots (the extra slots are empty)."""
    pad = max_len - self.slots
    k_LxBxSxKxH = jnp.stack(self.k_layers_BxKxHxS).transpose(0, 1, 4, 2, 3)
    v_LxBxSxKxH = jnp.stack(self.v_layers_BxKxSxH).transpose(0, 1, 3, 2, 4)
    return KVCache(k_LxBxSxKxH=jnp.pad(k_LxBxSxKxH, ((0, 0), (0, 0), (0, pad), (0, 0), (0, 0))),
                   v_LxBxSxKxH=jnp.pad(v_LxBxSxKxH, ((0, 0), (0, 0), (0, pad), (0, 0), (0, 0))),
                   mask_BxS=jnp.pad(self.mask_BxS, ((0, 0), (0, pad))), index=self.index)

  def grow(self, slots: int) -> "DecodeKV":
    """The same cache with `slots` slots (empty ones appended)."""
    pad = slots - self.slots
    if pad == 0:
      return self
    return DecodeKV(k_layers_BxKxHxS=tuple(jnp.pad(k, ((0, 0), (0, 0), (0, 0), (0, pad)))
                                           for k in self.k_layers_BxKxHxS),
                    v_layers_BxKxSxH=tuple(jnp.pad(v, ((0, 0), (0, 0), (0, pad), (0, 0)))
                                           for v in self.v_layers_BxKxSxH),
                    mask_BxS=jnp.pad(self.mask_BxS, ((0, 0), (0, pad))), index=self.index)

  @property
  def slots(self) -> int:
    return self.mask_BxS.shape[1]

  def constrain(self, rules: sharding_lib.ShardingRules = sharding_lib.DEFAULT_RULES) -> "DecodeKV":
    """Pins the per-layer arrays to the cache's logical axes (a no-op without a mesh)."""
    return self.replace(
        k_layers_BxKxHxS=tuple(sharding_lib.constrain(k, _DECODE_K_AXES, rules) for k in self.k_layers_BxKxHxS),
        v_layers_BxKxSxH=tuple(sharding_lib.constrain(v, _DECODE_V_AXES, rules) for v in self.v_layers_BxKxSxH),
        mask_BxS=sharding_lib.constrain(self.mask_BxS, _MASK_AXES, rules))


def positions_from_mask(mask_BxT: jax.Array) -> jax.Array:
  """Positions of left-padded rows: the first real token is 0; pads before it get 0 too."""
  return jnp.maximum(jnp.cumsum(mask_BxT.astype(jnp.int32), axis=-1) - 1, 0)
