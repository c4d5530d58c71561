"""BPE merges in-graph, as `tokenizers` applies them within each word (pre-token), one row of words at a time.

`tokenizers` merges a word by taking, again and again, the adjacent pair with the lowest merge rank (the leftmost on
a tie) until no pair has a merge. Words are independent, so they sit in the rows of a [words, symbols] matrix and
every word takes its next merge in the same step of a `while_loop` (a row minimum, then a shift), as many steps as
the longest word needs. The caller sizes the matrix to the words at hand (`codec.Words` counts them), since the
work of every step is proportional to it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from atommem_jax.data.jax_tokenizer.tables import TokenizerTables

_NO_MERGE = jnp.iinfo(jnp.int32).max


def pair_merges(tables: TokenizerTables, left: jax.Array, right: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(rank or _NO_MERGE, merged id) of each (left, right) pair of ids."""
  key = left * tables.vocab_size + right
  if tables.pair_table_VV.shape[0] > 1:  # dense: rank * V + merged id, -1 for no merge
    entry = tables.pair_table_VV[jnp.clip(key, 0, tables.pair_table_VV.shape[0] - 1)]
    return jnp.where(entry >= 0, entry // tables.vocab_size, _NO_MERGE), entry % tables.vocab_size
  keys = tables.merge_key_M
  index = jnp.clip(jnp.searchsorted(keys, key), 0, keys.shape[0] - 1)
  return jnp.where(keys[index] == key, tables.merge_rank_M[index], _NO_MERGE), tables.merge_token_M[index]


def merge_words(tables: TokenizerTables, symbol_WxL: jax.Array, length_W: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Each word's ids after merging (left-aligned in its row) and their count; `length_W`: each word's symbols."""
  width = symbol_WxL.shape[1]
  column = jnp.arange(width)

  def body(carry):
    symbol, length, _ = carry
    rank, merged = pair_merges(tables, symbol[:, :-1], symbol[:, 1:])
    rank = jnp.where(column[None, :-1] < length[:, None] - 1, rank, _NO_MERGE)
    best = jnp.argmin(rank, axis=1)  # the first minimum: the leftmost pair of the lowest rank
    merging = jnp.min(rank, axis=1) < _NO_MERGE
    new = jnp.take_along_axis(merged, best[:, None], axis=1)
    shifted = jnp.concatenate([symbol[:, 1:], symbol[:, -1:]], axis=1)
    merged_row = jnp.where(column < best[:, None], symbol, jnp.where(column == best[:, None], new, shifted))
    return jnp.where(merging[:, None], merged_row, symbol), length - merging, jnp.any(merging)

  symbol, length, _ = jax.lax.while_loop(lambda carry: carry[2], body,
                                         (symbol_WxL, length_W, jnp.any(length_W > 1)))
  return symbol, length
