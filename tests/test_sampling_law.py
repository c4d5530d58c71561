"""The sampling law, stop matching, batching and config checks: no model needed."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atommem_jax import configlib
from atommem_jax.sampling import batching, law
from atommem_jax.sampling import stop as stop_lib
from atommem_jax.sampling.config import SamplerConfig

NUM_DRAWS = 20_000
LOGITS_V = np.random.default_rng(0).normal(size=12).astype(np.float32) * 1.5


def reference_distribution(logits, temperature, top_k, top_p):
  """Temperature, then the k most likely, then the smallest most-likely prefix reaching mass top_p; renormalised."""
  z = logits.astype(np.float64) / temperature
  probs = np.exp(z - z.max())
  probs /= probs.sum()
  order = np.argsort(-probs, kind="stable")
  if top_k:
    order = order[:top_k]
  kept_mass = probs[order].sum()
  support, mass = [], 0.0
  for token in order:
    support.append(token)
    mass += probs[token] / kept_mass
    if mass >= top_p:
      break
  out = np.zeros_like(probs)
  out[support] = probs[support]
  return out / out.sum()


@functools.partial(jax.jit, static_argnames=("temperature", "top_k", "top_p"))
def draw_many(logits_V, key, *, temperature, top_k, top_p):
  logits_BxV = jnp.broadcast_to(logits_V, (NUM_DRAWS, logits_V.shape[0]))
  return law.sample_tokens(logits_BxV, jax.random.split(key, NUM_DRAWS), greedy=False, temperature=temperature,
                           top_k=top_k, top_p=top_p)


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 4, 1.0), (1.0, 0, 0.8), (1.3, 6, 0.9), (0.5, 0, 0.99)])
def test_empirical_law_matches_truncated_renormalised_distribution(temperature, top_k, top_p):
  tokens, sampling_logprobs = draw_many(jnp.asarray(LOGITS_V), jax.random.key(1), temperature=temperature,
                                        top_k=top_k, top_p=top_p)
  tokens = np.asarray(tokens)
  expected = reference_distribution(LOGITS_V, temperature, top_k, top_p)
  empirical = np.bincount(tokens, minlength=LOGITS_V.size) / NUM_DRAWS
  assert 0.5 * np.abs(empirical - expected).sum() <= 0.02
  assert np.all(expected[tokens] > 0), "a token outside the truncated support was drawn"
  # The reported sampling logprob is the log of the drawn token's probability under that same distribution.
  np.testing.assert_allclose(np.asarray(sampling_logprobs), np.log(expected[tokens]), atol=1e-5)


def test_greedy_is_argmax_and_model_logprob_is_untempered():
  logits_BxV = jnp.asarray(np.random.default_rng(1).normal(size=(5, 12)), jnp.float32)
  tokens, sampling_logprobs = law.sample_tokens(logits_BxV, jax.random.split(jax.random.key(0), 5), greedy=True,
                                                temperature=1.0, top_k=0, top_p=1.0)
  np.testing.assert_array_equal(tokens, np.argmax(logits_BxV, axis=-1))
  np.testing.assert_array_equal(sampling_logprobs, 0.0)
  expected = jax.nn.log_softmax(logits_BxV, axis=-1)[jnp.arange(5), tokens]
  np.testing.assert_allclose(law.token_logprobs(logits_BxV, tokens), expected, atol=1e-6)


def test_stop_table_is_right_aligned_with_space_variants():
  # A byte-level-BPE-like encoding: a leading space merges into the first character's token.
  vocab = {"<": 1, "/": 2, "a": 3, ">": 4, " <": 5, " a": 6}
  encode = lambda text: ([vocab[text[:2]]] + [vocab[c] for c in text[2:]] if text.startswith(" ")
                         else [vocab[c] for c in text])
  table = stop_lib.stop_sequences_table(["</a>", "a"], encode)
  assert table.tolist() == [[1, 2, 3, 4], [5, 2, 3, 4], [-1, -1, -1, 3], [-1, -1, -1, 6]]
  assert stop_lib.stop_sequences_table([], encode).shape == (0, 1)
  with pytest.raises(ValueError, match="'x' encodes to no tokens"):
    stop_lib.stop_sequences_table(["x"], lambda text: [])


def test_stop_matching_on_generated_suffix_only():
  table = jnp.asarray([[-1, 7, 8], [9, 9, 9]], jnp.int32)
  window = stop_lib.initial_window(4, 3)
  generated = [[7, 8, 0], [1, 7, 8], [9, 9, 9], [8, 7, 8]]
  hits = []
  for step in range(3):
    window = stop_lib.push_token(window, jnp.asarray([row[step] for row in generated]))
    hits.append(np.asarray(stop_lib.matches_stop(window, table)).tolist())
  assert hits == [[False, False, False, False], [True, False, False, False], [False, True, True, True]]
  # A sequence longer than what was generated cannot match against the initial window.
  short = stop_lib.push_token(stop_lib.initial_window(1, 3), jnp.asarray([9]))
  assert not bool(stop_lib.matches_stop(short, table)[0])


def test_cut_at_stop_is_exact_in_text_and_minimal_in_tokens():
  pieces = {1: "ab", 2: "c</", 3: "ans", 4: "wer>", 5: "tail"}
  decode = lambda ids: "".join(pieces[i] for i in ids)
  assert stop_lib.cut_at_stop([1, 2, 3, 4, 5], decode, ["</answer>"]) == (4, "abc</answer>")
  # The earliest-ending stop string wins.
  assert stop_lib.cut_at_stop([1, 2, 3, 4, 5], decode, ["</answer>", "bc"]) == (2, "abc")
  assert stop_lib.cut_at_stop([1, 2, 3], decode, ["</answer>"]) is None
  assert stop_lib.cut_at_stop([1, 2], decode, []) is None


def test_left_pad_buckets_and_batch_padding():
  padded = batching.left_pad([[5, 6, 7], [8]], length_buckets=(4, 8), batch_buckets=(), batch_multiple_of=1,
                             pad_id=0, vocab_size=10)
  assert padded.tokens_BxP.tolist() == [[0, 5, 6, 7], [0, 0, 0, 8]]
  assert padded.lengths_B.tolist() == [3, 1] and padded.active_B.tolist() == [True, True]
  padded = batching.left_pad([[1]] * 3, length_buckets=(4,), batch_buckets=(), batch_multiple_of=1, pad_id=0,
                             vocab_size=10)
  assert padded.tokens_BxP.shape == (4, 4) and padded.active_B.tolist() == [True, True, True, False]
  assert batching.batch_bucket(5, (2, 6, 12), 4) == 8 and batching.batch_bucket(3, (), 8) == 8
  assert batching.left_pad([[1]] * 5, length_buckets=(4,), batch_buckets=(2, 6), batch_multiple_of=1, pad_id=0,
                           vocab_size=10).tokens_BxP.shape == (6, 4)


@pytest.mark.parametrize("prompts,message", [
    ([[1, 2], []], "prompt 1 must be a non-empty"),
    ([[1, 2], [3, 12]], r"prompt 1 holds token ids outside \[0, 10\)"),
    ([[1, 2, 3, 4, 5]], "prompt length 5 is larger than the largest bucket 4"),
    ([[1.5]], "prompt 0 holds non-integer"),
    ([], "no prompts"),
])
def test_left_pad_rejects_bad_prompts_by_index(prompts, message):
  with pytest.raises(ValueError, match=message):
    batching.left_pad(prompts, length_buckets=(4,), batch_buckets=(), batch_multiple_of=1, pad_id=0, vocab_size=10)


def test_config_boundary_and_validation():
  config = configlib.from_dict(SamplerConfig, {"max_new_tokens": 8, "top_p": 0.9, "stop_strings": ["</a>"],
                                               "eos_ids": [2], "prompt_buckets": [16, 32]})
  assert config.stop_strings == ("</a>",) and config.prompt_buckets == (16, 32) and config.eos_ids == (2,)
  with pytest.raises(configlib.ConfigError, match="unknown config key"):
    configlib.from_dict(SamplerConfig, {"topp": 0.9})
  for bad, message in [({"top_p": 0.0}, "top_p"), ({"temperature": 0.0}, "temperature"), ({"top_k": -1}, "top_k"),
                       ({"prompt_buckets": (32, 16)}, "prompt_buckets"), ({"max_new_tokens": 0}, "max_new_tokens"),
                       ({"stop_strings": ("",)}, "empty string"), ({"cache_dtype": "int8"}, "cache_dtype")]:
    with pytest.raises(ValueError, match=message):
      SamplerConfig(**bad)
  SamplerConfig(greedy=True, temperature=0.0)  # temperature does not matter for greedy
