"""Embedders: the Qwen3 last-token embedder against transformers' Qwen3Model, the hashing embedder against its
numpy twin and its own definition."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atommem_jax.memory import embedders
from tests.hf_fixtures import make_tiny_hf_checkpoint

PREFIX = (7, 8, 9, 10, 11)  # stands in for tokenize("Instruct: {task}\nQuery:")
EOS = 3


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory):
  from atommem_jax.checkpoint import load_hf

  path = tmp_path_factory.mktemp("tiny_qwen3")
  torch_model = make_tiny_hf_checkpoint(path, tied=True)
  _, model = load_hf(path, dtype="float32")
  return torch_model, model


def _hf_last_token_embedding(torch_model, ids: list[int]) -> np.ndarray:
  """The reference: transformers' Qwen3Model on the unpadded sequence, last position, L2-normalised."""
  import torch

  with torch.no_grad():
    hidden = torch_model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1].double().numpy()
  return hidden / np.linalg.norm(hidden)


def test_qwen3_embedder_equals_hf_last_token_pooling(tiny_qwen3):
  torch_model, model = tiny_qwen3
  rng = np.random.default_rng(0)
  lengths = np.array([1, 4, 9, 12])
  tokens = np.zeros((4, 12), np.int32)
  for row, n in enumerate(lengths):
    tokens[row, :n] = rng.integers(12, 512, n)
  embedder = embedders.Qwen3Embedder(model, embedders.Qwen3EmbedderConfig(query_prefix_ids=PREFIX,
                                                                          suffix_ids=(EOS,)))
  entries = np.asarray(embedder(tokens, lengths, is_query=False))
  queries = np.asarray(embedder(tokens, lengths, is_query=True))
  for row, n in enumerate(lengths):
    text = tokens[row, :n].tolist()
    np.testing.assert_allclose(entries[row], _hf_last_token_embedding(torch_model, text + [EOS]), atol=1e-4)
    np.testing.assert_allclose(queries[row], _hf_last_token_embedding(torch_model, list(PREFIX) + text + [EOS]),
                               atol=1e-4)
  np.testing.assert_allclose(np.linalg.norm(entries, axis=-1), 1.0, atol=1e-5)
  assert np.abs(entries - queries).max() > 1e-3, "the query prefix must change the embedding"


def test_qwen3_embed_fn_inside_jit_matches_host_embedder(tiny_qwen3):
  from flax import nnx

  _, model = tiny_qwen3
  config = embedders.Qwen3EmbedderConfig(query_prefix_ids=PREFIX)
  graphdef, params = nnx.split(model)

  @jax.jit
  def embed_in_step(params, tokens, lengths):
    fn = embedders.make_qwen3_embed_fn(nnx.merge(graphdef, params), config)
    return fn(tokens, lengths, True)

  tokens, lengths = jnp.array([[20, 21, 22, 0], [30, 0, 0, 0]]), jnp.array([3, 1])
  np.testing.assert_allclose(np.asarray(embed_in_step(params, tokens, lengths)),
                             np.asarray(embedders.Qwen3Embedder(model, config)(tokens, lengths, True)), atol=1e-6)


def test_splice_left_padded_layout():
  tokens, mask = embedders.splice_left_padded(jnp.array([[5, 6, 0], [7, 0, 0], [1, 2, 3]]), jnp.array([2, 0, 3]),
                                              (9, 8), (4,), 0)
  assert np.asarray(tokens).tolist() == [[0, 9, 8, 5, 6, 4], [0, 0, 0, 9, 8, 4], [9, 8, 1, 2, 3, 4]]
  assert np.asarray(mask).sum(1).tolist() == [5, 3, 6]


def _hash_by_definition(ids: list[int], dim: int) -> np.ndarray:
  """Signed hashing of unigrams and bigrams written out one n-gram at a time from the module's definition."""
  def mix(x):
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)

  grams = [mix(t + 0x9E3779B9) for t in ids]
  grams += [mix(mix(a + 0x85EBCA77) ^ b) for a, b in zip(ids, ids[1:])]
  vector = np.zeros(dim)
  for h in grams:
    vector[h % dim] += -1.0 if h >> 31 else 1.0
  return vector / np.linalg.norm(vector)


def test_hashing_embedder_definition_and_numpy_twin():
  rng = np.random.default_rng(1)
  dim, lengths = 64, np.array([1, 2, 5, 8, 8])
  tokens = np.zeros((5, 8), np.int32)
  for row, n in enumerate(lengths):
    tokens[row, :n] = rng.integers(0, 50_000, n)
  in_graph = np.asarray(jax.jit(embedders.HashingEmbedder(dim))(tokens, lengths))
  host = embedders.hash_embed_numpy(tokens, lengths, dim)
  for row, n in enumerate(lengths):
    np.testing.assert_allclose(in_graph[row], _hash_by_definition(tokens[row, :n].tolist(), dim), atol=1e-6)
  np.testing.assert_allclose(in_graph, host, atol=1e-6)
  # Padding past the length is ignored; empty text is the zero vector.
  noisy = tokens.copy()
  noisy[0, 1:] = 99
  np.testing.assert_allclose(np.asarray(embedders.HashingEmbedder(dim)(noisy, lengths))[0], in_graph[0], atol=1e-7)
  assert not np.asarray(embedders.HashingEmbedder(dim)(tokens, np.zeros(5, np.int32))).any()
  # Shared n-grams mean similarity: a text is closer to its own prefix than to an unrelated text.
  a, prefix, other = tokens[3], tokens[3].copy(), tokens[4]
  prefix[5:] = 0
  e = embedders.hash_embed_numpy(np.stack([a, prefix, other]), np.array([8, 5, 8]), dim)
  assert e[0] @ e[1] > 0.5 > abs(e[0] @ e[2])


def test_the_qwen3_recipe_is_encoded_with_the_texts_tokenizer_and_pools_endoftext():
  from transformers import PreTrainedTokenizerFast
  from tokenizers import Tokenizer, models, pre_tokenizers

  from atommem_jax.data.tokenizer import load_tiny_tokenizer

  tokenizer = load_tiny_tokenizer()
  recipe = embedders.Qwen3EmbedderConfig.for_tokenizer(tokenizer)
  assert recipe.query_prefix_ids == tuple(tokenizer.encode(embedders.RETRIEVAL_INSTRUCTION, add_special_tokens=False))
  assert tokenizer.decode(recipe.query_prefix_ids).startswith("Instruct: ")
  assert recipe.entry_prefix_ids == ()
  # The pooled token is <|endoftext|>, as Qwen3-Embedding's reference appends, not the EOS (<|im_end|>).
  assert recipe.suffix_ids == (tokenizer.convert_tokens_to_ids("<|endoftext|>"),) != (tokenizer.eos_token_id,)
  words = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
  words.pre_tokenizer = pre_tokenizers.Whitespace()
  with pytest.raises(ValueError, match=r"no <\|endoftext\|> token"):
    embedders.Qwen3EmbedderConfig.for_tokenizer(PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>"))
