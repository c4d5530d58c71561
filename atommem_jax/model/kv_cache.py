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


def positions_from_mask(mask_BxT: jax.Array) -> jax.Array:
  """Positions of left-padded rows: the first real token is 0; pads before it get 0 too."""
  return jnp.maximum(jnp.cumsum(mask_BxT.astype(jnp.int32), axis=-1) - 1, 0)
