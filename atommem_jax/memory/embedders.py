"""Text embedders with the memory's `embed_fn(tokens_NxT, lengths_N, is_query) -> unit embeddings_NxD` signature.

- `HashingEmbedder`: weight-free, deterministic, in-graph. Each unigram and bigram of token ids is hashed (murmur3
  finalizer on uint32) to one of D buckets with a +-1 sign; the bucket counts are L2-normalised. Texts sharing
  n-grams land close, which is all the tiny default and the tests need. `hash_embed_numpy` is the same function on
  the host (for host-side stores and for the baseline in the benchmark).
- `Qwen3Embedder`: the Qwen3-Embedding recipe on our Qwen3 decoder. The instruction prefix is applied on token ids:
  `Qwen3EmbedderConfig.for_tokenizer` tokenises `RETRIEVAL_INSTRUCTION` once on the host (`query_prefix_ids`) and the
  embedder splices prefix + text + suffix (the `<|endoftext|>` id Qwen3-Embedding pools) in-graph, left-padded,
  then pools the final-normed hidden state of the last real token and L2-normalises it. Entries get no prefix.

Rows of length 0 embed to the zero vector (never unit): the memory never stores an empty text.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

_UNIGRAM_SEED = np.uint32(0x9E3779B9)
_BIGRAM_SEED = np.uint32(0x85EBCA77)
_NORM_EPS = 1e-12


def _mix32(x):
  """murmur3's 32-bit finalizer; works on jnp and np uint32 arrays alike (wrapping multiplication)."""
  x = x ^ (x >> 16)
  x = x * np.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * np.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def _ngram_hashes(tokens_u32, xp):
  """(hashes, shape NxF) of every unigram and bigram position; F = T + (T - 1)."""
  unigram = _mix32(tokens_u32 + _UNIGRAM_SEED)
  bigram = _mix32(_mix32(tokens_u32[:, :-1] + _BIGRAM_SEED) ^ tokens_u32[:, 1:])
  return xp.concatenate([unigram, bigram], axis=1)


def _ngram_live(lengths_N, t: int, xp):
  positions = xp.arange(t)
  unigram_live = positions[None, :] < lengths_N[:, None]
  bigram_live = positions[None, :-1] + 1 < lengths_N[:, None]
  return xp.concatenate([unigram_live, bigram_live], axis=1)


@dataclasses.dataclass(frozen=True)
class HashingEmbedder:
  """Signed feature hashing of token uni+bi-grams into `dim` buckets, L2-normalised (hashable: a static arg)."""

  dim: int

  def __call__(self, tokens_NxT: jax.Array, lengths_N: jax.Array, is_query: bool = False) -> jax.Array:
    del is_query  # symmetric: queries and entries share one space
    tokens_NxT = jnp.asarray(tokens_NxT)
    n, t = tokens_NxT.shape
    if t < 2:
      tokens_NxT = jnp.pad(tokens_NxT, ((0, 0), (0, 2 - t)))
      t = 2
    hashes_NxF = _ngram_hashes(tokens_NxT.astype(jnp.uint32), jnp)
    live_NxF = _ngram_live(jnp.asarray(lengths_N, jnp.int32), t, jnp)
    buckets_NxF = (hashes_NxF % np.uint32(self.dim)).astype(jnp.int32)
    signs_NxF = jnp.where((hashes_NxF >> 31) == 1, -1.0, 1.0)
    rows_NxF = jnp.broadcast_to(jnp.arange(n)[:, None], buckets_NxF.shape)
    counts_NxD = jnp.zeros((n, self.dim), jnp.float32).at[rows_NxF, buckets_NxF].add(
        jnp.where(live_NxF, signs_NxF, 0.0))
    norms_N1 = jnp.linalg.norm(counts_NxD, axis=-1, keepdims=True)
    return counts_NxD / jnp.maximum(norms_N1, _NORM_EPS)


def hash_embed_numpy(tokens_NxT: np.ndarray, lengths_N: np.ndarray, dim: int) -> np.ndarray:
  """`HashingEmbedder(dim)` on the host with numpy; equal to the in-graph version."""
  tokens_NxT = np.asarray(tokens_NxT)
  n, t = tokens_NxT.shape
  if t < 2:
    tokens_NxT = np.pad(tokens_NxT, ((0, 0), (0, 2 - t)))
    t = 2
  with np.errstate(over="ignore"):
    hashes_NxF = _ngram_hashes(tokens_NxT.astype(np.uint32), np)
  live_NxF = _ngram_live(np.asarray(lengths_N), t, np)
  buckets_NxF = (hashes_NxF % np.uint32(dim)).astype(np.int64)
  signs_NxF = np.where((hashes_NxF >> 31) == 1, -1.0, 1.0).astype(np.float32)
  counts_NxD = np.zeros((n, dim), np.float32)
  rows_NxF = np.broadcast_to(np.arange(n)[:, None], buckets_NxF.shape)
  np.add.at(counts_NxD, (rows_NxF[live_NxF], buckets_NxF[live_NxF]), signs_NxF[live_NxF])
  norms_N1 = np.linalg.norm(counts_NxD, axis=-1, keepdims=True)
  return counts_NxD / np.maximum(norms_N1, _NORM_EPS)


# The retrieval task, in Qwen3-Embedding's query format ("Instruct: {task}\nQuery:"); entries get no instruction.
RETRIEVAL_INSTRUCTION = "Instruct: Given a question, retrieve the notes that help answer it\nQuery:"
# The token Qwen3-Embedding's reference code appends to every input and pools (its tokenizer's EOS is <|im_end|>).
POOLED_TOKEN = "<|endoftext|>"


