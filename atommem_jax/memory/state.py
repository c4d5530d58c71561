"""`MemoryState`: one agent memory per trajectory as a pytree of fixed-shape arrays (leading batch axis B).

Storage is M slots of E tokens with unit embeddings; a slot is live when `valid_BxM`. Slots are reused after a
Delete or eviction, so slot order says nothing about age: `entry_ids_BxM` (a per-trajectory creation counter, -1 on
an empty slot) does. Retrieval records which entries it showed (`shown_slots_BxK`, and their entry ids in
`shown_entry_ids_BxK`) so that "Memory i" written by the agent resolves to the entry it was shown, even if that slot
was emptied and refilled earlier in the same turn.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from atommem_jax import sharding
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.memory.ops import NUM_OP_TYPES


@flax.struct.dataclass
class MemoryState:
  # long-term storage
  entry_tokens_BxMxE: jax.Array  # int32, pad_id past each entry's length
  entry_lengths_BxM: jax.Array  # int32, 0 on empty slots
  entry_embeddings_BxMxD: jax.Array  # float32, unit norm on live slots, 0 on empty ones
  valid_BxM: jax.Array  # bool
  created_step_BxM: jax.Array  # int32, `step_B` at creation; -1 on empty slots
  last_retrieved_step_BxM: jax.Array  # int32, `step_B` when last shown (creation counts); -1 on empty slots
  entry_ids_BxM: jax.Array  # int32, creation counter; -1 on empty slots
  next_entry_id_B: jax.Array  # int32, the id the next Create gets
  # short-term scratchpad, always shown
  scratchpad_tokens_BxS: jax.Array
  scratchpad_length_B: jax.Array
  # retrieval query
  query_tokens_BxQ: jax.Array
  query_length_B: jax.Array
  query_embedding_BxD: jax.Array  # unit norm once a query is set, 0 before
  # what the agent was shown at the last retrieval ("Memory i" is position i - 1 here)
  shown_slots_BxK: jax.Array  # int32, -1 where fewer than K entries were shown
  shown_entry_ids_BxK: jax.Array  # int32, entry id of each shown slot at show time, -1 for none
  step_B: jax.Array  # int32, turns applied so far
  # counters
  op_counts_BxC: jax.Array  # int32, ops applied by type, C = NUM_OP_TYPES (the NOOP column stays 0)
  invalid_ops_B: jax.Array  # int32
  overflow_events_B: jax.Array  # int32, Creates that found storage full (rejected or evicting)


def init_memory(config: MemoryConfig, batch: int) -> MemoryState:
  """An empty memory for `batch` trajectories."""
  b, m, k, d = batch, config.capacity, config.top_k, config.embed_dim
  i32 = jnp.int32
  return MemoryState(
      entry_tokens_BxMxE=jnp.full((b, m, config.entry_tokens), config.pad_id, i32),
      entry_lengths_BxM=jnp.zeros((b, m), i32),
      entry_embeddings_BxMxD=jnp.zeros((b, m, d), jnp.float32),
      valid_BxM=jnp.zeros((b, m), bool),
      created_step_BxM=jnp.full((b, m), -1, i32),
      last_retrieved_step_BxM=jnp.full((b, m), -1, i32),
      entry_ids_BxM=jnp.full((b, m), -1, i32),
      next_entry_id_B=jnp.zeros((b,), i32),
      scratchpad_tokens_BxS=jnp.full((b, config.scratchpad_tokens), config.pad_id, i32),
      scratchpad_length_B=jnp.zeros((b,), i32),
      query_tokens_BxQ=jnp.full((b, config.query_tokens), config.pad_id, i32),
      query_length_B=jnp.zeros((b,), i32),
      query_embedding_BxD=jnp.zeros((b, d), jnp.float32),
      shown_slots_BxK=jnp.full((b, k), -1, i32),
      shown_entry_ids_BxK=jnp.full((b, k), -1, i32),
      step_B=jnp.zeros((b,), i32),
      op_counts_BxC=jnp.zeros((b, NUM_OP_TYPES), i32),
      invalid_ops_B=jnp.zeros((b,), i32),
      overflow_events_B=jnp.zeros((b,), i32),
  )


def logical_axes(state: MemoryState) -> MemoryState:
  """The logical axis names of every leaf (batch first), for `sharding.ShardingRules`."""
  names = {
      "entry_tokens_BxMxE": ("batch", "memory_slots", "entry_tokens"),
      "entry_embeddings_BxMxD": ("batch", "memory_slots", "embed_dim"),
      "query_embedding_BxD": ("batch", "embed_dim"),
  }
  return state.replace(**{
      field: names.get(field, ("batch",) + (None,) * (getattr(state, field).ndim - 1))
      for field in state.__dataclass_fields__
  })


def state_sharding(state: MemoryState, mesh: Mesh,
                   rules: sharding.ShardingRules = sharding.DEFAULT_RULES) -> MemoryState:
  """`NamedSharding` per leaf: trajectories split over the batch mesh axes, each memory kept whole on its device."""
  axes = logical_axes(state)
  return jax.tree.map(lambda a: rules.named(mesh, a), axes, is_leaf=lambda x: isinstance(x, tuple))
