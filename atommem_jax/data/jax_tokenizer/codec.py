"""`decode` and `encode` in-graph, one row at a time: the same ids and text as the Hugging Face tokenizer's
`decode(ids, skip_special_tokens=False)` and `encode(text, add_special_tokens=False)` (see `tables` for which
tokenizers qualify).

Text is an int32 array of code points. Encoding takes several independent strings in one row (each marked where it
starts), so the op texts of a response tokenize in one pass; every token carries the index of its string. It is
two steps: `split` finds the added tokens (which cut the text into pieces), cuts each piece into pre-tokens with
the split regex (`pretokenize`) and writes each pre-token's UTF-8 bytes as byte symbols: the `Words`; `merge` runs
BPE on them (`bpe`) in a [words, symbols] matrix as small as the caller can size it from `Words.num_words` and
`Words.longest` (BPE's work is proportional to it; the engine reads both on the host and picks the matrix).
"""
from __future__ import annotations

import dataclasses

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
  which = segments.find_patterns(code_N, string_end_N, tables.added_text_AxL, tables.added_length_A)
  token_N = jnp.where(which >= 0, tables.added_token_A[jnp.maximum(which, 0)], -1)
  length_N = jnp.where(which >= 0, tables.added_length_A[jnp.maximum(which, 0)], 0)
  # Matches never overlap (`tables` checks), so the last one starting at or before i decides whether i is inside.
  last = segments.last_at_or_before(which >= 0)
  covered = (last >= 0) & (jnp.arange(n) < last + length_N[jnp.maximum(last, 0)])
  return token_N, covered


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Words:
  """One row's text as the byte symbols BPE starts from, word by word."""

  symbol: jax.Array  # [M] byte tokens (an added token: its id), left-aligned
  start: jax.Array  # [M] a word starts at this symbol
  string: jax.Array  # [M] the string each symbol belongs to
  count: jax.Array  # symbols
  num_words: jax.Array
  longest: jax.Array  # the most symbols in one word


def split(tables: TokenizerTables, code_N: jax.Array, n: jax.Array, string_start_N: jax.Array) -> Words:
  """The words of the first n code points (M = 4N symbols), strings starting where `string_start_N` marks (and at
  0); see the module docstring."""
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
  bytes_Nx4, length_N = utf8.bytes_of(code_N)
  symbol_Nx4 = jnp.where(added_N[:, None] >= 0, added_N[:, None], tables.byte_token_256[bytes_Nx4])
  count_N = jnp.where(added_N >= 0, 1, jnp.where(active, length_N, 0))
  keep = (jnp.arange(4)[None] < count_N[:, None]).reshape(-1)
  spread = lambda x_N, fill: jnp.where(jnp.arange(4)[None] == 0, x_N[:, None], fill).reshape(-1)
  symbol, count = segments.compact(symbol_Nx4.reshape(-1), keep, 4 * size, 0)
  start, _ = segments.compact(spread(words, False), keep, 4 * size, False)
  string, _ = segments.compact(jnp.broadcast_to(string_N[:, None], (size, 4)).reshape(-1), keep, 4 * size, -1)
  start = start & (jnp.arange(4 * size) < count)
  word_start = jnp.where(start, jnp.arange(4 * size), 4 * size)
  word_end = segments.next_at_or_after(jnp.concatenate([start[1:], jnp.array([True])]) |
                                       (jnp.arange(4 * size) + 1 >= count)) + 1
  longest = jnp.max(jnp.where(start, word_end - word_start, 0))
  return Words(symbol=symbol, start=start, string=string, count=count,
               num_words=jnp.sum(start).astype(jnp.int32), longest=longest.astype(jnp.int32))


def merge(tables: TokenizerTables, words: Words, max_words: int, max_symbols: int
          ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(token ids left-aligned in max_words * max_symbols slots, their count, each token's string index).

  Needs max_words >= `words.num_words` and max_symbols >= `words.longest` (else words are dropped or cut)."""
  size = words.symbol.shape[0]
  max_symbols = max(2, max_symbols)
  first, num_words = segments.compact(jnp.arange(size), words.start, max_words, size)
  following = jnp.concatenate([first[1:], jnp.array([size])])
  end = jnp.where(jnp.arange(max_words) + 1 < num_words, following, words.count)
  length = jnp.where(jnp.arange(max_words) < num_words, jnp.minimum(end - first, max_symbols), 0)
  column = jnp.arange(max_symbols)
  index = jnp.minimum(first[:, None] + column[None, :], size - 1)
  symbol, length = bpe.merge_words(tables, jnp.where(column[None, :] < length[:, None], words.symbol[index], 0),
                                   length)
  keep = (column[None, :] < length[:, None]).reshape(-1)
  string = jnp.broadcast_to(words.string[jnp.minimum(first, size - 1)][:, None], symbol.shape).reshape(-1)
  tokens, count = segments.compact(symbol.reshape(-1), keep, max_words * max_symbols, 0)
  token_string, _ = segments.compact(string, keep, max_words * max_symbols, -1)
  return tokens, count, token_string
