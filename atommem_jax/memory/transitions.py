"""Pure memory transitions `state -> state`, batched over trajectories, jit-compilable, no host control flow.

Semantics (one op, one trajectory):
- SET_SCRATCHPAD / SET_QUERY: replace the text (cut at S / Q tokens). SET_QUERY re-embeds the query.
- CREATE: store the text (cut at E tokens) in the lowest empty slot. With storage full, `config.overflow` decides:
  "reject" refuses it; "evict_oldest" overwrites the entry created first (lowest entry id: the smallest created
  step, ties broken by creation order within the step, never by slot, since slots are reused); "evict_lru" overwrites
  the entry shown longest ago (smallest last-retrieved step, creation counting as a showing; ties by entry id).
  Every Create that meets full storage counts one overflow event.
- UPDATE / DELETE "Memory i": i is the 1-based position in the list shown at the last `retrieve`, the list the agent
  read this turn. It stays fixed for the whole turn: after "delete Memory 1", "Memory 2" still means the second
  entry shown, and an op naming an entry that is gone (deleted or evicted earlier in the turn, even if its slot now
  holds a new entry) is invalid. This is the released behaviour ("Memory i" is the position in the list the agent
  was shown this turn). UPDATE keeps the entry's id and creation step and re-embeds its text.
- With `config.spill="scann"` an entry a Create evicts is also returned (`TierUpdate`), for the caller to move
  to its host tier (`agent.memory_tiers`); the state itself is the same as without it.
- Invalid (counted in `invalid_ops_B`, nothing else changes): `valid=False`, unknown type, empty text for a text
  op, a target outside 1..K or naming no live shown entry. NOOP rows are padding and change nothing.

`embed_fn(tokens_NxT, lengths_N, is_query) -> unit embeddings_NxD` is static: a hashable callable (the hashing
embedder), or a closure built inside the caller's jitted function over traced parameters (the Qwen3 embedder).
"""
from __future__ import annotations

import functools
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp

from atommem_jax import op_table
from atommem_jax.memory import ops as op_lib
from atommem_jax.memory import retrieval
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.memory.state import MemoryState

EmbedFn = Callable[[jax.Array, jax.Array, bool], jax.Array]

_INT_MAX = jnp.iinfo(jnp.int32).max


@flax.struct.dataclass
class TierUpdate:
  """What one turn hands a host storage tier (`MemoryConfig.spill="scann"`), one row per op: the entry the op's
  Create evicted (`evicted_BxO` False where it evicted none), and the op's text embedded as an entry (what an
  Update of an entry that lives on the host is re-embedded with)."""

  evicted_BxO: jax.Array  # bool
  evicted_tokens_BxOxE: jax.Array  # int32, the evicted entry's tokens
  evicted_lengths_BxO: jax.Array  # int32
  evicted_embeddings_BxOxD: jax.Array  # float32
  evicted_ids_BxO: jax.Array  # int32, its entry id (creation counter), kept on the host
  entry_embeddings_BxOxD: jax.Array  # float32, every op's text as a stored entry would be embedded


def _masked_prefix(tokens_W: jax.Array, length: jax.Array, width: int, pad_id: int) -> tuple[jax.Array, jax.Array]:
  """The first `width` tokens with pad_id past the (clipped) length: the canonical stored form of a text."""
  length = jnp.clip(length, 0, width)
  prefix = tokens_W[:width]
  return jnp.where(jnp.arange(width) < length, prefix, pad_id), length


def _victim_slot(mem: MemoryState, config: MemoryConfig) -> jax.Array:
  """The live slot a Create overwrites when storage is full (only read when every slot is live)."""
  if config.overflow == "evict_lru":
    stale_M = jnp.where(mem.valid_BxM, mem.last_retrieved_step_BxM, _INT_MAX)
    candidates_M = mem.valid_BxM & (stale_M == stale_M.min())
  else:
    candidates_M = mem.valid_BxM
  return jnp.argmin(jnp.where(candidates_M, mem.entry_ids_BxM, _INT_MAX)).astype(jnp.int32)


