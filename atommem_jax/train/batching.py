"""Packing turns into fixed-shape training batches, and per-token log-probabilities.

A row is one (prompt + response) sequence, right-padded to the smallest of a few bucket lengths so the jitted step
compiles once per bucket. `loss_mask` is True on response tokens only. Per-token arrays are aligned with `tokens`:
entry t of `old_logprobs` is log p(tokens[t] | tokens[:t]), so the first token of a row never carries loss.

Training never holds [N, T, V] logits for rows longer than one chunk: `next_token_stats` applies the LM head to
final hidden states a chunk of positions at a time, under remat.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


@flax.struct.dataclass
class TrainBatch:
  """One mini-batch of N rows of T tokens (numpy on the host, jax.Array inside the step)."""

  tokens_NxT: np.ndarray | jax.Array  # int32, right-padded with pad_id
  positions_NxT: np.ndarray | jax.Array  # int32, 0.. on real tokens
  mask_NxT: np.ndarray | jax.Array  # bool, True on real tokens
  loss_mask_NxT: np.ndarray | jax.Array  # bool, True on response tokens of valid rows
  old_logprobs_NxT: np.ndarray | jax.Array  # float32, the sampler's logprobs on response tokens
  ref_logprobs_NxT: np.ndarray | jax.Array  # float32, the frozen reference's logprobs (filled by the loop)
  advantage_N: np.ndarray | jax.Array  # float32, the trajectory advantage of the row's turn

  @property
  def shape(self) -> tuple[int, int]:
    return tuple(self.tokens_NxT.shape)


def bucket_length(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket that holds `length` tokens."""
  for bucket in sorted(buckets):
    if length <= bucket:
      return bucket
  raise ValueError(f"a row of {length} tokens does not fit the largest bucket {max(buckets)}")


def pack_rows(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], *, buckets: Sequence[int],
              pad_id: int, num_rows: int | None = None, response_logprobs: Sequence[Sequence[float]] | None = None,
              advantages: Sequence[float] | None = None, row_valid: Sequence[bool] | None = None
              ) -> tuple[TrainBatch, dict[str, int]]:
  """Packs (prompt, response) pairs into one right-padded batch of `num_rows` rows (padding rows carry no loss).

  A row longer than the largest bucket keeps its whole response and loses the start of its prompt (counted in the
  returned stats as `truncated_rows`); a response alone longer than the largest bucket is an error naming the row.
  """
  n = len(prompt_ids)
  if len(response_ids) != n:
    raise ValueError(f"{n} prompts but {len(response_ids)} responses")
  num_rows = n if num_rows is None else num_rows
  if num_rows < n:
    raise ValueError(f"{n} rows do not fit a batch of {num_rows}")
  max_bucket = max(buckets)
  truncated = 0
  rows = []
  for i, (prompt, response) in enumerate(zip(prompt_ids, response_ids)):
    prompt, response = list(prompt), list(response)
    if len(response) + 1 > max_bucket:
      raise ValueError(f"row {i}: response of {len(response)} tokens leaves no room for a prompt in bucket {max_bucket}")
    if len(prompt) + len(response) > max_bucket:
      prompt = prompt[len(prompt) + len(response) - max_bucket:]
      truncated += 1
    if not prompt:
      raise ValueError(f"row {i}: empty prompt (the first token of a row cannot be scored)")
    if response_logprobs is not None and len(response_logprobs[i]) != len(response):
      raise ValueError(f"row {i}: {len(response_logprobs[i])} logprobs for {len(response)} response tokens")
    rows.append((prompt, response))
  length = bucket_length(max((len(p) + len(r) for p, r in rows), default=1), buckets)

  tokens = np.full((num_rows, length), pad_id, np.int32)
  positions = np.zeros((num_rows, length), np.int32)
  mask = np.zeros((num_rows, length), bool)
  loss_mask = np.zeros((num_rows, length), bool)
  old_logprobs = np.zeros((num_rows, length), np.float32)
  advantage = np.zeros((num_rows,), np.float32)
  for i, (prompt, response) in enumerate(rows):
    p, r = len(prompt), len(response)
    tokens[i, :p + r] = prompt + response
    positions[i, :p + r] = np.arange(p + r)
    mask[i, :p + r] = True
    loss_mask[i, p:p + r] = True if row_valid is None else bool(row_valid[i])
    if response_logprobs is not None:
      old_logprobs[i, p:p + r] = response_logprobs[i]
    if advantages is not None:
      advantage[i] = advantages[i]
  batch = TrainBatch(tokens_NxT=tokens, positions_NxT=positions, mask_NxT=mask, loss_mask_NxT=loss_mask,
                     old_logprobs_NxT=old_logprobs, ref_logprobs_NxT=np.zeros_like(old_logprobs),
                     advantage_N=advantage)
  return batch, {"truncated_rows": truncated, "rows": n, "length": length}


def tempered(logits: jax.Array, temperature: float) -> jax.Array:
  return logits if temperature == 1.0 else logits.astype(jnp.float32) / temperature


