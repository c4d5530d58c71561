"""In-graph top-k over a trajectory's storage: dot-product scores of unit embeddings, empty slots never returned.

Exact retrieval is `jax.lax.top_k`, which puts the lower index first among equal values, so ties go to the lower
slot. Approximate retrieval is `jax.lax.approx_max_k` (a partial reduction on TPU; XLA lowers it to an exact top-k on
CPU and GPU); its k results are re-sorted by (score descending, slot ascending) so the order is as deterministic as
the exact path. Fewer than k live slots: the remaining positions hold slot -1 and score -inf. Before any query is
set the query embedding is zero, every live entry scores 0, and the lowest live slots are shown.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from atommem_jax.memory.config import MemoryConfig


def scores(embeddings_BxMxD: jax.Array, valid_BxM: jax.Array, query_BxD: jax.Array) -> jax.Array:
  """Dot products of each slot with the query; -inf on empty slots."""
  dots_BxM = jnp.einsum("bmd,bd->bm", embeddings_BxMxD, query_BxD, precision=jax.lax.Precision.HIGHEST)
  return jnp.where(valid_BxM, dots_BxM, -jnp.inf)


def top_k(embeddings_BxMxD: jax.Array, valid_BxM: jax.Array, query_BxD: jax.Array, k: int,
          config: MemoryConfig) -> tuple[jax.Array, jax.Array]:
  """(slots_BxK, scores_BxK) of the k best live slots, best first; -1 / -inf past the live ones."""
  m = valid_BxM.shape[-1]
  if not 1 <= k <= m:
    raise ValueError(f"retrieval k={k} must be in [1, capacity={m}]")
  scores_BxM = scores(embeddings_BxMxD, valid_BxM, query_BxD)
  if config.retrieval == "exact":
    top_scores_BxK, slots_BxK = jax.lax.top_k(scores_BxM, k)
  else:
    top_scores_BxK, slots_BxK = jax.lax.approx_max_k(scores_BxM, k, recall_target=config.approx_recall_target)
    top_scores_BxK, slots_BxK = jax.lax.sort((-top_scores_BxK, slots_BxK.astype(jnp.int32)), num_keys=2)
    top_scores_BxK = -top_scores_BxK
  slots_BxK = slots_BxK.astype(jnp.int32)
  live_BxK = jnp.take_along_axis(valid_BxM, slots_BxK, axis=-1)
  return jnp.where(live_BxK, slots_BxK, -1), jnp.where(live_BxK, top_scores_BxK, -jnp.inf)


def recall(found_slots_BxK: jax.Array, exact_slots_BxK: jax.Array) -> jax.Array:
  """Fraction of the exact result's live slots that `found` also returned (1.0 when exact returned none)."""
  live_BxK = exact_slots_BxK >= 0
  hit_BxK = (exact_slots_BxK[:, :, None] == found_slots_BxK[:, None, :]).any(-1) & live_BxK
  return hit_BxK.sum() / jnp.maximum(live_BxK.sum(), 1)