def _apply_op(mem: MemoryState, op_type: jax.Array, target: jax.Array, tokens_W: jax.Array, length: jax.Array,
              op_valid: jax.Array, entry_embedding_D: jax.Array,
              config: MemoryConfig) -> tuple[MemoryState, jax.Array, tuple | None]:
  """One op on one trajectory (unbatched leaves). Returns the new memory, whether the query text changed, and (with
  `config.spill="scann"`) the entry it evicted as (evicted, tokens, length, embedding, entry id)."""
  k = mem.shown_slots_BxK.shape[0]
  text_length = jnp.clip(length, 0, tokens_W.shape[0])
  known = (op_type >= 0) & (op_type < op_lib.NUM_OP_TYPES)
  row = jnp.clip(op_type, 0, op_lib.NUM_OP_TYPES - 1)
  needs_text = known & jnp.asarray(op_table.MEMORY_NEEDS_TEXT_T)[row]
  targeted = known & jnp.asarray(op_table.MEMORY_TARGETED_T)[row]

  position = target - 1
  in_range = (position >= 0) & (position < k)
  position = jnp.clip(position, 0, k - 1)
  shown_slot = mem.shown_slots_BxK[position]
  target_slot = jnp.maximum(shown_slot, 0)
  target_live = (in_range & (shown_slot >= 0) & mem.valid_BxM[target_slot] &
                 (mem.entry_ids_BxM[target_slot] == mem.shown_entry_ids_BxK[position]))

  well_formed = op_valid & known & (~needs_text | (text_length > 0)) & (~targeted | target_live)
  invalid = ~well_formed
  do_scratchpad = well_formed & (op_type == op_lib.SET_SCRATCHPAD)
  do_query = well_formed & (op_type == op_lib.SET_QUERY)
  do_create = well_formed & (op_type == op_lib.CREATE)
  do_update = well_formed & (op_type == op_lib.UPDATE)
  do_delete = well_formed & (op_type == op_lib.DELETE)

  free_M = ~mem.valid_BxM
  has_free = free_M.any()
  overflow = do_create & ~has_free
  create_applied = do_create & (has_free | (config.overflow != "reject"))
  create_slot = jnp.where(has_free, jnp.argmax(free_M).astype(jnp.int32), _victim_slot(mem, config))

  # Create, Update and Delete each touch one slot, so one row write serves all three.
  slot = jnp.where(create_applied, create_slot, target_slot)
  touch = create_applied | do_update | do_delete
  write = create_applied | do_update
  entry_tokens_E, entry_length = _masked_prefix(tokens_W, text_length, config.entry_tokens, config.pad_id)
  step = mem.step_B
  evicted = None
  if config.spill == "scann":
    evicted = (overflow & create_applied, mem.entry_tokens_BxMxE[create_slot], mem.entry_lengths_BxM[create_slot],
               mem.entry_embeddings_BxMxD[create_slot], mem.entry_ids_BxM[create_slot])

  def put(array, new_value):
    return array.at[slot].set(jnp.where(touch, new_value, array[slot]))

  mem = mem.replace(
      entry_tokens_BxMxE=put(mem.entry_tokens_BxMxE, jnp.where(write, entry_tokens_E, config.pad_id)),
      entry_lengths_BxM=put(mem.entry_lengths_BxM, jnp.where(write, entry_length, 0)),
      entry_embeddings_BxMxD=put(mem.entry_embeddings_BxMxD, jnp.where(write, entry_embedding_D, 0.0)),
      valid_BxM=put(mem.valid_BxM, write),
      created_step_BxM=put(mem.created_step_BxM,
                           jnp.where(create_applied, step, jnp.where(do_update, mem.created_step_BxM[slot], -1))),
      last_retrieved_step_BxM=put(
          mem.last_retrieved_step_BxM,
          jnp.where(create_applied, step, jnp.where(do_update, mem.last_retrieved_step_BxM[slot], -1))),
      entry_ids_BxM=put(mem.entry_ids_BxM,
                        jnp.where(create_applied, mem.next_entry_id_B,
                                  jnp.where(do_update, mem.entry_ids_BxM[slot], -1))),
      next_entry_id_B=mem.next_entry_id_B + create_applied.astype(jnp.int32),
  )

  scratchpad_S, scratchpad_length = _masked_prefix(tokens_W, text_length, config.scratchpad_tokens, config.pad_id)
  query_Q, query_length = _masked_prefix(tokens_W, text_length, config.query_tokens, config.pad_id)
  applied = do_scratchpad | do_query | create_applied | do_update | do_delete
  mem = mem.replace(
      scratchpad_tokens_BxS=jnp.where(do_scratchpad, scratchpad_S, mem.scratchpad_tokens_BxS),
      scratchpad_length_B=jnp.where(do_scratchpad, scratchpad_length, mem.scratchpad_length_B),
      query_tokens_BxQ=jnp.where(do_query, query_Q, mem.query_tokens_BxQ),
      query_length_B=jnp.where(do_query, query_length, mem.query_length_B),
      op_counts_BxC=mem.op_counts_BxC.at[jnp.clip(op_type, 0, op_lib.NUM_OP_TYPES - 1)].add(
          applied.astype(jnp.int32)),
      invalid_ops_B=mem.invalid_ops_B + invalid.astype(jnp.int32),
      overflow_events_B=mem.overflow_events_B + overflow.astype(jnp.int32),
  )
  return mem, do_query, evicted