@flax.struct.dataclass
class TokenStats:
  """Per-token statistics aligned like `token_logprobs` (entry 0 is 0 / False); absent ones are None."""

  logprobs_NxT: jax.Array  # log p(tokens[t] | tokens[:t]) under softmax(logits / temperature)
  entropy_NxT: jax.Array | None = None  # entropy of the distribution that predicted token t
  correct_NxT: jax.Array | None = None  # whether token t is that distribution's argmax


def next_token_stats(logits_fn: Callable[[jax.Array], jax.Array], h_NxTxD: jax.Array, tokens_NxT: jax.Array, *,
                     chunk: int, temperature: float = 1.0, entropy: bool = False,
                     accuracy: bool = False) -> TokenStats:
  """Next-token statistics from final hidden states, `logits_fn` (the LM head) applied to `chunk` positions at a
  time.

  A row of at most `chunk` tokens is one chunk, computed exactly as from whole logits. Longer rows scan over chunks
  of the shifted sequence, each chunk's logits recomputed in the backward pass: memory holds [N, chunk, V] logits
  at most, and the results equal the one-chunk ones to float rounding.
  """
  n, t, d = h_NxTxD.shape
  if t <= chunk:
    logits_NxTxV = tempered(logits_fn(h_NxTxD), temperature)
    correct_NxT = None
    if accuracy:
      correct_NxT = jnp.pad(jnp.argmax(logits_NxTxV[:, :-1], axis=-1) == tokens_NxT[:, 1:], ((0, 0), (1, 0)))
    return TokenStats(token_logprobs(logits_NxTxV, tokens_NxT),
                      shifted_entropy(logits_NxTxV) if entropy else None, correct_NxT)

  chunks = -(-(t - 1) // chunk)
  pad = chunks * chunk - (t - 1)
  h_NxPxD = jnp.pad(h_NxTxD[:, :-1], ((0, 0), (0, pad), (0, 0)))
  targets_NxP = jnp.pad(tokens_NxT[:, 1:], ((0, 0), (0, pad)))
  h_CxNxQxD = h_NxPxD.reshape(n, chunks, chunk, d).transpose(1, 0, 2, 3)
  targets_CxNxQ = targets_NxP.reshape(n, chunks, chunk).transpose(1, 0, 2)

  @functools.partial(jax.checkpoint, prevent_cse=False)
  def one_chunk(h_NxQxD, targets_NxQ):
    logits_NxQxV = tempered(logits_fn(h_NxQxD), temperature).astype(jnp.float32)
    log_probs_NxQxV = jax.nn.log_softmax(logits_NxQxV, axis=-1)
    out = {"logprobs": jnp.take_along_axis(log_probs_NxQxV, targets_NxQ[..., None], axis=-1)[..., 0]}
    if entropy:
      out["entropy"] = -jnp.sum(jnp.exp(log_probs_NxQxV) * log_probs_NxQxV, axis=-1)
    if accuracy:
      out["correct"] = jnp.argmax(logits_NxQxV, axis=-1) == targets_NxQ
    return out

  _, out = jax.lax.scan(lambda _, xs: (None, one_chunk(*xs)), None, (h_CxNxQxD, targets_CxNxQ))
  # [C, N, Q] -> [N, T]: chunks back in sequence order, the padding cut, entry 0 (nothing predicts it) filled.
  aligned = lambda x_CxNxQ: jnp.pad(x_CxNxQ.transpose(1, 0, 2).reshape(n, chunks * chunk)[:, :t - 1],
                                    ((0, 0), (1, 0)))
  return TokenStats(aligned(out["logprobs"]), aligned(out["entropy"]) if entropy else None,
                    aligned(out["correct"]) if accuracy else None)


def token_logprobs(logits_NxTxV: jax.Array, tokens_NxT: jax.Array) -> jax.Array:
  """log p(tokens[t] | tokens[:t]) at every t >= 1 (entry 0 is 0), computed in float32."""
  logits_NxTxV = logits_NxTxV[:, :-1].astype(jnp.float32)
  targets_NxT = tokens_NxT[:, 1:]
  target_logits_NxT = jnp.take_along_axis(logits_NxTxV, targets_NxT[..., None], axis=-1)[..., 0]
  logprobs_NxT = target_logits_NxT - jax.nn.logsumexp(logits_NxTxV, axis=-1)
  return jnp.pad(logprobs_NxT, ((0, 0), (1, 0)))


def shifted_entropy(logits_NxTxV: jax.Array) -> jax.Array:
  """Entropy of the distribution that predicted token t, aligned like `token_logprobs`."""
  log_probs = jax.nn.log_softmax(logits_NxTxV[:, :-1].astype(jnp.float32), axis=-1)
  entropy_NxT = -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)
  return jnp.pad(entropy_NxT, ((0, 0), (1, 0)))


def split_microbatches(batch: TrainBatch, num_microbatches: int) -> TrainBatch:
  """[N, ...] -> [num_microbatches, N / num_microbatches, ...] for the accumulation scan."""
  n = batch.tokens_NxT.shape[0]
  if n % num_microbatches:
    raise ValueError(f"a batch of {n} rows does not split into {num_microbatches} micro-batches")
  return jax.tree.map(lambda x: x.reshape((num_microbatches, n // num_microbatches) + x.shape[1:]), batch)