@dataclasses.dataclass(frozen=True)
class Qwen3EmbedderConfig:
  """Token ids spliced around each text; tokenise them once on the host (`for_tokenizer`).

  Qwen3-Embedding: `query_prefix_ids = tokenizer.encode("Instruct: {task}\\nQuery:")`, no entry prefix, and
  `suffix_ids = (id of <|endoftext|>,)`, the token its reference code appends to every input (the pooled token).
  """

  query_prefix_ids: tuple[int, ...] = ()
  entry_prefix_ids: tuple[int, ...] = ()
  suffix_ids: tuple[int, ...] = ()
  pad_id: int = 0

  @classmethod
  def for_tokenizer(cls, tokenizer, instruction: str = RETRIEVAL_INSTRUCTION) -> "Qwen3EmbedderConfig":
    """The Qwen3-Embedding recipe with a retrieval instruction (the memory's by default), in the ids of `tokenizer`:
    the one that wrote the texts the embedder reads (the memory's entries and queries, or a corpus's)."""
    pooled = tokenizer.get_vocab().get(POOLED_TOKEN)
    if pooled is None:
      raise ValueError(f"the tokenizer has no {POOLED_TOKEN} token, which a Qwen3-Embedding model pools; a Qwen3 "
                       f"embedder needs the Qwen tokenizer's vocabulary")
    return cls(query_prefix_ids=tuple(tokenizer.encode(instruction, add_special_tokens=False)),
               suffix_ids=(pooled,), pad_id=tokenizer.pad_token_id or 0)  # padding is masked: any id will do


def splice_left_padded(tokens_NxT: jax.Array, lengths_N: jax.Array, prefix_ids: tuple[int, ...],
                       suffix_ids: tuple[int, ...], pad_id: int) -> tuple[jax.Array, jax.Array]:
  """prefix + tokens[:length] + suffix per row, right-aligned in P + T + S slots: (tokens_NxL, mask_NxL)."""
  n, t = tokens_NxT.shape
  p, s = len(prefix_ids), len(suffix_ids)
  width = p + t + s
  lengths_N = jnp.clip(jnp.asarray(lengths_N, jnp.int32), 0, t)
  total_N = p + lengths_N + s
  # Index into the row's unpadded sequence; negative means left padding.
  seq_NxL = jnp.arange(width)[None, :] - (width - total_N)[:, None]
  prefix = jnp.asarray(prefix_ids + (pad_id,), jnp.int32)  # the extra pad keeps the gather valid when P = 0
  suffix = jnp.asarray(suffix_ids + (pad_id,), jnp.int32)
  from_prefix = prefix[jnp.clip(seq_NxL, 0, p)]
  from_text = jnp.take_along_axis(jnp.asarray(tokens_NxT, jnp.int32), jnp.clip(seq_NxL - p, 0, t - 1), axis=1)
  from_suffix = suffix[jnp.clip(seq_NxL - p - lengths_N[:, None], 0, s)]
  tokens_NxL = jnp.where(seq_NxL < p, from_prefix,
                         jnp.where(seq_NxL < p + lengths_N[:, None], from_text, from_suffix))
  mask_NxL = seq_NxL >= 0
  return jnp.where(mask_NxL, tokens_NxL, pad_id), mask_NxL


def qwen3_embed(model, tokens_NxT: jax.Array, lengths_N: jax.Array, is_query: bool,
                config: Qwen3EmbedderConfig) -> jax.Array:
  """Last-token pooled, L2-normalised final hidden states of `model` (a `model.Qwen3`); float32 NxD."""
  from atommem_jax.model import positions_from_mask  # the model package is only needed by this embedder

  prefix_ids = config.query_prefix_ids if is_query else config.entry_prefix_ids
  tokens_NxL, mask_NxL = splice_left_padded(tokens_NxT, lengths_N, prefix_ids, config.suffix_ids, config.pad_id)
  hidden_NxLxD = model.hidden_states(tokens_NxL, positions_from_mask(mask_NxL), mask_NxL)
  # Left padding puts every row's last real token in the last column.
  pooled_NxD = hidden_NxLxD[:, -1].astype(jnp.float32)
  has_text_N1 = (jnp.asarray(lengths_N) > 0)[:, None]
  norms_N1 = jnp.linalg.norm(pooled_NxD, axis=-1, keepdims=True)
  return jnp.where(has_text_N1, pooled_NxD / jnp.maximum(norms_N1, _NORM_EPS), 0.0)


def make_qwen3_embed_fn(model, config: Qwen3EmbedderConfig):
  """An `embed_fn` closing over `model`. Build it inside your jitted step from the traced model, so the weights are
  arguments of the compiled function and not constants baked into it."""

  def embed_fn(tokens_NxT: jax.Array, lengths_N: jax.Array, is_query: bool = False) -> jax.Array:
    return qwen3_embed(model, tokens_NxT, lengths_N, is_query, config)

  return embed_fn


class Qwen3Embedder:
  """Host-facing batched embedder: one jitted function per (is_query, shape), the weights passed as arguments."""

  def __init__(self, model, config: Qwen3EmbedderConfig = Qwen3EmbedderConfig()):
    from flax import nnx

    self._graphdef, self._params = nnx.split(model)
    self.config = config

    def embed(graphdef, params, tokens_NxT, lengths_N, is_query):
      return qwen3_embed(nnx.merge(graphdef, params), tokens_NxT, lengths_N, is_query, config)

    self._embed = jax.jit(embed, static_argnums=(0, 4))

  def __call__(self, tokens_NxT: jax.Array, lengths_N: jax.Array, is_query: bool = False) -> jax.Array:
    return self._embed(self._graphdef, self._params, jnp.asarray(tokens_NxT, jnp.int32),
                       jnp.asarray(lengths_N, jnp.int32), bool(is_query))
