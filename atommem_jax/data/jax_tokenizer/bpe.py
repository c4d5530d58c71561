"""BPE merges in-graph, one row of symbols at a time, as `tokenizers` applies them within each word.

`tokenizers` merges a word by taking, again and again, the adjacent pair with the lowest merge rank (the leftmost on
a tie) until no pair has a merge. Words are independent, so every word takes its next merge in the same step of a
`while_loop`; the loop runs as many steps as the longest word needs.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from atommem_jax.data.jax_tokenizer.tables import TokenizerTables

_NO_MERGE = jnp.iinfo(jnp.int32).max


def merge_words(tables: TokenizerTables, symbol_M: jax.Array, word_M: jax.Array, live_M: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
  """(ids, live) after merging. `word_M`: the word of each symbol (words are contiguous runs); `live_M`: real
  symbols (the rest is padding)."""
  m = symbol_M.shape[0]
  position = jnp.arange(m)
  following = jnp.concatenate([word_M[1:], jnp.array([-1], word_M.dtype)])
  next_M = jnp.where(live_M & (position + 1 < m) & (following == word_M)
                     & jnp.concatenate([live_M[1:], jnp.array([False])]), position + 1, m)
  keys = tables.merge_key_M

  def candidates(symbol, nxt, live):
    has_pair = live & (nxt < m)
    key = symbol * tables.vocab_size + symbol[jnp.minimum(nxt, m - 1)]
    index = jnp.clip(jnp.searchsorted(keys, key), 0, keys.shape[0] - 1)
    found = has_pair & (keys[index] == key)
    return jnp.where(found, tables.merge_rank_M[index], _NO_MERGE), tables.merge_token_M[index]

  def body(carry):
    symbol, nxt, live, _ = carry
    rank, merged = candidates(symbol, nxt, live)
    segment = jnp.where(live, word_M, m)
    best_rank = jax.ops.segment_min(rank, segment, num_segments=m + 1)[segment]
    leftmost = jax.ops.segment_min(jnp.where(rank == best_rank, position, m), segment, num_segments=m + 1)[segment]
    chosen = (rank < _NO_MERGE) & (position == leftmost)
    absorbed = jnp.zeros((m + 1,), bool).at[jnp.where(chosen, nxt, m)].set(True)[:m]
    symbol = jnp.where(chosen, merged, symbol)
    nxt = jnp.where(chosen, jnp.concatenate([nxt, jnp.array([m])])[nxt], nxt)
    return symbol, nxt, live & ~absorbed, jnp.any(chosen)

  symbol, _, live, _ = jax.lax.while_loop(lambda carry: carry[3], body,
                                          (symbol_M, next_M, live_M, jnp.any(live_M)))
  return symbol, live
