"""Attention implementations against dense, the reference: blockwise, splash (the kernel's interpret mode on CPU) and
the cuDNN wrapper (run through `jax.nn.dot_product_attention`'s XLA implementation), in fp32 on left-padded rows,
with and without a KV cache; `auto`'s choices."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from atommem_jax import sharding
from atommem_jax.model import KVCache, Qwen3, abstract_model, get_preset, positions_from_mask, shard_params
from atommem_jax.model import attention as attention_lib

B, T, N, K, H = 3, 24, 4, 2, 16


def qkv_and_mask(seed: int = 0):
  rng = np.random.default_rng(seed)
  q = jnp.asarray(rng.normal(size=(B, T, N, H)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(B, T, K, H)), jnp.float32)
  v = jnp.asarray(rng.normal(size=(B, T, K, H)), jnp.float32)
  mask = np.ones((B, T), bool)
  mask[0, :7] = False  # left padding
  mask[1, 19:] = False  # right padding (a training row)
  mask[2, :2] = False
  mask[2, 20:] = False
  return q, k, v, jnp.asarray(mask)


def dense_reference(q, k, v, mask):
  return attention_lib.dense(q, k, v, attention_lib.visible_mask(mask, 0, q.shape[1]))


def test_blockwise_equals_dense_outputs_and_gradients(block=5):
  q, k, v, mask = qkv_and_mask()
  loss = lambda fn: lambda q, k, v: jnp.sum(jnp.where(mask[:, :, None, None], fn(q, k, v), 0.0) ** 2)
  dense_fn = lambda q, k, v: dense_reference(q, k, v, mask)
  blockwise_fn = lambda q, k, v: attention_lib.blockwise(q, k, v, mask, 0, block=block)
  np.testing.assert_allclose(np.asarray(blockwise_fn(q, k, v))[mask], np.asarray(dense_fn(q, k, v))[mask],
                             atol=1e-5, rtol=0)
  dense_grads = jax.grad(loss(dense_fn), argnums=(0, 1, 2))(q, k, v)
  blockwise_grads = jax.grad(loss(blockwise_fn), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(dense_grads, blockwise_grads):
    assert np.abs(np.asarray(a)).max() > 0
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=1e-5)


def test_blockwise_with_a_traced_query_start_equals_dense_over_a_cache():
  q, k, v, mask = qkv_and_mask(1)
  start = jnp.int32(16)  # 8 queries at slots 16..23 over 24 cached slots
  want = attention_lib.dense(q[:, :8], k, v, attention_lib.visible_mask(mask, start, 8))
  got = jax.jit(lambda q, s: attention_lib.blockwise(q, k, v, mask, s, block=3))(q[:, :8], start)
  real = np.asarray(mask[:, 16:])
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=1e-5, rtol=0)


def test_cudnn_wrapper_compacts_padding_and_equals_dense():
  q, k, v, mask = qkv_and_mask(2)
  fn = functools.partial(attention_lib.cudnn, mask_BxT=mask, implementation="xla")
  np.testing.assert_allclose(np.asarray(fn(q, k, v))[mask], np.asarray(dense_reference(q, k, v, mask))[mask],
                             atol=1e-5, rtol=0)
  loss = lambda fn: lambda q, k, v: jnp.sum(jnp.where(mask[:, :, None, None], fn(q, k, v), 0.0) ** 2)
  want = jax.grad(loss(lambda q, k, v: dense_reference(q, k, v, mask)), argnums=(0, 1, 2))(q, k, v)
  got = jax.grad(loss(fn), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(want, got):
    assert np.isfinite(np.asarray(b)).all()
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=1e-5)


def test_splash_kernel_in_interpret_mode_equals_dense():
  q, k, v, mask = qkv_and_mask(3)
  got = attention_lib.splash(q, k, v, mask, sharding.DEFAULT_RULES, interpret=True)
  np.testing.assert_allclose(np.asarray(got)[mask], np.asarray(dense_reference(q, k, v, mask))[mask], atol=1e-5,
                             rtol=0)


def test_auto_picks_by_platform_and_row_length():
  resolve = attention_lib.resolve
  assert resolve("auto", queries=4096, self_attention=True, platform="tpu") == "splash"
  assert resolve("auto", queries=4096, self_attention=True, platform="gpu", dtype=jnp.bfloat16) == "cudnn"
  assert resolve("auto", queries=4096, self_attention=True, platform="gpu", dtype=jnp.float32) == "blockwise"
  assert resolve("auto", queries=4096, self_attention=True, platform="cpu") == "blockwise"
  assert resolve("auto", queries=attention_lib.AUTO_DENSE_MAX_QUERIES, self_attention=True,
                 platform="cpu") == "dense"
  # With a cache the kernels need self-attention; single-token decode keeps its fused path.
  assert resolve("splash", queries=64, self_attention=False, platform="tpu") == "blockwise"
  assert resolve("cudnn", queries=64, self_attention=False, platform="gpu") == "blockwise"
  assert resolve("blockwise", queries=1, self_attention=False, platform="cpu") == "dense"


# ---------------------------------------------------------------------------------------------- through the model


@functools.partial(jax.jit, static_argnums=0)
def forward(graphdef, state, tokens, positions, mask):
  return nnx.merge(graphdef, state)(tokens, positions, mask)[0]


@functools.partial(jax.jit, static_argnums=0)
def cached(graphdef, state, tokens, positions, mask, cache):
  return nnx.merge(graphdef, state)(tokens, positions, mask, cache)


@functools.partial(jax.jit, static_argnums=0)
def prefill(graphdef, state, tokens, positions, mask, cache):
  return nnx.merge(graphdef, state).prefill(tokens, positions, mask, cache)


def left_padded(vocab: int, length: int = 24, pads=(7, 0, 2), seed: int = 0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, vocab, (len(pads), length))
  mask = np.ones((len(pads), length), bool)
  for row, pad in enumerate(pads):
    mask[row, :pad] = False
  return tokens, np.asarray(positions_from_mask(jnp.asarray(mask))), mask


@pytest.fixture(scope="module")
def tiny():
  config = get_preset("tiny")
  graphdef, state = nnx.split(Qwen3(config, rngs=nnx.Rngs(5)))
  return config, graphdef, state


def graphdef_with(config, attention):
  return abstract_model(config.replace(attention=attention))[0]


def test_blockwise_model_equals_dense_with_and_without_a_cache(tiny, monkeypatch):
  monkeypatch.setattr(attention_lib, "BLOCK_QUERIES", 5)  # several blocks and a padded last one
  config, graphdef, state = tiny
  blockwise = graphdef_with(config, "blockwise")
  tokens, positions, mask = left_padded(config.vocab_size)
  want = np.asarray(forward(graphdef, state, tokens, positions, mask))
  got = np.asarray(forward(blockwise, state, tokens, positions, mask))
  assert np.abs(got - want)[mask].max() <= 1e-5
  # Chunks of 8 over a 32-slot cache: blockwise attends over the cache with a traced start slot.
  cache, chunks = KVCache.init(config, 3, 32), []
  for start in (0, 8, 16):
    window = slice(start, start + 8)
    logits, cache = cached(blockwise, state, tokens[:, window], positions[:, window], mask[:, window], cache)
    chunks.append(np.asarray(logits))
  assert np.abs(np.concatenate(chunks, axis=1) - want)[mask].max() <= 1e-5
  # A prefill into an empty cache (self-attention) writes the same keys and values as the cached forward.
  want_cache = cached(graphdef, state, tokens, positions, mask, KVCache.init(config, 3, 32))[1]
  got_cache = prefill(blockwise, state, tokens, positions, mask, KVCache.init(config, 3, 32))
  assert int(got_cache.index) == 24
  np.testing.assert_array_equal(np.asarray(got_cache.mask_BxS), np.asarray(want_cache.mask_BxS))
  assert_same_real_slots(got_cache, want_cache, mask)


def assert_same_real_slots(got, want, mask):
  """Keys and values of the real tokens (a padding slot's later-layer entries depend on how its never-used query
  row was filled, and the slot is never visible)."""
  for name in ("k_LxBxSxKxH", "v_LxBxSxKxH"):
    a, b = np.asarray(getattr(got, name))[:, :, :mask.shape[1]], np.asarray(getattr(want, name))[:, :, :mask.shape[1]]
    np.testing.assert_allclose(a[:, mask], b[:, mask], atol=1e-5)


def test_splash_model_equals_dense_with_and_without_a_cache(tiny):
  """On CPU `splash` runs the Pallas kernel in interpret mode, through the model's shard_map-free path."""
  config, graphdef, state = tiny
  splash = graphdef_with(config, "splash")
  tokens, positions, mask = left_padded(config.vocab_size, length=16, pads=(5, 0))
  want = np.asarray(forward(graphdef, state, tokens, positions, mask))
  got = np.asarray(forward(splash, state, tokens, positions, mask))
  assert np.abs(got - want)[mask].max() <= 1e-5
  want_cache = cached(graphdef, state, tokens, positions, mask, KVCache.init(config, 2, 20))[1]
  got_cache = prefill(splash, state, tokens, positions, mask, KVCache.init(config, 2, 20))
  assert_same_real_slots(got_cache, want_cache, mask)


def test_splash_under_a_mesh_is_placed_with_shard_map(tiny):
  """Rows over data x fsdp, heads over tensor: the kernel runs per shard and still equals dense."""
  config, graphdef, state = tiny
  mesh = sharding.make_mesh(sharding.MeshConfig(data=2, tensor=2), jax.devices()[:4])
  tokens, positions, mask = left_padded(config.vocab_size, length=16, pads=(5, 0))
  want = np.asarray(forward(graphdef, state, tokens, positions, mask))
  splash, sharded = graphdef_with(config, "splash"), shard_params(state, mesh)
  with jax.set_mesh(mesh):
    got = np.asarray(forward(splash, sharded, tokens, positions, mask))
  assert np.abs(got - want)[mask].max() <= 1e-5
