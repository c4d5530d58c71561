"""The Qwen3 decoder as a Flax NNX module whose forward pass is a scan of one pure layer function.

Tensor names carry their shape: B batch, T new tokens, S key slots (T without a cache, the cache length with one),
D model width, N query heads, K kv heads, G = N / K query heads per kv head, H head dim, F MLP width, V vocab,
L layers. Parameters are stacked on a leading `layers` axis so the layer stack compiles once, whatever L is.

Numerics follow transformers' Qwen3: RMSNorm in fp32 (scaled by its weight in the activation dtype), q/k RMSNorm per
head before rotate-half RoPE, grouped-query attention with an fp32 softmax (`attention.py`: dense, blockwise, splash
or cuDNN, by `config.attention`), SwiGLU MLP, tied or untied LM head.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from atommem_jax import sharding as sharding_lib
from atommem_jax.model import attention as attention_lib
from atommem_jax.model.config import Qwen3Config
from atommem_jax.model.kv_cache import DecodeKV, KVCache

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# Per-layer parameter -> logical axes (without the leading "layers" axis). The checkpoint code reads this table.
LAYER_PARAM_AXES: dict[str, tuple[str, ...]] = {
    "attn_norm": ("norm",),
    "q_proj": ("embed", "heads", "head_dim"),
    "k_proj": ("embed", "kv_heads", "head_dim"),
    "v_proj": ("embed", "kv_heads", "head_dim"),
    "q_norm": ("head_dim",),
    "k_norm": ("head_dim",),
    "o_proj": ("heads", "head_dim", "embed"),
    "mlp_norm": ("norm",),
    "gate_proj": ("embed", "mlp"),
    "up_proj": ("embed", "mlp"),
    "down_proj": ("mlp", "embed"),
}
_NORMS = ("attn_norm", "q_norm", "k_norm", "mlp_norm")


def layer_param_shapes(config: Qwen3Config) -> dict[str, tuple[int, ...]]:
  d, n, k, h, f = (config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim,
                   config.intermediate_size)
  return {
      "attn_norm": (d,), "q_proj": (d, n, h), "k_proj": (d, k, h), "v_proj": (d, k, h), "q_norm": (h,),
      "k_norm": (h,), "o_proj": (n, h, d), "mlp_norm": (d,), "gate_proj": (d, f), "up_proj": (d, f),
      "down_proj": (f, d),
  }


def _param(value: jax.Array, axes: tuple[str, ...]) -> nnx.Param:
  # The names are logical; `partitioning.param_shardings` maps them to mesh axes through the one table, so NNX must
  # not try to shard eagerly with them as if they were mesh axes.
  return nnx.Param(value, out_sharding=axes, eager_sharding=False)


class DecoderLayers(nnx.Module):
  """All L decoder layers, each parameter stacked as (L, ...)."""

  def __init__(self, config: Qwen3Config, *, rngs: nnx.Rngs):
    param_dtype = _DTYPES[config.param_dtype]
    init = nnx.initializers.normal(stddev=config.initializer_range)
    for name, shape in layer_param_shapes(config).items():
      full_shape = (config.num_layers, *shape)
      value = (jnp.ones(full_shape, param_dtype) if name in _NORMS else init(rngs.params(), full_shape, param_dtype))
      setattr(self, name, _param(value, ("layers", *LAYER_PARAM_AXES[name])))

  def arrays(self) -> dict[str, jax.Array]:
    return {name: getattr(self, name)[...] for name in LAYER_PARAM_AXES}


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
  x_f32 = x.astype(jnp.float32)
  normed = x_f32 * jax.lax.rsqrt(jnp.mean(jnp.square(x_f32), axis=-1, keepdims=True) + eps)
  return weight.astype(x.dtype) * normed.astype(x.dtype)


def rope_sin_cos(positions_BxT: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles_BxTxHh = positions_BxT.astype(jnp.float32)[..., None] * inv_freq
  return jnp.sin(angles_BxTxHh), jnp.cos(angles_BxTxHh)


def apply_rope(x_BxTxNxH: jax.Array, sin_BxTxHh: jax.Array, cos_BxTxHh: jax.Array) -> jax.Array:
  x = x_BxTxNxH.astype(jnp.float32)
  half = x.shape[-1] // 2
  x1, x2 = x[..., :half], x[..., half:]
  sin, cos = sin_BxTxHh[:, :, None, :], cos_BxTxHh[:, :, None, :]
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x_BxTxNxH.dtype)


@dataclasses.dataclass(frozen=True)
class AttentionPlan:
  """What every layer's attention sees, decided once per forward: the resolved implementation, the key mask, the
  first query's slot (the int 0 for self-attention), and dense's [B, T, S] mask when dense runs."""

  implementation: str
  key_mask_BxS: jax.Array
  query_start: Any
  self_attention: bool
  visible_BxTxS: jax.Array | None = None


def decoder_layer(config: Qwen3Config, rules: sharding_lib.ShardingRules, p: dict[str, jax.Array],
                  x_BxTxD: jax.Array, sin_BxTxHh: jax.Array, cos_BxTxHh: jax.Array, plan: AttentionPlan,
                  kv: tuple[jax.Array, jax.Array, jax.Array] | None, index: jax.Array | None):
  """One pre-norm decoder layer.

  `kv` is None (no cache) or `(k_LxBxSxKxH, v_LxBxSxKxH, layer)`: the whole-stack cache, carried through the layer
  scan so that each layer writes only its T new slots in place (scanning over per-layer cache slices instead
  rewrites every layer's full cache each step, about twice the decode time), and this layer's index. With
  `plan.self_attention` the new tokens attend to each other only (a prefill into an empty cache).
  """
  dtype, eps = x_BxTxD.dtype, config.rms_norm_eps
  p = {name: w.astype(dtype) for name, w in p.items()}
  with jax.named_scope("attention"):
    h_BxTxD = rms_norm(x_BxTxD, p["attn_norm"], eps)
    q_BxTxNxH = jnp.einsum("btd,dnh->btnh", h_BxTxD, p["q_proj"])
    k_BxTxKxH = jnp.einsum("btd,dkh->btkh", h_BxTxD, p["k_proj"])
    v_BxTxKxH = jnp.einsum("btd,dkh->btkh", h_BxTxD, p["v_proj"])
    q_BxTxNxH = sharding_lib.constrain(q_BxTxNxH, ("batch", "length", "act_heads", None), rules)
    k_BxTxKxH = sharding_lib.constrain(k_BxTxKxH, ("batch", "length", "act_kv_heads", None), rules)
    v_BxTxKxH = sharding_lib.constrain(v_BxTxKxH, ("batch", "length", "act_kv_heads", None), rules)
    q_BxTxNxH = apply_rope(rms_norm(q_BxTxNxH, p["q_norm"], eps), sin_BxTxHh, cos_BxTxHh)
    k_BxTxKxH = apply_rope(rms_norm(k_BxTxKxH, p["k_norm"], eps), sin_BxTxHh, cos_BxTxHh)
    keys_BxSxKxH, values_BxSxKxH, new_kv = k_BxTxKxH, v_BxTxKxH, None
    if kv is not None:
      # Only the T new slots of this layer are written, in place in the whole-stack cache carried by the scan.
      cache_k, cache_v, layer = kv
      start = (layer, 0, index, 0, 0)
      cache_k = jax.lax.dynamic_update_slice(cache_k, k_BxTxKxH[None].astype(cache_k.dtype), start)
      cache_v = jax.lax.dynamic_update_slice(cache_v, v_BxTxKxH[None].astype(cache_v.dtype), start)
      new_kv = (cache_k, cache_v, layer + 1)
      if not plan.self_attention:
        keys_BxSxKxH = jax.lax.dynamic_index_in_dim(cache_k, layer, keepdims=False).astype(dtype)
        values_BxSxKxH = jax.lax.dynamic_index_in_dim(cache_v, layer, keepdims=False).astype(dtype)
    out_BxTxNxH = attention_lib.attention(q_BxTxNxH, keys_BxSxKxH, values_BxSxKxH, plan.key_mask_BxS,
                                          plan.query_start, implementation=plan.implementation, rules=rules,
                                          visible_BxTxS=plan.visible_BxTxS)
    x_BxTxD = x_BxTxD + jnp.einsum("btnh,nhd->btd", out_BxTxNxH, p["o_proj"])
    x_BxTxD = sharding_lib.constrain(x_BxTxD, ("batch", "length", "act_embed"), rules)
  with jax.named_scope("mlp"):
    h_BxTxD = rms_norm(x_BxTxD, p["mlp_norm"], eps)
    gate_BxTxF = jnp.einsum("btd,df->btf", h_BxTxD, p["gate_proj"])
    up_BxTxF = jnp.einsum("btd,df->btf", h_BxTxD, p["up_proj"])
    act_BxTxF = sharding_lib.constrain(jax.nn.silu(gate_BxTxF) * up_BxTxF, ("batch", "length", "act_mlp"), rules)
    x_BxTxD = x_BxTxD + jnp.einsum("btf,fd->btd", act_BxTxF, p["down_proj"])
    x_BxTxD = sharding_lib.constrain(x_BxTxD, ("batch", "length", "act_embed"), rules)
  return x_BxTxD, new_kv


def decode_attention(q_BxKxGxH: jax.Array, k_BxKxHxS: jax.Array, v_BxKxSxH: jax.Array,
                     visible_BxS: jax.Array) -> jax.Array:
  """Single-token grouped-query attention over a `DecodeKV` layer, in fp32: `out_BxKxGxH`.

  Both products are fused multiply-reduces that read the cache once in its stored layout, each reducing over a
  non-contiguous axis so the contiguous one vectorises (on CPU these beat batched matmuls, whose small per-(b, k)
  problems underuse the vector units).
  """
  h = q_BxKxGxH.shape[-1]
  if q_BxKxGxH.shape[2] == 1:
    # One query head per kv head: the same products without the unit axis, which XLA's CPU reduction handles badly
    # (29x slower at B 64, S 448: BUILD_NOTES "Decode").
    q_BxKxH = q_BxKxGxH[:, :, 0].astype(jnp.float32)
    scores_BxKxS = jnp.sum(q_BxKxH[..., None] * k_BxKxHxS.astype(jnp.float32), axis=2) * (h ** -0.5)
    scores_BxKxS = jnp.where(visible_BxS[:, None], scores_BxKxS, jnp.finfo(jnp.float32).min)
    probs_BxKxS = jax.nn.softmax(scores_BxKxS, axis=-1)
    return jnp.sum(probs_BxKxS[..., None] * v_BxKxSxH.astype(jnp.float32), axis=2)[:, :, None]
  scores_BxKxGxS = jnp.sum(q_BxKxGxH.astype(jnp.float32)[..., None] * k_BxKxHxS[:, :, None].astype(jnp.float32),
                           axis=3) * (h ** -0.5)
  scores_BxKxGxS = jnp.where(visible_BxS[:, None, None], scores_BxKxGxS, jnp.finfo(jnp.float32).min)
  probs_BxKxGxS = jax.nn.softmax(scores_BxKxGxS, axis=-1)
  return jnp.sum(probs_BxKxGxS[..., None] * v_BxKxSxH[:, :, None].astype(jnp.float32), axis=3)


def decode_layer(config: Qwen3Config, rules: sharding_lib.ShardingRules, p: dict[str, jax.Array], x_BxD: jax.Array,
                 sin_BxHh: jax.Array, cos_BxHh: jax.Array, visible_BxS: jax.Array, k_BxKxHxS: jax.Array,
                 v_BxKxSxH: jax.Array, index: jax.Array):
  """`decoder_layer` for one token per row, on `Qwen3.decode_weights` and one `DecodeKV` layer; the same math."""
  dtype, eps = x_BxD.dtype, config.rms_norm_eps
  b, g = x_BxD.shape[0], config.num_heads // config.num_kv_heads
  with jax.named_scope("attention"):
    h_BxD = rms_norm(x_BxD, p["attn_norm"], eps)
    qkv_BxKxCxH = jnp.einsum("bd,dkch->bkch", h_BxD, p["qkv_DxKxCxH"])
    qkv_BxKxCxH = sharding_lib.constrain(qkv_BxKxCxH, ("batch", "act_kv_heads", None, None), rules)
    q_BxKxGxH, k_BxKxH, v_BxKxH = qkv_BxKxCxH[:, :, :g], qkv_BxKxCxH[:, :, g], qkv_BxKxCxH[:, :, g + 1]
    sin_Bx1x1xHh, cos_Bx1x1xHh = sin_BxHh[:, None, None], cos_BxHh[:, None, None]
    q_BxKxGxH = _rotate(rms_norm(q_BxKxGxH, p["q_norm"], eps), sin_Bx1x1xHh, cos_Bx1x1xHh)
    k_BxKxH = _rotate(rms_norm(k_BxKxH, p["k_norm"], eps), sin_BxHh[:, None], cos_BxHh[:, None])
    k_BxKxHxS = jax.lax.dynamic_update_slice(k_BxKxHxS, k_BxKxH[..., None].astype(k_BxKxHxS.dtype), (0, 0, 0, index))
    v_BxKxSxH = jax.lax.dynamic_update_slice(v_BxKxSxH, v_BxKxH[:, :, None].astype(v_BxKxSxH.dtype), (0, 0, index, 0))
    out_BxKxGxH = decode_attention(q_BxKxGxH, k_BxKxHxS, v_BxKxSxH, visible_BxS).astype(dtype)
    x_BxD = x_BxD + out_BxKxGxH.reshape(b, -1) @ p["o_MxD"]
    x_BxD = sharding_lib.constrain(x_BxD, ("batch", "act_embed"), rules)
  with jax.named_scope("mlp"):
    h_BxD = rms_norm(x_BxD, p["mlp_norm"], eps)
    gate_up_Bx2xF = jnp.einsum("bd,dcf->bcf", h_BxD, p["gate_up_Dx2xF"])
    act_BxF = jax.nn.silu(gate_up_Bx2xF[:, 0]) * gate_up_Bx2xF[:, 1]
    act_BxF = sharding_lib.constrain(act_BxF, ("batch", "act_mlp"), rules)
    x_BxD = x_BxD + act_BxF @ p["down_proj"]
    x_BxD = sharding_lib.constrain(x_BxD, ("batch", "act_embed"), rules)
  return x_BxD, k_BxKxHxS, v_BxKxSxH


def _rotate(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
  """Rotate-half RoPE with sin/cos already broadcastable against x (fp32 math, as `apply_rope`)."""
  x_f32 = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  x1, x2 = x_f32[..., :half], x_f32[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def _check_cache_room(cache: KVCache, new_tokens: int) -> None:
  """Refuses writes past the last slot where it can: `dynamic_update_slice` would clamp them onto earlier slots."""
  if new_tokens > cache.max_len:
    raise ValueError(f"{new_tokens} new tokens do not fit a KV cache of {cache.max_len} slots")
  if not isinstance(cache.index, jax.core.Tracer) and int(cache.index) + new_tokens > cache.max_len:
    raise ValueError(f"KV cache overflow: writing {new_tokens} tokens at slot {int(cache.index)} of a "
                     f"{cache.max_len}-slot cache")


class Qwen3(nnx.Module):
  """`logits_BxTxV, cache = model(tokens_BxT, positions_BxT, mask_BxT, cache=None)`; logits are float32.

  Without a cache, token t attends to real tokens at t' <= t. With a cache, the T new tokens go to slots
  [cache.index, cache.index + T) and attend to every real slot at or before their own; the returned cache has
  `index + T`. Under jit the cache index is traced, so callers size the cache for every token they will write
  (outside jit an overflow is an error).
  """

  def __init__(self, config: Qwen3Config, *, rngs: nnx.Rngs,
               rules: sharding_lib.ShardingRules = sharding_lib.DEFAULT_RULES):
    self.config = config
    # Stored as sorted items: the graph definition must stay hashable for `jax.jit(static_argnums=...)`.
    self.rule_items = tuple(sorted(rules.rules.items()))
    param_dtype = _DTYPES[config.param_dtype]
    init = nnx.initializers.normal(stddev=config.initializer_range)
    self.embed = _param(init(rngs.params(), (config.vocab_size, config.hidden_size), param_dtype),
                        ("vocab", "embed"))
    self.layers = DecoderLayers(config, rngs=rngs)
    self.final_norm = _param(jnp.ones((config.hidden_size,), param_dtype), ("norm",))
    if not config.tie_word_embeddings:
      self.lm_head = _param(init(rngs.params(), (config.vocab_size, config.hidden_size), param_dtype),
                            ("vocab", "embed"))

  @property
  def rules(self) -> sharding_lib.ShardingRules:
    return sharding_lib.ShardingRules(dict(self.rule_items))

  def __call__(self, tokens_BxT: jax.Array, positions_BxT: jax.Array, mask_BxT: jax.Array,
               cache: KVCache | None = None) -> tuple[jax.Array, KVCache | None]:
    h_BxTxD, cache = self._backbone(tokens_BxT, positions_BxT, mask_BxT, cache)
    return self.logits(h_BxTxD), cache

  def hidden_states(self, tokens_BxT: jax.Array, positions_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """Final-RMSNormed hidden states `h_BxTxD` in the activation dtype (no cache)."""
    return self._backbone(tokens_BxT, positions_BxT, mask_BxT, None)[0]

  def prefill(self, tokens_BxT: jax.Array, positions_BxT: jax.Array, mask_BxT: jax.Array,
              cache: KVCache) -> KVCache:
    """Writes the T tokens' keys and values into `cache` at its index, the tokens attending to each other only:
    for an empty cache the same as `__call__` with it, and every attention implementation applies (no key beyond
    the new tokens exists)."""
    return self._backbone(tokens_BxT, positions_BxT, mask_BxT, cache, self_attention=True)[1]

  def logits(self, h_BxTxD: jax.Array) -> jax.Array:
    """The LM head alone, so a loss can apply it to chunks of hidden states; float32 logits."""
    head_VxD = (self.embed if self.config.tie_word_embeddings else self.lm_head)[...]
    with jax.named_scope("lm_head"):
      logits_BxTxV = jnp.einsum("btd,vd->btv", h_BxTxD, head_VxD.astype(h_BxTxD.dtype),
                                preferred_element_type=jnp.float32)
      return sharding_lib.constrain(logits_BxTxV, ("batch", "length", "act_vocab"), self.rules)

  def decode_weights(self) -> dict:
    """The parameters rearranged for `decode_step`, built once per generation outside its loop.

    Per layer (a list, so the decode step unrolls the layers and indexes no stacked parameter: on CPU a scan over
    stacked weights copies every layer's slice each step): q/k/v fused into one `qkv_DxKxCxH` with C = G + 2 (the G
    query heads of each kv head, then its key and value, so tensor sharding over kv heads still splits it evenly),
    gate/up fused into `gate_up_Dx2xF`, `o_MxD` with M = N * H, and the LM head as `head_DxV`. Fewer, larger
    matmuls per step; costs one copy of the weights per generation.
    """
    config, dtype = self.config, _DTYPES[self.config.dtype]
    d, k, g, h = config.hidden_size, config.num_kv_heads, config.num_heads // config.num_kv_heads, config.head_dim
    stacked = {name: w.astype(dtype) for name, w in self.layers.arrays().items()}
    layers = []
    for layer in range(config.num_layers):
      p = {name: w[layer] for name, w in stacked.items()}
      layers.append({
          "attn_norm": p["attn_norm"], "q_norm": p["q_norm"], "k_norm": p["k_norm"], "mlp_norm": p["mlp_norm"],
          "qkv_DxKxCxH": jnp.concatenate([p["q_proj"].reshape(d, k, g, h), p["k_proj"][:, :, None],
                                          p["v_proj"][:, :, None]], axis=2),
          "o_MxD": p["o_proj"].reshape(-1, d),
          "gate_up_Dx2xF": jnp.stack([p["gate_proj"], p["up_proj"]], axis=1),
          "down_proj": p["down_proj"],
      })
    head_VxD = (self.embed if config.tie_word_embeddings else self.lm_head)[...]
    return {"layers": layers, "embed_VxD": self.embed[...].astype(dtype), "final_norm": self.final_norm[...],
            "head_DxV": head_VxD.astype(dtype).T}

  def decode_step(self, weights: dict, tokens_B: jax.Array, positions_B: jax.Array, mask_B: jax.Array,
                  kv: DecodeKV) -> tuple[jax.Array, DecodeKV]:
    """One token per row through the model: float32 `logits_BxV` and the cache with slot `kv.index` written.

    The same math as `__call__` with a cache and T = 1, on `decode_weights()` and a `DecodeKV`.
    """
    config, rules = self.config, self.rules
    dtype = _DTYPES[config.dtype]
    with jax.named_scope("embed"):
      x_BxD = jnp.take(weights["embed_VxD"], tokens_B, axis=0).astype(dtype)
    sin_BxTxHh, cos_BxTxHh = rope_sin_cos(positions_B[:, None], config.head_dim, config.rope_theta)
    index = kv.index
    mask_BxS = jax.lax.dynamic_update_slice(kv.mask_BxS, mask_B.astype(jnp.bool_)[:, None], (0, index))
    visible_BxS = mask_BxS & (jnp.arange(kv.slots) <= index)[None]
    new_k, new_v = [], []
    for layer, p in enumerate(weights["layers"]):
      with jax.named_scope(f"layer_{layer}"):
        x_BxD, k_BxKxHxS, v_BxKxSxH = decode_layer(config, rules, p, x_BxD, sin_BxTxHh[:, 0], cos_BxTxHh[:, 0],
                                                   visible_BxS, kv.k_layers_BxKxHxS[layer],
                                                   kv.v_layers_BxKxSxH[layer], index)
      new_k.append(k_BxKxHxS)
      new_v.append(v_BxKxSxH)
    with jax.named_scope("lm_head"):
      h_BxD = rms_norm(x_BxD, weights["final_norm"], config.rms_norm_eps)
      logits_BxV = jnp.einsum("bd,dv->bv", h_BxD, weights["head_DxV"], preferred_element_type=jnp.float32)
      logits_BxV = sharding_lib.constrain(logits_BxV, ("batch", "act_vocab"), rules)
    return logits_BxV, DecodeKV(k_layers_BxKxHxS=tuple(new_k), v_layers_BxKxSxH=tuple(new_v), mask_BxS=mask_BxS,
                                index=index + 1)

  def _backbone(self, tokens_BxT, positions_BxT, mask_BxT, cache, self_attention: bool = False):
    config, rules = self.config, self.rules
    dtype = _DTYPES[config.dtype]
    mask_BxT = mask_BxT.astype(jnp.bool_)
    with jax.named_scope("embed"):
      x_BxTxD = jnp.take(self.embed[...], tokens_BxT, axis=0).astype(dtype)
      x_BxTxD = sharding_lib.constrain(x_BxTxD, ("batch", "length", "act_embed"), rules)
    sin_BxTxHh, cos_BxTxHh = rope_sin_cos(positions_BxT, config.head_dim, config.rope_theta)
    t = tokens_BxT.shape[1]
    if cache is None:
      index, kv, mask_BxS = None, None, None
    else:
      _check_cache_room(cache, t)
      index = cache.index
      mask_BxS = jax.lax.dynamic_update_slice(cache.mask_BxS, mask_BxT, (0, index))
      kv = (cache.k_LxBxSxKxH, cache.v_LxBxSxKxH, jnp.zeros((), jnp.int32))
    self_attention = cache is None or self_attention
    implementation = attention_lib.resolve(config.attention, queries=t, self_attention=self_attention, dtype=dtype)
    if cache is not None and implementation == "dense":
      # Dense attends over the whole cache (empty past the new tokens in a prefill): the numbers it always gave.
      self_attention = False
    key_mask_BxS, query_start = (mask_BxT, 0) if self_attention else (mask_BxS, index)
    # Dense's [B, T, S] mask is built once, outside the layer scan.
    visible_BxTxS = (attention_lib.visible_mask(key_mask_BxS, query_start, t) if implementation == "dense"
                     else None)
    plan = AttentionPlan(implementation, key_mask_BxS, query_start, self_attention, visible_BxTxS)

    def body(carry, layer_params):
      x_BxTxD, kv = carry
      x_BxTxD, kv = decoder_layer(config, rules, layer_params, x_BxTxD, sin_BxTxHh, cos_BxTxHh, plan, kv, index)
      return (x_BxTxD, kv), None

    if config.remat == "full":
      # Per-layer rematerialisation: only the residual stream between layers is kept for the backward pass.
      body = jax.checkpoint(body, prevent_cse=False)
    elif config.remat == "dots":
      # The projections' outputs are kept too; attention scores and elementwise work are recomputed.
      body = jax.checkpoint(body, prevent_cse=False,
                            policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    with jax.named_scope("layers"):
      (x_BxTxD, new_kv), _ = jax.lax.scan(body, (x_BxTxD, kv), self.layers.arrays())
    with jax.named_scope("final_norm"):
      h_BxTxD = rms_norm(x_BxTxD, self.final_norm[...], config.rms_norm_eps)
    if cache is not None:
      cache = KVCache(k_LxBxSxKxH=new_kv[0], v_LxBxSxKxH=new_kv[1], mask_BxS=mask_BxS, index=index + t)
    return h_BxTxD, cache
