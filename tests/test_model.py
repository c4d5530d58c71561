"""Qwen3 model: logits parity with transformers' torch Qwen3, KV-cache consistency, config boundary."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from atommem_jax import configlib
from atommem_jax.checkpoint import load_hf
from atommem_jax.model import (KVCache, PRESETS, Qwen3, Qwen3Config, abstract_model, get_preset,
                               positions_from_mask)
from hf_fixtures import make_tiny_hf_checkpoint


@functools.partial(jax.jit, static_argnums=0)
def forward(graphdef, state, tokens_BxT, positions_BxT, mask_BxT):
  return nnx.merge(graphdef, state)(tokens_BxT, positions_BxT, mask_BxT)[0]


@functools.partial(jax.jit, static_argnums=0)
def hidden(graphdef, state, tokens_BxT, positions_BxT, mask_BxT):
  return nnx.merge(graphdef, state).hidden_states(tokens_BxT, positions_BxT, mask_BxT)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=5)
def cached_step(graphdef, state, tokens_BxT, positions_BxT, mask_BxT, cache):
  return nnx.merge(graphdef, state)(tokens_BxT, positions_BxT, mask_BxT, cache)


def left_padded_batch(vocab: int, batch: int = 3, length: int = 24, seed: int = 0):
  rng = np.random.default_rng(seed)
  tokens_BxT = rng.integers(0, vocab, (batch, length))
  mask_BxT = np.ones((batch, length), bool)
  for row, pad in enumerate([7, 0, 2][:batch]):
    mask_BxT[row, :pad] = False
  positions_BxT = np.asarray(positions_from_mask(jnp.asarray(mask_BxT)))
  return tokens_BxT, positions_BxT, mask_BxT


# Non-default thetas on both so a hard-coded theta anywhere shows up as a parity failure.
@pytest.fixture(scope="module", params=[(True, 12_345.0), (False, 54_321.0)], ids=["tied", "untied"])
def hf_pair(request, tmp_path_factory):
  tied, theta = request.param
  path = tmp_path_factory.mktemp("hf")
  reference = make_tiny_hf_checkpoint(path, tied=tied, rope_theta=theta, seed=int(theta))
  config, model = load_hf(path)
  return reference, config, model


def test_logits_match_transformers_on_left_padded_batch(hf_pair):
  reference, config, model = hf_pair
  tokens, positions, mask = left_padded_batch(config.vocab_size)
  with torch.no_grad():
    expected = reference(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
                         position_ids=torch.tensor(positions)).logits.numpy()
  graphdef, state = nnx.split(model)
  logits = np.asarray(forward(graphdef, state, tokens, positions, mask))
  assert logits.dtype == np.float32
  assert np.abs(logits - expected)[mask].max() <= 1e-4
  assert (logits.argmax(-1) == expected.argmax(-1))[mask].all()


def test_hidden_states_are_the_final_normed_states(hf_pair):
  reference, config, model = hf_pair
  tokens, positions, mask = left_padded_batch(config.vocab_size)
  with torch.no_grad():
    expected = reference.model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
                               position_ids=torch.tensor(positions)).last_hidden_state.numpy()
  h = np.asarray(hidden(*nnx.split(model), tokens, positions, mask))
  assert h.shape == (*tokens.shape, config.hidden_size)
  assert np.abs(h - expected)[mask].max() <= 1e-4


@pytest.fixture(scope="module")
def tiny_model():
  config = get_preset("tiny")
  return config, Qwen3(config, rngs=nnx.Rngs(3))


def run_incrementally(graphdef, state, config, tokens, positions, mask, chunks: list[int], max_len: int = 32):
  cache = KVCache.init(config, tokens.shape[0], max_len)
  logits, start = [], 0
  for size in chunks:
    step_logits, cache = cached_step(graphdef, state, tokens[:, start:start + size], positions[:, start:start + size],
                                     mask[:, start:start + size], cache)
    logits.append(np.asarray(step_logits))
    start += size
  return np.concatenate(logits, axis=1), cache


def test_prefill_then_16_decode_steps_reproduce_the_full_forward(tiny_model):
  config, model = tiny_model
  graphdef, state = nnx.split(model)
  tokens, positions, mask = left_padded_batch(config.vocab_size, length=24)
  full = np.asarray(forward(graphdef, state, tokens, positions, mask))
  incremental, cache = run_incrementally(graphdef, state, config, tokens, positions, mask, [8] + [1] * 16)
  assert int(cache.index) == 24
  np.testing.assert_array_equal(np.asarray(cache.mask_BxS)[:, :24], mask)
  assert not np.asarray(cache.mask_BxS)[:, 24:].any()
  assert np.abs(incremental - full)[mask].max() <= 1e-5


def test_multi_token_chunks_after_prefill_match_the_full_forward(tiny_model):
  config, model = tiny_model
  graphdef, state = nnx.split(model)
  tokens, positions, mask = left_padded_batch(config.vocab_size, length=24, seed=1)
  full = np.asarray(forward(graphdef, state, tokens, positions, mask))
  incremental, _ = run_incrementally(graphdef, state, config, tokens, positions, mask, [8, 8, 8])
  assert np.abs(incremental - full)[mask].max() <= 1e-5


def test_masked_decode_slots_are_invisible_to_later_tokens(tiny_model):
  config, model = tiny_model
  graphdef, state = nnx.split(model)
  tokens, positions, mask = left_padded_batch(config.vocab_size, length=24, seed=2)
  # Same sequence with a junk token spliced in at slot 12 whose mask is False; positions skip it.
  junk_tokens = np.concatenate([tokens[:, :12], np.full((3, 1), 5), tokens[:, 12:]], axis=1)[:, :24]
  junk_mask = np.concatenate([mask[:, :12], np.zeros((3, 1), bool), mask[:, 12:]], axis=1)[:, :24]
  junk_positions = np.asarray(positions_from_mask(jnp.asarray(junk_mask)))
  clean, _ = run_incrementally(graphdef, state, config, tokens, positions, mask, [8] + [1] * 16)
  spliced, _ = run_incrementally(graphdef, state, config, junk_tokens, junk_positions, junk_mask, [8] + [1] * 16)
  kept = np.r_[0:12, 13:24]
  assert np.abs(spliced[:, kept] - clean[:, :23])[mask[:, :23]].max() <= 1e-5


def test_cache_overflow_is_refused_outside_jit(tiny_model):
  config, model = tiny_model
  tokens, positions, mask = (jnp.asarray(a) for a in left_padded_batch(config.vocab_size, length=6))
  with pytest.raises(ValueError, match="do not fit"):
    model(tokens, positions, mask, KVCache.init(config, 3, 4))
  full_cache = KVCache.init(config, 3, 8).replace(index=jnp.int32(4))
  with pytest.raises(ValueError, match="overflow: writing 6 tokens at slot 4 of a 8-slot cache"):
    model(tokens, positions, mask, full_cache)


def test_bfloat16_activations_track_float32_and_return_float32_logits(tiny_model):
  config, model = tiny_model
  graphdef, state = nnx.split(model)
  bf16_graphdef, _ = abstract_model(config.replace(dtype="bfloat16"))
  tokens, positions, mask = left_padded_batch(config.vocab_size)
  assert hidden(bf16_graphdef, state, tokens, positions, mask).dtype == jnp.bfloat16
  logits_bf16 = forward(bf16_graphdef, state, tokens, positions, mask)
  logits_fp32 = forward(graphdef, state, tokens, positions, mask)
  assert logits_bf16.dtype == jnp.float32
  err = np.abs(np.asarray(logits_bf16) - np.asarray(logits_fp32))[mask]
  assert np.isfinite(err).all() and err.max() < 0.05 * np.abs(np.asarray(logits_fp32)).max()


@functools.partial(jax.jit, static_argnums=0)
def squared_logits_grad(graphdef, state, tokens_BxT, positions_BxT, mask_BxT):
  def loss(state):
    return jnp.mean(nnx.merge(graphdef, state)(tokens_BxT, positions_BxT, mask_BxT)[0] ** 2)
  return jax.grad(loss)(state)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_gives_the_same_gradients(tiny_model, remat):
  config, model = tiny_model
  graphdef, state = nnx.split(model)
  remat_graphdef, _ = abstract_model(config.replace(remat=remat))
  tokens, positions, mask = left_padded_batch(config.vocab_size, length=8)
  plain_grads = jax.tree.leaves(squared_logits_grad(graphdef, state, tokens, positions, mask))
  remat_grads = jax.tree.leaves(squared_logits_grad(remat_graphdef, state, tokens, positions, mask))
  assert len(plain_grads) == len(remat_grads) == 13
  for a, b in zip(plain_grads, remat_grads):
    assert np.abs(np.asarray(a)).max() > 0
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_positions_from_mask_counts_real_tokens():
  mask = jnp.array([[False, False, True, True, True], [True, True, True, True, True]])
  np.testing.assert_array_equal(positions_from_mask(mask), [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])


def test_presets_have_the_published_sizes():
  assert get_preset("qwen3_0_6b").num_params == pytest.approx(0.596e9, rel=0.01)
  assert get_preset("qwen3_1_7b").num_params == pytest.approx(1.72e9, rel=0.01)
  assert get_preset("qwen3_4b").num_params == pytest.approx(4.02e9, rel=0.01)
  assert get_preset("qwen3_8b").num_params == pytest.approx(8.19e9, rel=0.01)
  assert not get_preset("qwen3_8b").tie_word_embeddings and get_preset("qwen3_4b").tie_word_embeddings
  assert get_preset("tiny_default").max_position_embeddings == 8192
  with pytest.raises(KeyError, match="qwen3_0_6b"):
    get_preset("qwen3_70b")


def test_from_hf_reads_theta_from_either_key_and_never_defaults():
  hf = {k: v for k, v in get_preset("tiny").to_hf_dict().items() if k not in ("rope_theta", "rope_parameters")}
  assert Qwen3Config.from_hf({**hf, "rope_parameters": {"rope_type": "default", "rope_theta": 777.0}}).rope_theta == 777.0
  assert Qwen3Config.from_hf({**hf, "rope_theta": 999.0}).rope_theta == 999.0
  with pytest.raises(configlib.ConfigError, match="rope_theta"):
    Qwen3Config.from_hf(hf)
  with pytest.raises(configlib.ConfigError, match="rope type"):
    Qwen3Config.from_hf({**hf, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1.0, "factor": 4.0}})


def test_to_hf_dict_is_read_back_by_transformers_and_by_from_hf():
  from transformers import Qwen3Config as HFQwen3Config
  for name in ("qwen3_8b", "tiny_default"):
    config = PRESETS[name]
    assert Qwen3Config.from_hf(config.to_hf_dict()) == config
    hf = HFQwen3Config(**config.to_hf_dict())
    assert hf.rope_parameters["rope_theta"] == config.rope_theta
    assert (hf.num_hidden_layers, hf.head_dim, hf.tie_word_embeddings) == (
        config.num_layers, config.head_dim, config.tie_word_embeddings)


def test_config_reads_remat_saved_as_a_bool_and_refuses_unknown_names():
  assert Qwen3Config.from_dict({"remat": True}).remat == "full"
  assert Qwen3Config.from_dict({"remat": False}).remat == "none"
  with pytest.raises(configlib.ConfigError, match="flash"):
    Qwen3Config.from_dict({"attention": "flash"})
  with pytest.raises(configlib.ConfigError, match="everything"):
    Qwen3Config(remat="everything")


def test_config_boundary_refuses_unknown_keys_and_bad_shapes():
  assert Qwen3Config.from_dict({"hidden_size": 32, "dtype": "bfloat16"}).hidden_size == 32
  with pytest.raises(configlib.ConfigError, match="hiden_size"):
    Qwen3Config.from_dict({"hiden_size": 32})
  with pytest.raises(configlib.ConfigError, match="num_kv_heads"):
    Qwen3Config(num_heads=4, num_kv_heads=3)
  with pytest.raises(configlib.ConfigError, match="float16"):
    Qwen3Config.from_dict({"dtype": "float16"})
