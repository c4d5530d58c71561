"""UTF-8 in-graph, one row at a time: bytes -> code points as Rust's `String::from_utf8_lossy` (and Python's
`bytes.decode("utf-8", "replace")`) decode them, and code points -> bytes.

Lossy decoding replaces each maximal prefix of a valid sequence that is cut short (and each byte that cannot start
one) by U+FFFD, the Unicode "substitution of maximal subparts" that both follow; a byte-level tokenizer's `decode`
of arbitrary ids goes through it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from atommem_jax.data.jax_tokenizer import segments

REPLACEMENT = 0xFFFD


def _in(x, low, high):
  return (x >= low) & (x <= high)


def decode_lossy(bytes_N: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(code points left-aligned in N slots, their count) of the first n bytes."""
  size = bytes_N.shape[0]
  bytes_N = jnp.where(jnp.arange(size) < n, bytes_N, -1)
  b0, b1, b2, b3 = (segments.shift_left(bytes_N, k, -1) for k in range(4))
  cont1, cont2, cont3 = _in(b1, 0x80, 0xBF), _in(b2, 0x80, 0xBF), _in(b3, 0x80, 0xBF)
  # The second byte's range depends on the first (no overlongs, no surrogates, nothing past U+10FFFF).
  second_ok = jnp.select([b0 == 0xE0, b0 == 0xED, b0 == 0xF0, b0 == 0xF4],
                         [_in(b1, 0xA0, 0xBF), _in(b1, 0x80, 0x9F), _in(b1, 0x90, 0xBF), _in(b1, 0x80, 0x8F)], cont1)
  ascii_, two, three, four = b0 < 0x80, _in(b0, 0xC2, 0xDF), _in(b0, 0xE0, 0xEF), _in(b0, 0xF0, 0xF4)
  cp2 = ((b0 & 0x1F) << 6) | (b1 & 0x3F)
  cp3 = ((b0 & 0x0F) << 12) | ((b1 & 0x3F) << 6) | (b2 & 0x3F)
  cp4 = ((b0 & 0x07) << 18) | ((b1 & 0x3F) << 12) | ((b2 & 0x3F) << 6) | (b3 & 0x3F)
  whole2, whole3, whole4 = two & cont1, three & second_ok & cont2, four & second_ok & cont2 & cont3
  code = jnp.select([ascii_, whole2, whole3, whole4], [b0, cp2, cp3, cp4], REPLACEMENT)
  # Bytes one match consumes: a whole sequence, or the valid prefix of a cut one (at least the first byte).
  multi = three | four
  length = jnp.select([two, multi], [1 + cont1, 1 + (multi & second_ok) + (multi & second_ok & cont2)
                                     + (four & second_ok & cont2 & cont3)], 1).astype(jnp.int32)
  positions = jnp.arange(size)
  starts = segments.chain(positions + length, (positions == 0) & (n > 0)) & (positions < n)
  return segments.compact(code, starts, size, 0)


def utf8_length(code_N: jax.Array) -> jax.Array:
  return jnp.where(code_N < 0x80, 1, jnp.where(code_N < 0x800, 2, jnp.where(code_N < 0x10000, 3, 4)))


def bytes_of(code_N: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Each code point's UTF-8 bytes ([N, 4], unused slots 0) and their count."""
  length = utf8_length(code_N)
  lead = jnp.select([length == 1, length == 2, length == 3],
                    [code_N, 0xC0 | (code_N >> 6), 0xE0 | (code_N >> 12)], 0xF0 | (code_N >> 18))
  # Byte k >= 1 carries the code point's bits 6 * (length - 1 - k) and up, six at a time.
  tails = [0x80 | ((code_N >> jnp.maximum(6 * (length - 1 - k), 0)) & 0x3F) for k in (1, 2, 3)]
  bytes_Nx4 = jnp.stack([lead] + tails, axis=1)
  return jnp.where(jnp.arange(4)[None] < length[:, None], bytes_Nx4, 0), length


def encode(code_N: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(bytes left-aligned in 4N slots, the byte count)."""
  size = code_N.shape[0]
  bytes_Nx4, length = bytes_of(code_N)
  keep_Nx4 = (jnp.arange(4)[None] < length[:, None]) & (jnp.arange(size) < n)[:, None]
  return segments.compact(bytes_Nx4.reshape(-1), keep_Nx4.reshape(-1), 4 * size, 0)