def _apply_ops_one(mem: MemoryState, type_O, target_O, tokens_OxW, length_O, valid_O, entry_embeddings_OxD,
                   config: MemoryConfig) -> tuple[MemoryState, jax.Array, tuple | None]:
  def body(carry, op):
    mem, query_changed = carry
    mem, changed, evicted = _apply_op(mem, *op, config=config)
    return (mem, query_changed | changed), evicted

  (mem, query_changed), evicted_O = jax.lax.scan(
      body, (mem, jnp.zeros((), bool)), (type_O, target_O, tokens_OxW, length_O, valid_O, entry_embeddings_OxD))
  return mem, query_changed, evicted_O


def _check_ops(state: MemoryState, ops: op_lib.OpBatch, config: MemoryConfig) -> None:
  b = state.step_B.shape[0]
  if ops.tokens_BxOxW.ndim != 3 or ops.tokens_BxOxW.shape[0] != b or ops.tokens_BxOxW.shape[2] != config.op_tokens:
    raise ValueError(f"OpBatch.tokens_BxOxW has shape {ops.tokens_BxOxW.shape}; expected (B={b}, O, "
                     f"W=config.op_tokens={config.op_tokens})")
  for name in ("type_BxO", "target_BxO", "length_BxO", "valid_BxO"):
    if getattr(ops, name).shape != ops.tokens_BxOxW.shape[:2]:
      raise ValueError(f"OpBatch.{name} has shape {getattr(ops, name).shape}; expected {ops.tokens_BxOxW.shape[:2]}")


def _embed_entries(tokens_BxOxW: jax.Array, length_BxO: jax.Array, embed_fn: EmbedFn,
                   config: MemoryConfig) -> jax.Array:
  """Entry embeddings of every op's text as it would be stored (cut at E), all ops of all trajectories at once."""
  b, o, _ = tokens_BxOxW.shape
  e = config.entry_tokens
  lengths_N = jnp.clip(length_BxO, 0, e).reshape(b * o)
  tokens_NxE = jnp.where(jnp.arange(e) < lengths_N[:, None], tokens_BxOxW[:, :, :e].reshape(b * o, e), config.pad_id)
  return embed_fn(tokens_NxE, lengths_N, False).reshape(b, o, -1)


def _refresh_query_embedding(state: MemoryState, changed_B: jax.Array, embed_fn: EmbedFn) -> MemoryState:
  query_BxD = embed_fn(state.query_tokens_BxQ, state.query_length_B, True)
  return state.replace(query_embedding_BxD=jnp.where(changed_B[:, None], query_BxD, state.query_embedding_BxD))


def _apply_ops(state: MemoryState, ops: op_lib.OpBatch, embed_fn: EmbedFn,
               config: MemoryConfig) -> tuple[MemoryState, TierUpdate | None]:
  _check_ops(state, ops, config)
  entry_embeddings_BxOxD = _embed_entries(ops.tokens_BxOxW, ops.length_BxO, embed_fn, config)
  apply_one = functools.partial(_apply_ops_one, config=config)
  state, query_changed_B, evicted = jax.vmap(apply_one)(
      state, ops.type_BxO, ops.target_BxO, ops.tokens_BxOxW, ops.length_BxO, ops.valid_BxO, entry_embeddings_BxOxD)
  state = _refresh_query_embedding(state, query_changed_B, embed_fn)
  tier = None if evicted is None else TierUpdate(*evicted, entry_embeddings_BxOxD=entry_embeddings_BxOxD)
  return state.replace(step_B=state.step_B + 1), tier


