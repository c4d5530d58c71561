"""Stop strings: pre-tokenised sequences matched in-graph on each row's generated suffix, and the exact host cut.

Token-level matching alone is not exact: the model can spell a stop string with tokens other than the ones the
tokenizer would choose, and a match ends at a token boundary, not at the string's last character. So the decode loop
stops rows early on the common spellings (the string alone, and after a space), and `cut_at_stop` then cuts each row's
decoded text at the first occurrence and drops the tokens after the one that completed it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Left padding of the stop table: matches any token, so shorter sequences are right-aligned with longer ones.
WILDCARD = -1
# Initial content of the recent-token window: matches no real token and no wildcard, so a sequence longer than what
# was generated so far cannot match.
NOT_GENERATED = -2


def stop_sequences_table(stop_strings: Sequence[str], encode: Callable[[str], list[int]]) -> np.ndarray:
  """Token spellings of every stop string, right-aligned in an int32 `[num_sequences, max_len]` table.

  `encode` must not add special tokens. Each string contributes its own encoding and that of the string after a
  space (byte-level BPE merges the space into the first token), deduplicated.
  """
  sequences: list[tuple[int, ...]] = []
  for stop in stop_strings:
    for spelling in (stop, " " + stop):
      ids = tuple(int(i) for i in encode(spelling))
      if not ids:
        raise ValueError(f"stop string {stop!r} encodes to no tokens")
      if ids not in sequences:
        sequences.append(ids)
  if not sequences:
    return np.zeros((0, 1), np.int32)
  width = max(len(s) for s in sequences)
  table = np.full((len(sequences), width), WILDCARD, np.int32)
  for row, ids in enumerate(sequences):
    table[row, width - len(ids):] = ids
  return table


def initial_window(batch: int, width: int) -> jax.Array:
  return jnp.full((batch, width), NOT_GENERATED, jnp.int32)


def push_token(window_BxW: jax.Array, token_B: jax.Array) -> jax.Array:
  """The last W generated tokens after appending `token_B`."""
  return jnp.concatenate([window_BxW[:, 1:], token_B[:, None].astype(jnp.int32)], axis=1)


def matches_stop(window_BxW: jax.Array, table_SxW: jax.Array) -> jax.Array:
  """True for rows whose generated suffix equals one of the table's sequences."""
  if table_SxW.shape[0] == 0:
    return jnp.zeros(window_BxW.shape[:1], bool)
  equal_BxSxW = (window_BxW[:, None, :] == table_SxW[None]) | (table_SxW[None] == WILDCARD)
  return jnp.any(jnp.all(equal_BxSxW, axis=-1), axis=-1)


def first_stop_end(text: str, stop_strings: Sequence[str]) -> int | None:
  """The index just past the earliest-ending occurrence of any stop string in `text`, or None."""
  ends = [text.find(stop) + len(stop) for stop in stop_strings if stop in text]
  return min(ends) if ends else None


def cut_at_stop(token_ids: Sequence[int], decode: Callable[[Sequence[int]], str],
                stop_strings: Sequence[str]) -> tuple[int, str] | None:
  """Where a row's output ends if its text contains a stop string.

  Returns `(num_tokens, text)`: the fewest leading tokens whose decoding contains a stop string, and the decoded text
  cut just after the first stop string; None if the text holds none.
  """
  if not stop_strings:
    return None
  full_text = decode(token_ids)
  end = first_stop_end(full_text, stop_strings)
  if end is None:
    return None
  # "The decoding of the first n tokens contains a stop string" is monotone in n: binary search for the smallest n.
  low, high = 1, len(token_ids)
  while low < high:
    middle = (low + high) // 2
    if first_stop_end(decode(token_ids[:middle]), stop_strings) is None:
      low = middle + 1
    else:
      high = middle
  text = decode(token_ids[:low])
  return low, text[:first_stop_end(text, stop_strings)]
