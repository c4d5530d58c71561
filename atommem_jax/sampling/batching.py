"""Host-side batching: prompts left-padded to a length bucket, the batch padded to a batch bucket.

Both paddings exist to bound compilations: the jitted prefill and decode see one shape per (batch bucket, length
bucket) pair, whatever lengths and counts the caller sends.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class PaddedPrompts:
  """Prompts as the jitted functions take them. `active_B` is False for the batch-padding rows."""

  tokens_BxP: np.ndarray
  mask_BxP: np.ndarray
  lengths_B: np.ndarray
  active_B: np.ndarray
  num_prompts: int


def choose_bucket(size: int, buckets: Sequence[int], what: str) -> int:
  for bucket in buckets:
    if size <= bucket:
      return bucket
  raise ValueError(f"{what} {size} is larger than the largest bucket {max(buckets)}; add a bigger one to the config")


def batch_bucket(num_prompts: int, buckets: Sequence[int], multiple_of: int) -> int:
  """The padded batch size: the smallest bucket that fits (the next power of two without buckets), rounded up to a
  multiple of `multiple_of` (the number of batch shards on a mesh)."""
  if buckets:
    size = choose_bucket(num_prompts, buckets, "number of prompts")
  else:
    size = 1 << max(num_prompts - 1, 0).bit_length()
  return -(-size // multiple_of) * multiple_of


def left_pad(prompts: Sequence[Sequence[int]], *, length_buckets: Sequence[int], batch_buckets: Sequence[int],
             batch_multiple_of: int, pad_id: int, vocab_size: int) -> PaddedPrompts:
  """Validates token-id prompts and left-pads them; a bad prompt is reported by its index."""
  if not prompts:
    raise ValueError("no prompts given")
  lengths = []
  for index, prompt in enumerate(prompts):
    ids = np.asarray(prompt)
    if ids.ndim != 1 or ids.size == 0:
      raise ValueError(f"prompt {index} must be a non-empty list of token ids, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
      raise ValueError(f"prompt {index} holds non-integer values (dtype {ids.dtype})")
    if ids.min() < 0 or ids.max() >= vocab_size:
      raise ValueError(f"prompt {index} holds token ids outside [0, {vocab_size}): min {ids.min()}, max {ids.max()}")
    lengths.append(ids.size)
  length = choose_bucket(max(lengths), length_buckets, "prompt length")
  batch = batch_bucket(len(prompts), batch_buckets, batch_multiple_of)
  tokens_BxP = np.full((batch, length), pad_id, np.int32)
  mask_BxP = np.zeros((batch, length), bool)
  for row, prompt in enumerate(prompts):
    tokens_BxP[row, length - lengths[row]:] = prompt
    mask_BxP[row, length - lengths[row]:] = True
  # Inactive rows hold a single pad token so that every row has a real last token, as the decode loop assumes.
  tokens_BxP[len(prompts):, -1] = pad_id
  mask_BxP[len(prompts):, -1] = True
  lengths_B = mask_BxP.sum(axis=1).astype(np.int32)
  active_B = np.arange(batch) < len(prompts)
  return PaddedPrompts(tokens_BxP, mask_BxP, lengths_B, active_B, len(prompts))
