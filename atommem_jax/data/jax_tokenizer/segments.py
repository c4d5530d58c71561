"""Variable-length text in fixed-shape arrays: run ends, left-to-right match chains, compaction, concatenation.

Every function works on one row (1-D arrays of a static length N); callers `jax.vmap` over rows. Text is an int32
array of code points (or bytes) whose first `n` entries are real.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def next_at_or_after(mask_N: jax.Array) -> jax.Array:
  """For each i, the smallest j >= i with mask[j] (N if none)."""
  n = mask_N.shape[0]
  return jax.lax.cummin(jnp.where(mask_N, jnp.arange(n), n), reverse=True)


def last_at_or_before(mask_N: jax.Array) -> jax.Array:
  """For each i, the largest j <= i with mask[j] (-1 if none)."""
  n = mask_N.shape[0]
  return jax.lax.cummax(jnp.where(mask_N, jnp.arange(n), -1))


def run_end(inside_N: jax.Array) -> jax.Array:
  """For each i, the end (exclusive) of the run of `inside` positions starting at i (i itself if not inside)."""
  return next_at_or_after(~inside_N)


def shift_left(values_N: jax.Array, k: int, fill) -> jax.Array:
  """values[i + k] at i (`fill` past the end)."""
  if k == 0:
    return values_N
  return jnp.concatenate([values_N[k:], jnp.full((k,), fill, values_N.dtype)])


def find_patterns(text_N: jax.Array, limit_N: jax.Array, patterns_PxL: jax.Array, lengths_P: jax.Array
                  ) -> jax.Array:
  """At each i, the index of the pattern that text[i:] starts with, ending at or before `limit[i]` (-1: none).

  Patterns are -1 padded rows; when several match at one position (one a prefix of another) the longest wins.
  Every window of text is compared with every pattern at once ([N, P, L]), rather than pattern by pattern.
  """
  n, width = text_N.shape[0], patterns_PxL.shape[1]
  padded = jnp.concatenate([text_N, jnp.full((width,), -1, text_N.dtype)])
  windows_NxL = padded[jnp.arange(n)[:, None] + jnp.arange(width)[None, :]]
  inside_PxL = jnp.arange(width)[None, :] < lengths_P[:, None]
  equal_NxPxL = (windows_NxL[:, None, :] == patterns_PxL[None]) | ~inside_PxL[None]
  hit_NxP = (jnp.all(equal_NxPxL, axis=2) & (lengths_P > 0)[None] &
             (jnp.arange(n)[:, None] + lengths_P[None] <= limit_N[:, None]))
  longest = jnp.max(jnp.where(hit_NxP, lengths_P[None], -1), axis=1)
  return jnp.where(longest > 0, jnp.argmax(hit_NxP & (lengths_P[None] == longest[:, None]), axis=1), -1)


def pattern_table(patterns) -> tuple[jax.Array, jax.Array]:
  """Code-point strings as `find_patterns`' ([P, L] -1 padded, [P] lengths)."""
  width = max([len(p) for p in patterns] + [1])
  table = [[ord(c) for c in p] + [-1] * (width - len(p)) for p in patterns]
  return jnp.asarray(table, jnp.int32), jnp.asarray([len(p) for p in patterns], jnp.int32)


def chain(next_N: jax.Array, roots_N: jax.Array) -> jax.Array:
  """The positions reached from `roots` by following `next` (each next[i] > i; N means the end).

  This is how a left-to-right scan that consumes one match at a time (a regex `finditer`, a UTF-8 decoder) runs
  without a sequential loop: next[i] is where the scan continues if a match starts at i, and pointer doubling marks
  every match start in log2(N) steps.
  """
  n = next_N.shape[0]
  jump = jnp.concatenate([jnp.clip(next_N, 0, n), jnp.array([n], next_N.dtype)])
  reached = jnp.concatenate([roots_N, jnp.zeros((1,), bool)]).astype(jnp.int32)
  for _ in range(max(1, (n + 1).bit_length())):
    reached = reached.at[jump].max(reached)
    jump = jump[jump]
  return reached[:n] > 0


def compact(values_N: jax.Array, keep_N: jax.Array, size: int, fill) -> tuple[jax.Array, jax.Array]:
  """The kept values in order, left-aligned in `size` slots (`fill` after them), and how many were kept."""
  position_N = jnp.cumsum(keep_N) - 1
  out = jnp.full((size,), fill, values_N.dtype)
  out = out.at[jnp.where(keep_N, position_N, size)].set(values_N, mode="drop")
  return out, jnp.minimum(jnp.sum(keep_N), size).astype(jnp.int32)


def concatenate(segments: Sequence[tuple[jax.Array, jax.Array]], size: int, fill) -> tuple[jax.Array, jax.Array]:
  """Segments `(values, length)` one after the other, left-aligned in `size` slots, and the total length."""
  out = jnp.full((size,), fill, jnp.int32)
  offset = jnp.zeros((), jnp.int32)
  for values_L, length in segments:
    columns = jnp.arange(values_L.shape[0])
    out = out.at[jnp.where(columns < length, offset + columns, size)].set(values_L.astype(jnp.int32), mode="drop")
    offset = offset + length
  return out, offset
