"""The sampling law: greedy, temperature, top-k and top-p draws from a batch of logits, one key per row.

The order of the transformations follows HF `generate`: temperature first, then top-k, then top-p on the
renormalised top-k distribution. Truncation works in the sorted (rank) space, so ties at the top-k boundary are cut
by rank and exactly k tokens survive.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def truncated_logits(logits_BxV: jax.Array, *, temperature: float, top_k: int,
                     top_p: float) -> tuple[jax.Array, jax.Array | None]:
  """Tempered logits of the sampling distribution, and the vocabulary ids they refer to.

  Returns `(logits_BxC, ids_BxC)`: with top-k and/or top-p active, C is the number of candidates kept in rank order
  (k, or V for top-p alone) with dropped candidates at -inf and `ids_BxC` mapping back to the vocabulary; otherwise
  C == V and `ids_BxC` is None (the identity).
  """
  scaled_BxV = logits_BxV.astype(jnp.float32) / temperature
  vocab = scaled_BxV.shape[-1]
  if top_k == 0 and top_p >= 1.0:
    return scaled_BxV, None
  keep = min(top_k, vocab) if top_k > 0 else vocab
  values_BxC, ids_BxC = jax.lax.top_k(scaled_BxV, keep)
  if top_p < 1.0:
    probs_BxC = jax.nn.softmax(values_BxC, axis=-1)
    mass_before_BxC = jnp.cumsum(probs_BxC, axis=-1) - probs_BxC
    # The most likely token always survives (its mass before is 0), so no row is left empty.
    values_BxC = jnp.where(mass_before_BxC < top_p, values_BxC, -jnp.inf)
  return values_BxC, ids_BxC


def sample_tokens(logits_BxV: jax.Array, keys_B: jax.Array, *, greedy: bool, temperature: float, top_k: int,
                  top_p: float) -> tuple[jax.Array, jax.Array]:
  """Draws one token per row with that row's key.

  Returns `(tokens_B, sampling_logprobs_B)`: the log-probability of each drawn token under the distribution it was
  drawn from (tempered and truncated); 0 for greedy, whose sampling distribution is a point mass.
  """
  if greedy:
    tokens_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    return tokens_B, jnp.zeros(tokens_B.shape, jnp.float32)
  cand_logits_BxC, cand_ids_BxC = truncated_logits(logits_BxV, temperature=temperature, top_k=top_k, top_p=top_p)
  choice_B = jax.vmap(jax.random.categorical)(keys_B, cand_logits_BxC).astype(jnp.int32)
  cand_logprobs_BxC = jax.nn.log_softmax(cand_logits_BxC, axis=-1)
  sampling_logprobs_B = jnp.take_along_axis(cand_logprobs_BxC, choice_B[:, None], axis=-1)[:, 0]
  if cand_ids_BxC is None:
    return choice_B, sampling_logprobs_B
  tokens_B = jnp.take_along_axis(cand_ids_BxC, choice_B[:, None], axis=-1)[:, 0].astype(jnp.int32)
  return tokens_B, sampling_logprobs_B


def token_logprobs(logits_BxV: jax.Array, tokens_B: jax.Array, temperature: float = 1.0) -> jax.Array:
  """log pi_T(token) under softmax(logits / temperature), untruncated, in float32: the policy GRPO trains, pi_old."""
  logprobs_BxV = jax.nn.log_softmax(logits_BxV.astype(jnp.float32) / temperature, axis=-1)
  return jnp.take_along_axis(logprobs_BxV, tokens_B[:, None], axis=-1)[:, 0]