def apply_ops(state: MemoryState, ops: op_lib.OpBatch, embed_fn: EmbedFn, *, config: MemoryConfig) -> MemoryState:
  """One turn: the O ops of each trajectory in order (`lax.scan`), then `step_B += 1`.

  Entry texts are embedded for all B x O ops in one call before the scan; the query is embedded once after it,
  only where a SET_QUERY took effect (only the last query text of a turn is ever retrieved with).
  """
  return _apply_ops(state, ops, embed_fn, config)[0]


def _single_op(state: MemoryState, op_type: int, target_B: jax.Array | None, tokens_BxT: jax.Array | None,
               lengths_B: jax.Array | None, config: MemoryConfig) -> op_lib.OpBatch:
  """One op per trajectory as a width-1 `OpBatch` (texts padded or cut to W)."""
  b, w = state.step_B.shape[0], config.op_tokens
  if tokens_BxT is None:
    tokens_BxW, lengths_B = jnp.full((b, w), config.pad_id, jnp.int32), jnp.zeros((b,), jnp.int32)
  else:
    tokens_BxT = jnp.asarray(tokens_BxT, jnp.int32)
    t = tokens_BxT.shape[1]
    tokens_BxW = tokens_BxT[:, :w] if t >= w else jnp.pad(tokens_BxT, ((0, 0), (0, w - t)),
                                                         constant_values=config.pad_id)
    lengths_B = jnp.minimum(jnp.asarray(lengths_B, jnp.int32), w)
  target_B = jnp.zeros((b,), jnp.int32) if target_B is None else jnp.asarray(target_B, jnp.int32)
  return op_lib.OpBatch(
      type_BxO=jnp.full((b, 1), op_type, jnp.int32),
      target_BxO=target_B[:, None],
      tokens_BxOxW=tokens_BxW[:, None, :],
      length_BxO=lengths_B[:, None],
      valid_BxO=jnp.ones((b, 1), bool),
  )


def _apply_single(state: MemoryState, op_type: int, target_B: jax.Array | None, tokens_BxT: jax.Array | None,
                  lengths_B: jax.Array | None, embed_fn: EmbedFn | None, config: MemoryConfig) -> MemoryState:
  """A width-1 turn without the step increment: the standalone transitions share `apply_ops`'s op semantics."""
  ops = _single_op(state, op_type, target_B, tokens_BxT, lengths_B, config)
  if op_type in (op_lib.CREATE, op_lib.UPDATE):
    entry_embeddings_BxOxD = _embed_entries(ops.tokens_BxOxW, ops.length_BxO, embed_fn, config)
  else:
    entry_embeddings_BxOxD = jnp.zeros(ops.type_BxO.shape + (config.embed_dim,), jnp.float32)
  apply_one = functools.partial(_apply_ops_one, config=config)
  state, query_changed_B, _ = jax.vmap(apply_one)(
      state, ops.type_BxO, ops.target_BxO, ops.tokens_BxOxW, ops.length_BxO, ops.valid_BxO, entry_embeddings_BxOxD)
  if op_type == op_lib.SET_QUERY:
    state = _refresh_query_embedding(state, query_changed_B, embed_fn)
  return state


def create(state: MemoryState, tokens_BxT: jax.Array, lengths_B: jax.Array, embed_fn: EmbedFn, *,
           config: MemoryConfig) -> MemoryState:
  """Each trajectory stores one new entry (overflow per `config.overflow`)."""
  return _apply_single(state, op_lib.CREATE, None, tokens_BxT, lengths_B, embed_fn, config)


def update(state: MemoryState, target_B: jax.Array, tokens_BxT: jax.Array, lengths_B: jax.Array, embed_fn: EmbedFn,
           *, config: MemoryConfig) -> MemoryState:
  """Each trajectory rewrites the entry it was shown as "Memory target" (1-based)."""
  return _apply_single(state, op_lib.UPDATE, target_B, tokens_BxT, lengths_B, embed_fn, config)


