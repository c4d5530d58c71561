"""The model on 8 simulated CPU devices, mesh (data 2, fsdp 2, tensor 2): same numbers as on one device."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from atommem_jax import sharding
from atommem_jax.checkpoint import load_hf
from atommem_jax.model import KVCache, get_preset, init_sharded, param_shardings, positions_from_mask, shard_params
from hf_fixtures import make_tiny_hf_checkpoint

BATCH, LENGTH, CACHE = 8, 16, 24


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8
  return sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  path = tmp_path_factory.mktemp("hf")
  make_tiny_hf_checkpoint(path, tied=False, rope_theta=20_000.0)
  return path


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 512, (BATCH, LENGTH)).astype(np.int32)
  mask = np.ones((BATCH, LENGTH), bool)
  mask[np.arange(BATCH), :] &= np.arange(LENGTH)[None, :] >= rng.integers(0, 6, BATCH)[:, None]
  return tokens, np.asarray(positions_from_mask(jnp.asarray(mask))), mask


def prefill_and_decode(graphdef, state, tokens, positions, mask, config, mesh=None):
  """Full forward, then a prefill of half the batch length plus single-token decode steps with a cache."""

  def full(state, tokens, positions, mask):
    return nnx.merge(graphdef, state)(tokens, positions, mask)[0]

  def step(state, tokens, positions, mask, cache):
    return nnx.merge(graphdef, state)(tokens, positions, mask, cache)

  cache = KVCache.init(config, BATCH, CACHE)
  if mesh is None:
    full_fn, step_fn = jax.jit(full), jax.jit(step)
  else:
    params = param_shardings(state, mesh)
    data = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None))
    logits = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None, "tensor"))
    caches = KVCache.shardings(mesh)
    full_fn = jax.jit(full, in_shardings=(params, data, data, data), out_shardings=logits)
    step_fn = jax.jit(step, in_shardings=(params, data, data, data, caches), out_shardings=(logits, caches))
    cache = jax.device_put(cache, caches)
  with jax.set_mesh(mesh) if mesh is not None else _no_mesh():
    full_logits = full_fn(state, tokens, positions, mask)
    steps = [LENGTH // 2] + [1] * (LENGTH // 2)
    outputs, start = [], 0
    for size in steps:
      out, cache = step_fn(state, tokens[:, start:start + size], positions[:, start:start + size],
                           mask[:, start:start + size], cache)
      outputs.append(out)
      start += size
  return full_logits, jnp.concatenate(outputs, axis=1), cache


class _no_mesh:
  def __enter__(self):
    return None

  def __exit__(self, *exc):
    return False


@pytest.fixture(scope="module")
def models(checkpoint, mesh):
  config, single = load_hf(checkpoint)
  _, sharded = load_hf(checkpoint, mesh=mesh)
  return config, single, sharded


def test_sharded_forward_and_decode_equal_single_device(models, mesh, batch):
  tokens, positions, mask = batch
  config, single, sharded = models
  graphdef, single_state = nnx.split(single)
  sharded_state = nnx.state(sharded)
  ref_full, ref_steps, _ = prefill_and_decode(graphdef, single_state, tokens, positions, mask, config)
  full, steps, cache = prefill_and_decode(graphdef, sharded_state, tokens, positions, mask, config, mesh)
  assert full.sharding.spec == PartitionSpec(("data", "fsdp"), None, "tensor")
  assert cache.k_LxBxSxKxH.sharding.spec == PartitionSpec(None, ("data", "fsdp"), None, "tensor", None)
  assert len(full.addressable_shards) == 8 and full.addressable_shards[0].data.shape == (2, LENGTH, 256)
  assert np.abs(np.asarray(full) - np.asarray(ref_full))[mask].max() <= 1e-5
  assert np.abs(np.asarray(steps) - np.asarray(ref_steps))[mask].max() <= 1e-5
  assert np.abs(np.asarray(steps) - np.asarray(ref_full))[mask].max() <= 1e-5


EXPECTED_SPECS = {
    "embed": PartitionSpec("tensor", "fsdp"), "lm_head": PartitionSpec("tensor", "fsdp"),
    "q_proj": PartitionSpec(None, "fsdp", "tensor", None), "o_proj": PartitionSpec(None, "tensor", None, "fsdp"),
    "down_proj": PartitionSpec(None, "tensor", "fsdp"), "q_norm": PartitionSpec(None, None)}


def specs_of(model):
  return {name: v.sharding.spec for name, v in [
      ("embed", model.embed[...]), ("lm_head", model.lm_head[...]), ("q_proj", model.layers.q_proj[...]),
      ("o_proj", model.layers.o_proj[...]), ("down_proj", model.layers.down_proj[...]),
      ("q_norm", model.layers.q_norm[...])]}


def test_init_sharded_follows_the_logical_axis_table(mesh):
  model = init_sharded(get_preset("tiny").replace(tie_word_embeddings=False), mesh, seed=1)
  assert specs_of(model) == EXPECTED_SPECS
  # Each device holds a quarter of the embedding table (vocab over tensor, embed over fsdp).
  assert model.embed[...].addressable_shards[0].data.shape == (256, 32)
  assert float(jnp.std(model.layers.up_proj[...])) == pytest.approx(0.02, rel=0.1)


def test_shard_params_places_a_single_device_model(models, mesh):
  _, single, sharded = models
  placed = shard_params(single, mesh)
  assert specs_of(placed) == EXPECTED_SPECS
  np.testing.assert_array_equal(np.asarray(placed.layers.o_proj[...]), np.asarray(sharded.layers.o_proj[...]))
  rules = sharding.ShardingRules({**sharding.LOGICAL_AXIS_RULES, "vocab": None, "mlp": "fsdp", "embed": None})
  moved = shard_params(nnx.state(single), mesh, rules)
  assert moved["embed"][...].sharding.spec == PartitionSpec(None, None)
  assert moved["layers"]["gate_proj"][...].sharding.spec == PartitionSpec(None, None, "fsdp")
  assert param_shardings(single, mesh, rules)["layers"]["down_proj"].spec == PartitionSpec(None, "fsdp", None)
