"""Grouped-query causal attention, one function over four implementations (`Qwen3Config.attention`).

Shapes as in `qwen3.py`: B batch, T queries, S keys, N query heads, K kv heads, G = N / K, H head dim.
Query t sits at key slot `query_start + t` and sees key s iff `s <= query_start + t` and `key_mask_BxS[:, s]`.
`query_start` is the Python int 0 for self-attention (no cache, or a prefill into an empty cache) and a traced
scalar with a cache.

- `dense`: the reference; builds the fp32 [B, K, G, T, S] scores.
- `blockwise`: pure JAX, every backend. Queries in blocks of `BLOCK_QUERIES`, each block's full-row softmax under
  `jax.checkpoint` inside a scan: one block's [B, N, block, S] scores exist at a time, forward and backward, so
  memory is linear in the key length. Same math as dense, so it matches it to float rounding.
- `splash`: the Pallas TPU kernel (`jax.experimental.pallas.ops.tpu.splash_attention`), GQA-native, with a causal
  mask and segment ids for padding (real tokens 1, padding 0); placed with `shard_map` over the batch and head axes
  of the mesh. Off TPU it runs in the kernel's interpret mode (slow; for tests).
- `cudnn`: `jax.nn.dot_product_attention(implementation="cudnn")`. Each row's real tokens are gathered to its
  front (order kept), so any padding layout becomes causal attention over a prefix of known length, with no
  [T, S] mask.
Splash and cuDNN need self-attention; with a cache (traced `query_start`) they, and `auto`, use blockwise.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from atommem_jax import sharding as sharding_lib

BLOCK_QUERIES = 512
# `auto` on CPU keeps rows up to this many queries on the dense path (the embedded default's rows are shorter).
AUTO_DENSE_MAX_QUERIES = 1024
_SPLASH_BLOCK = 512
_SPLASH_MIN_BLOCK = 128


def resolve(name: str, *, queries: int, self_attention: bool, platform: str | None = None, dtype=None) -> str:
  """The implementation `name` runs as for this call: `auto` picked by platform, and the fallbacks above."""
  if queries == 1:
    return "dense"  # single-token decode: a fused multiply-reduce is the fastest there is
  platform = platform or current_platform()
  if name == "auto":
    if platform == "tpu":
      name = "splash"
    elif platform == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
      name = "cudnn"
    else:
      name = "blockwise" if queries > AUTO_DENSE_MAX_QUERIES else "dense"
  if name in ("splash", "cudnn") and not self_attention:
    return "blockwise"
  return name


def current_platform() -> str:
  """The platform the traced program is for: the mesh's devices when a mesh is set (an ahead-of-time compile for
  TPU from a CPU host sets one), else the default backend."""
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty and mesh.abstract_device is not None:
    return mesh.abstract_device.platform
  return jax.default_backend()


def visible_mask(key_mask_BxS: jax.Array, query_start, queries: int) -> jax.Array:
  """`visible_BxTxS` for the dense path (the [T, S] structure the other paths never build)."""
  keys = key_mask_BxS.shape[1]
  if isinstance(query_start, int) and query_start == 0 and queries == keys:
    causal_TxS = jnp.tril(jnp.ones((queries, queries), jnp.bool_))
  else:
    causal_TxS = jnp.arange(keys)[None, :] <= (query_start + jnp.arange(queries))[:, None]
  return causal_TxS[None] & key_mask_BxS[:, None, :]


def attention(q_BxTxNxH: jax.Array, k_BxSxKxH: jax.Array, v_BxSxKxH: jax.Array, key_mask_BxS: jax.Array,
              query_start, *, implementation: str, rules: sharding_lib.ShardingRules,
              visible_BxTxS: jax.Array | None = None) -> jax.Array:
  """`out_BxTxNxH`. `implementation` is already resolved (`resolve`); dense may be given `visible_BxTxS` built
  once outside the layer scan."""
  t = q_BxTxNxH.shape[1]
  if implementation == "dense":
    if visible_BxTxS is None:
      visible_BxTxS = visible_mask(key_mask_BxS, query_start, t)
    out = dense(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, visible_BxTxS)
  elif implementation == "blockwise":
    out = blockwise(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, key_mask_BxS, query_start)
  elif implementation == "splash":
    out = splash(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, key_mask_BxS, rules)
  elif implementation == "cudnn":
    out = cudnn(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, key_mask_BxS)
  else:
    raise ValueError(f"unknown attention implementation {implementation!r}")
  return sharding_lib.constrain(out, ("batch", "length", "act_heads", None), rules)


def dense(q_BxTxNxH: jax.Array, k_BxSxKxH: jax.Array, v_BxSxKxH: jax.Array, visible_BxTxS: jax.Array) -> jax.Array:
  b, t, n, h = q_BxTxNxH.shape
  k = k_BxSxKxH.shape[2]
  q_BxTxKxGxH = q_BxTxNxH.reshape(b, t, k, n // k, h)
  if t == 1:
    # Single-token decode is memory-bound: a fused multiply-reduce reads the cache once in its stored layout,
    # where a batched matmul first transposes every layer's keys and values to put (b, k) in front (about 30%
    # faster per decode step on CPU; not yet measured on an accelerator).
    scores_BxKxGxTxS = jnp.sum(q_BxTxKxGxH[:, 0, :, :, None, None, :].astype(jnp.float32)
                               * k_BxSxKxH.transpose(0, 2, 1, 3)[:, :, None, None].astype(jnp.float32),
                               axis=-1) * (h ** -0.5)
  else:
    scores_BxKxGxTxS = jnp.einsum("btkgh,bskh->bkgts", q_BxTxKxGxH, k_BxSxKxH,
                                  preferred_element_type=jnp.float32) * (h ** -0.5)
  # A finite fill keeps fully masked rows (queries on left padding) free of NaNs; their output is never used.
  scores_BxKxGxTxS = jnp.where(visible_BxTxS[:, None, None], scores_BxKxGxTxS, jnp.finfo(jnp.float32).min)
  probs_BxKxGxTxS = jax.nn.softmax(scores_BxKxGxTxS, axis=-1)
  if t == 1:
    out_BxTxKxGxH = jnp.sum(probs_BxKxGxTxS[:, :, :, 0, :, None]
                            * v_BxSxKxH.transpose(0, 2, 1, 3)[:, :, None].astype(jnp.float32),
                            axis=-2)[:, None].astype(v_BxSxKxH.dtype)
  else:
    out_BxTxKxGxH = jnp.einsum("bkgts,bskh->btkgh", probs_BxKxGxTxS.astype(v_BxSxKxH.dtype), v_BxSxKxH)
  return out_BxTxKxGxH.reshape(b, t, n, h)


def blockwise(q_BxTxNxH: jax.Array, k_BxSxKxH: jax.Array, v_BxSxKxH: jax.Array, key_mask_BxS: jax.Array,
              query_start, block: int | None = None) -> jax.Array:
  b, t, n, h = q_BxTxNxH.shape
  s = k_BxSxKxH.shape[1]
  block = min(block or BLOCK_QUERIES, t)
  blocks = -(-t // block)
  pad = blocks * block - t
  q_BxTpxNxH = jnp.pad(q_BxTxNxH, ((0, 0), (0, pad), (0, 0), (0, 0)))
  q_CxBxQxNxH = q_BxTpxNxH.reshape(b, blocks, block, n, h).transpose(1, 0, 2, 3, 4)
  slot_S = jnp.arange(s)

  @functools.partial(jax.checkpoint, prevent_cse=False)
  def one_block(q_BxQxNxH, first_slot):
    # Padded queries (past t) see every real key; their rows are finite and sliced away.
    causal_QxS = slot_S[None, :] <= (first_slot + jnp.arange(block))[:, None]
    visible_BxQxS = causal_QxS[None] & key_mask_BxS[:, None, :]
    return dense(q_BxQxNxH, k_BxSxKxH, v_BxSxKxH, visible_BxQxS)

  def body(_, inputs):
    q_BxQxNxH, index = inputs
    return None, one_block(q_BxQxNxH, query_start + index * block)

  _, out_CxBxQxNxH = jax.lax.scan(body, None, (q_CxBxQxNxH, jnp.arange(blocks)))
  return out_CxBxQxNxH.transpose(1, 0, 2, 3, 4).reshape(b, blocks * block, n, h)[:, :t]


def splash(q_BxTxNxH: jax.Array, k_BxTxKxH: jax.Array, v_BxTxKxH: jax.Array, mask_BxT: jax.Array,
           rules: sharding_lib.ShardingRules, *, interpret: bool | None = None) -> jax.Array:
  """Causal self-attention with the splash kernel; padding rows at the end keep the kernel's tile shapes."""
  from jax.experimental.pallas.ops.tpu import splash_attention as splash_lib

  b, t, n, h = q_BxTxNxH.shape
  if interpret is None:
    interpret = current_platform() != "tpu"
  block = _SPLASH_BLOCK if t >= _SPLASH_BLOCK else _SPLASH_MIN_BLOCK
  length = -(-t // block) * block
  pad = ((0, 0), (0, length - t), (0, 0), (0, 0))
  # The kernel does not scale the scores; the padding at the end is segment 0, after every real token.
  q_BxNxLxH = jnp.pad(q_BxTxNxH * jnp.asarray(h ** -0.5, q_BxTxNxH.dtype), pad).transpose(0, 2, 1, 3)
  k_BxKxLxH = jnp.pad(k_BxTxKxH, pad).transpose(0, 2, 1, 3)
  v_BxKxLxH = jnp.pad(v_BxTxKxH, pad).transpose(0, 2, 1, 3)
  segments_BxL = jnp.pad(mask_BxT.astype(jnp.int32), ((0, 0), (0, length - t)))
  sizes = dict(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block, block_kv_dkv=block,
               block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)

  def local(q_BxNxLxH, k_BxKxLxH, v_BxKxLxH, segments_BxL):
    heads = q_BxNxLxH.shape[1]
    mask = splash_lib.MultiHeadMask([splash_lib.CausalMask((length, length))] * heads)
    kernel = splash_lib.make_splash_mha(mask, block_sizes=splash_lib.BlockSizes(**sizes), head_shards=1,
                                        q_seq_shards=1, interpret=interpret)
    one_row = lambda q, k, v, seg: kernel(q, k, v, segment_ids=splash_lib.SegmentIds(q=seg, kv=seg))
    return jax.vmap(one_row)(q_BxNxLxH, k_BxKxLxH, v_BxKxLxH, segments_BxL)

  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty:
    heads = rules.spec(("batch", "act_heads", None, None))
    kv_heads = rules.spec(("batch", "act_kv_heads", None, None))
    local = jax.shard_map(local, in_specs=(heads, kv_heads, kv_heads, rules.spec(("batch", None))),
                          out_specs=heads, check_vma=False)
  out_BxNxLxH = local(q_BxNxLxH, k_BxKxLxH, v_BxKxLxH, segments_BxL)
  return out_BxNxLxH.transpose(0, 2, 1, 3)[:, :t]


def cudnn(q_BxTxNxH: jax.Array, k_BxTxKxH: jax.Array, v_BxTxKxH: jax.Array, mask_BxT: jax.Array, *,
          implementation: str = "cudnn") -> jax.Array:
  """Causal self-attention through `jax.nn.dot_product_attention` (`implementation="xla"` runs the same wrapper on
  any backend, for tests)."""
  # Real tokens first, in order: causal order among them is unchanged and padding becomes a length.
  order_BxT = jnp.argsort(~mask_BxT, axis=1, stable=True)
  lengths_B = mask_BxT.sum(axis=1).astype(jnp.int32)
  gather = lambda x: jnp.take_along_axis(x, order_BxT[:, :, None, None], axis=1)
  out_BxTxNxH = jax.nn.dot_product_attention(gather(q_BxTxNxH), gather(k_BxTxKxH), gather(v_BxTxKxH),
                                             is_causal=True, query_seq_lengths=lengths_B,
                                             key_value_seq_lengths=lengths_B, implementation=implementation)
  out_BxTxNxH = jnp.take_along_axis(out_BxTxNxH, jnp.argsort(order_BxT, axis=1)[:, :, None, None], axis=1)
  return jnp.where(mask_BxT[:, :, None, None], out_BxTxNxH, 0).astype(q_BxTxNxH.dtype)

