r"""The split regex in-graph: where each pre-token (the unit BPE merges within) starts, for one row of code points.

The regex (`tables.SUPPORTED_PATTERNS`) is an alternation tried in order at the current position, the first that
matches wins, and the scan continues where that match ends:

  1. (?i:'s|'t|'re|'ve|'m|'ll|'d)        a contraction
  2. [^\r\n\p{L}\p{N}{]?\p{L}+           a letter run with at most one leading non-letter (not `{` in ours)
  3. \p{N}                               one number character
  4.  ?[^\s\p{L}\p{N}]+[\r\n]*           a run of other characters, an optional space before, newlines after
  5. \s*[\r\n]+                          whitespace through its last newline
  6. \s+(?!\S)                           whitespace, less its last character when a non-space follows
  7. \s+                                 whitespace

Every alternative is "a run of one class, maybe with one character around it", so the end of the match starting
at each position is computed for all positions at once from run ends, and `segments.chain` then follows the matches
from each piece's start. A piece is a stretch of text between added tokens (and string starts); the regex sees each
piece on its own, so runs, and the look-ahead of 6, stop at the piece's end.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from atommem_jax.data.jax_tokenizer import segments, unicode_classes
from atommem_jax.data.jax_tokenizer.tables import TokenizerTables


def _gather(values_N1: jax.Array, index: jax.Array) -> jax.Array:
  return values_N1[jnp.clip(index, 0, values_N1.shape[0] - 1)]


def word_starts(tables: TokenizerTables, code_N: jax.Array, active_N: jax.Array, piece_end_N: jax.Array,
                piece_start_N: jax.Array) -> jax.Array:
  """True where a pre-token starts. `active`: positions inside some piece; `piece_end[i]`: the end of i's piece;
  `piece_start`: the first position of each piece."""
  n = code_N.shape[0]
  position = jnp.arange(n)
  bits = tables.class_C[jnp.clip(code_N, 0, unicode_classes.NUM_CODE_POINTS - 1)].astype(jnp.int32)
  letter = active_N & ((bits & unicode_classes.LETTER) > 0)
  number = active_N & ((bits & unicode_classes.NUMBER) > 0)
  space = active_N & ((bits & unicode_classes.SPACE) > 0)
  other = active_N & ~letter & ~number & ~space
  newline = active_N & ((code_N == 10) | (code_N == 13))
  end = piece_end_N

  def run_end_from(mask_N, start):
    """End of the `mask` run starting at `start` (per position), cut at the piece's end; `start` may be n."""
    ends = jnp.concatenate([segments.run_end(mask_N), jnp.array([n])])
    return jnp.minimum(_gather(ends, start), end)

  at = lambda mask_N, k: segments.shift_left(mask_N, k, False) & (position + k < end)
  code_at = lambda k: segments.shift_left(code_N, k, -1)

  # 1. contractions
  apostrophe = active_N & (code_N == ord("'"))
  single = at(jnp.isin(code_N, tables.contraction_single_K), 1)
  pair = jnp.zeros((n,), bool)
  for k in range(tables.contraction_pairs_Kx2.shape[0]):
    pair = pair | ((code_at(1) == tables.contraction_pairs_Kx2[k, 0]) & (code_at(2) == tables.contraction_pairs_Kx2[k, 1]))
  pair = pair & (position + 3 <= end)
  m1 = apostrophe & (single | pair)
  e1 = jnp.where(single, position + 2, position + 3)
  # 2. letter runs, with one leading character that is not a newline, letter, number (or `{`)
  may_lead = active_N & ~newline & ~letter & ~number
  if not tables.brace_leads_word:
    may_lead = may_lead & (code_N != ord("{"))
  led = may_lead & at(letter, 1)
  m2 = letter | led
  e2 = run_end_from(letter, jnp.where(letter, position, position + 1))
  # 4. other-character runs, optionally after one space, then newlines
  spaced = active_N & (code_N == ord(" ")) & at(other, 1)
  m4 = spaced | other
  e4 = run_end_from(newline, run_end_from(other, jnp.where(spaced, position + 1, position)))
  # 5-7. whitespace
  white_end = run_end_from(space, position)
  last_newline = segments.last_at_or_before(newline)
  through_newline = _gather(last_newline, white_end - 1)
  m5 = space & (through_newline >= position)
  m6 = space & ((white_end == end) | (white_end - 1 > position))
  e6 = jnp.where(white_end == end, white_end, white_end - 1)
  match_end = jnp.select([m1, m2, number, m4, m5, m6, space],
                         [e1, e2, position + 1, e4, through_newline + 1, e6, white_end], position + 1)
  match_end = jnp.where(active_N, match_end, n)
  return segments.chain(match_end, piece_start_N & active_N) & active_N