def delete(state: MemoryState, target_B: jax.Array, *, config: MemoryConfig) -> MemoryState:
  """Each trajectory removes the entry it was shown as "Memory target" (1-based)."""
  return _apply_single(state, op_lib.DELETE, target_B, None, None, None, config)


def set_scratchpad(state: MemoryState, tokens_BxT: jax.Array, lengths_B: jax.Array, *,
                   config: MemoryConfig) -> MemoryState:
  return _apply_single(state, op_lib.SET_SCRATCHPAD, None, tokens_BxT, lengths_B, None, config)


def set_query(state: MemoryState, tokens_BxT: jax.Array, lengths_B: jax.Array, embed_fn: EmbedFn, *,
              config: MemoryConfig) -> MemoryState:
  """Replaces the query text and re-embeds it (`is_query=True`)."""
  return _apply_single(state, op_lib.SET_QUERY, None, tokens_BxT, lengths_B, embed_fn, config)


def retrieve(state: MemoryState, k: int | None = None, *,
             config: MemoryConfig) -> tuple[MemoryState, jax.Array, jax.Array]:
  """Top-k live entries for the current query: (state', slots_BxK, scores_BxK), best first, -1 / -inf padding.

  Records the shown list (what "Memory i" means until the next retrieval) and marks the shown entries retrieved
  at the current step. k (static) defaults to `config.top_k`, and may not exceed it.
  """
  k = config.top_k if k is None else k
  if not 1 <= k <= config.top_k:
    raise ValueError(f"retrieve k={k} must be in [1, config.top_k={config.top_k}]")
  slots_Bxk, scores_Bxk = retrieval.top_k(state.entry_embeddings_BxMxD, state.valid_BxM, state.query_embedding_BxD,
                                          k, config)
  b, m = state.valid_BxM.shape
  shown_slots_BxK = jnp.full((b, config.top_k), -1, jnp.int32).at[:, :k].set(slots_Bxk)
  shown_ids_BxK = jnp.where(shown_slots_BxK >= 0,
                            jnp.take_along_axis(state.entry_ids_BxM, jnp.maximum(shown_slots_BxK, 0), axis=1), -1)
  # Shown slots get the current step; -1 padding is sent out of range and dropped.
  rows_BxK = jnp.broadcast_to(jnp.arange(b)[:, None], shown_slots_BxK.shape)
  last_retrieved_BxM = state.last_retrieved_step_BxM.at[rows_BxK, jnp.where(shown_slots_BxK >= 0, shown_slots_BxK, m)]
  last_retrieved_BxM = last_retrieved_BxM.set(jnp.broadcast_to(state.step_B[:, None], shown_slots_BxK.shape),
                                              mode="drop")
  state = state.replace(shown_slots_BxK=shown_slots_BxK, shown_entry_ids_BxK=shown_ids_BxK,
                        last_retrieved_step_BxM=last_retrieved_BxM)
  return state, slots_Bxk, scores_Bxk


def turn(state: MemoryState, ops: op_lib.OpBatch, embed_fn: EmbedFn, *,
         config: MemoryConfig) -> tuple[MemoryState, jax.Array, jax.Array]:
  """The memory side of one agent turn: apply the ops, then retrieve what the next observation shows."""
  state = apply_ops(state, ops, embed_fn, config=config)
  return retrieve(state, config=config)


def turn_with_tier(state: MemoryState, ops: op_lib.OpBatch, embed_fn: EmbedFn, *,
                   config: MemoryConfig) -> tuple[MemoryState, jax.Array, jax.Array, TierUpdate]:
  """`turn`, also returning what a host storage tier needs of it (`TierUpdate`; needs `config.spill="scann"`)."""
  if config.spill != "scann":
    raise ValueError(f"turn_with_tier needs MemoryConfig.spill='scann', got {config.spill!r}")
  state, tier = _apply_ops(state, ops, embed_fn, config)
  state, slots_BxK, scores_BxK = retrieve(state, config=config)
  return state, slots_BxK, scores_BxK, tier
