"""Supervised fine-tuning on (prompt, completion) JSON lines: next-token loss on the completion only.

Each line is `{"prompt": str, "completion": str}`; the prompt is the exact text the model is shown (already
chat-formatted by whoever wrote the file), the completion is what it should generate, followed by end-of-sequence.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from atommem_jax import atomic_files
from atommem_jax.train import batching


def read_sft_pairs(path: str | os.PathLike) -> list[tuple[str, str]]:
  """Reads the JSONL file; a malformed line is an error naming the file and line."""
  pairs = []
  for line_no, record in atomic_files.read_jsonl(path):
    for key in ("prompt", "completion"):
      if not isinstance(record.get(key), str):
        raise ValueError(f"{path}: line {line_no}: key {key!r} is missing or not a string")
    if not record["completion"]:
      raise ValueError(f"{path}: line {line_no}: empty completion")
    pairs.append((record["prompt"], record["completion"]))
  if not pairs:
    raise ValueError(f"{path}: no (prompt, completion) pairs")
  return pairs


def write_sft_pairs(path: str | os.PathLike, pairs: Sequence[tuple[str, str]]) -> None:
  """Writes pairs as JSONL atomically (a reader never sees a half-written file)."""
  atomic_files.write_jsonl(path, ({"prompt": prompt, "completion": completion} for prompt, completion in pairs))


def tokenize_pairs(pairs: Sequence[tuple[str, str]], tokenizer: Any) -> tuple[list[list[int]], list[list[int]]]:
  """Token ids of each prompt, and of each completion followed by the tokenizer's end-of-sequence token."""
  eos = tokenizer.eos_token_id
  if eos is None:
    raise ValueError("the tokenizer has no eos_token_id; SFT completions must end with one")
  prompts, completions = [], []
  for prompt, completion in pairs:
    prompts.append(list(tokenizer.encode(prompt, add_special_tokens=False)))
    completions.append(list(tokenizer.encode(completion, add_special_tokens=False)) + [eos])
  return prompts, completions


def sft_loss(logits_NxTxV: jax.Array, tokens_NxT: jax.Array, loss_mask_NxT: jax.Array,
             num_tokens: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean negative log-likelihood of the completion tokens (`loss_mask`), normalised by `num_tokens`.

  Masked positions are removed with `where`, not multiplied by zero, so their logits get an exactly-zero gradient.
  """
  stats = batching.next_token_stats(lambda x: x, logits_NxTxV, tokens_NxT, chunk=logits_NxTxV.shape[1],
                                    accuracy=True)
  return sft_loss_from_stats(stats, loss_mask_NxT, num_tokens)


def sft_loss_from_stats(stats: batching.TokenStats, loss_mask_NxT: jax.Array,
                        num_tokens: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`sft_loss` from `batching.next_token_stats(..., accuracy=True)` (the train step's chunked LM head)."""
  nll_NxT = jnp.where(loss_mask_NxT, -stats.logprobs_NxT, 0.0)
  if num_tokens is None:
    num_tokens = loss_mask_NxT.sum()
  loss = nll_NxT.sum() / jnp.maximum(num_tokens, 1)
  accuracy = jnp.where(loss_mask_NxT, stats.correct_NxT, False).sum() / jnp.maximum(num_tokens, 1)
  return loss, {"loss": loss, "token_accuracy": accuracy}
