"""`decode` and `encode` in-graph, one row at a time: the same ids and text as the Hugging Face tokenizer's
`decode(ids, skip_special_tokens=False)` and `encode(text, add_special_tokens=False)` (see `tables` for which
tokenizers qualify).

Text is an int32 array of code points. `encode` takes several independent strings in one row (each marked where it
starts), so the op texts of a response tokenize in one pass; every token carries the index of its string.
Encoding: added tokens are found first and split the text into pieces; the split regex cuts each piece into
pre-tokens (`pretokenize`); each pre-token's UTF-8 bytes become byte symbols that BPE merges (`bpe`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from atommem_jax.data.jax_tokenizer import bpe, pretokenize, segments, utf8
from atommem_jax.data.jax_tokenizer.tables import TokenizerTables


def decode(tables: TokenizerTables, ids_N: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(code points left-aligned in N * L slots, their count) of the first n ids (L: the longest token's bytes)."""
  size, width = ids_N.shape[0], tables.token_bytes_VxL.shape[1]
  known = (ids_N >= 0) & (ids_N < tables.token_bytes_VxL.shape[0]) & (jnp.arange(size) < n)
  ids_N = jnp.where(known, ids_N, 0)
  bytes_NxL = tables.token_bytes_VxL[ids_N]
  keep_NxL = (jnp.arange(width)[None] < tables.token_length_V[ids_N][:, None]) & known[:, None]
  data, count = segments.compact(bytes_NxL.reshape(-1), keep_NxL.reshape(-1), size * width, 0)
  return utf8.decode_lossy(data, count)


def _added_tokens(tables: TokenizerTables, code_N: jax.Array, string_end_N: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
  """(the added token starting at each position or -1, whether each position is inside one)."""
  n = code_N.shape[0]
  token_N = jnp.full((n,), -1, jnp.int32)
  length_N = jnp.zeros((n,), jnp.int32)
  for a in range(tables.added_text_AxL.shape[0]):
    length = tables.added_length_A[a]
    hit = jnp.arange(n) + length <= string_end_N
    for k in range(tables.added_text_AxL.shape[1]):
      hit = hit & ((k >= length) | (segments.shift_left(code_N, k, -1) == tables.added_text_AxL[a, k]))
    hit = hit & (length > 0)
    token_N = jnp.where(hit, tables.added_token_A[a], token_N)
    length_N = jnp.where(hit, length, length_N)
  # Inside = some match starts at or before i and ends after it (matches never overlap: `tables` checks).
  depth = jnp.cumsum(jnp.zeros((n + 1,), jnp.int32).at[jnp.arange(n)].add(token_N >= 0)
                     .at[jnp.minimum(jnp.arange(n) + length_N, n)].add(-(token_N >= 0).astype(jnp.int32))[:n])
  return token_N, depth > 0


def encode(tables: TokenizerTables, code_N: jax.Array, n: jax.Array, string_start_N: jax.Array
           ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(token ids left-aligned in 4N slots, their count, each token's string index).

  `string_start_N` marks where each string starts (position 0 always starts one); strings are tokenized as if
  encoded one by one.
  """
  size = code_N.shape[0]
  position = jnp.arange(size)
  real = position < n
  starts = real & (string_start_N | (position == 0))
  string_N = jnp.cumsum(starts) - 1
  after = lambda mask_N: jnp.concatenate([segments.next_at_or_after(mask_N)[1:], jnp.array([size])])
  string_end_N = jnp.minimum(after(starts), n)  # the smallest j > i where another string starts, or n
  added_N, covered_N = _added_tokens(tables, code_N, string_end_N)
  active = real & ~covered_N
  piece_start = active & (starts | ~jnp.concatenate([jnp.array([False]), active[:-1]]))
  piece_end = after(~active | piece_start)
  words = pretokenize.word_starts(tables, code_N, active, piece_end, piece_start) | (added_N >= 0)
  word_N = jnp.cumsum(words) - 1
  # Symbols: each byte of a pre-token as its byte token; an added token as its one id.
  bytes_Nx4, length_N = utf8.bytes_of(code_N)
  symbol_Nx4 = jnp.where(added_N[:, None] >= 0, added_N[:, None], tables.byte_token_256[bytes_Nx4])
  count_N = jnp.where(added_N >= 0, 1, jnp.where(active, length_N, 0))
  keep_Nx4 = jnp.arange(4)[None] < count_N[:, None]
  flat = lambda x: jnp.broadcast_to(x, (size, 4)).reshape(-1)
  symbol_M, count = segments.compact(symbol_Nx4.reshape(-1), keep_Nx4.reshape(-1), 4 * size, 0)
  word_M, _ = segments.compact(flat(word_N[:, None]), keep_Nx4.reshape(-1), 4 * size, -1)
  owner_M, _ = segments.compact(flat(string_N[:, None]), keep_Nx4.reshape(-1), 4 * size, -1)
  symbol_M, live_M = bpe.merge_words(tables, symbol_M, word_M, jnp.arange(4 * size) < count)
  tokens, num_tokens = segments.compact(symbol_M, live_M, 4 * size, 0)
  token_string, _ = segments.compact(owner_M, live_M, 4 * size, -1)
  return tokens, num_tokens, token_string
