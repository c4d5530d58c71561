"""The agent memory: a fixed-shape pytree per trajectory, pure jitted CRUD transitions, retrieval, embedders, and a
host ScaNN store for memories too large for the device (the storage tier evicted entries spill to).

Public API:
  MemoryConfig                                  -- shapes (M, E, S, Q, D, K, O) and policies (overflow, retrieval,
                                                   spill: "none" | "scann")
  MemoryState, init_memory(config, batch)       -- the pytree (leading batch axis on every leaf)
  state_sharding(state, mesh), logical_axes     -- per-leaf shardings from the logical-axis table
  ops: NOOP, SET_SCRATCHPAD, SET_QUERY, CREATE, UPDATE, DELETE, NUM_OP_TYPES, OP_NAMES,
       OpBatch(type_BxO, target_BxO, tokens_BxOxW, length_BxO, valid_BxO), encode_ops(ops, config), empty_ops
  transitions (all pure, batched, jit-compilable; `config` and `embed_fn` static):
       apply_ops(state, ops, embed_fn, *, config) -> state          O ops in order (lax.scan), then step + 1
       retrieve(state, k=None, *, config) -> (state, slots_BxK, scores_BxK)
       turn(state, ops, embed_fn, *, config) -> (state, slots_BxK, scores_BxK)   apply_ops, then retrieve
       turn_with_tier(...) -> (state, slots_BxK, scores_BxK, TierUpdate)   the same, plus what a host tier needs:
                                                   the entries the Creates evicted, every op's entry embedding
       create / update / delete / set_scratchpad / set_query         one op per trajectory
  retrieval.top_k, retrieval.recall             -- exact (`lax.top_k`) / approximate (`lax.approx_max_k`) top-k
  embedders: HashingEmbedder(dim), hash_embed_numpy, Qwen3EmbedderConfig(.for_tokenizer: the one retrieval
             instruction and pooled token), Qwen3Embedder(model, config), make_qwen3_embed_fn(model, config),
             splice_left_padded
  scann_store: ScannStore(ScannStoreConfig), .add/.upsert/.delete/.search/.ids/.save/ScannStore.load, exact_top_k
  host_tier: HostTier(config) (one ScannStore namespace per trajectory: spill/update/delete/search/entries),
             merge_top_k(device ids/scores, host ids/scores, k)

"Memory i" in an Update/Delete is the 1-based position in the list shown at the last `retrieve` (the list the
agent read this turn); it stays fixed for the whole turn, and naming an entry deleted or evicted earlier in the turn
is an invalid op. See transitions.py for the full op semantics.
"""
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.memory.ops import (CREATE, DELETE, NOOP, NUM_OP_TYPES, OP_NAMES, SET_QUERY, SET_SCRATCHPAD, UPDATE,
                                    OpBatch, empty_ops, encode_ops)
from atommem_jax.memory.state import MemoryState, init_memory, logical_axes, state_sharding
from atommem_jax.memory.transitions import (apply_ops, create, delete, retrieve, set_query, set_scratchpad, turn,
                                            update)

__all__ = ["MemoryConfig", "CREATE", "DELETE", "NOOP", "NUM_OP_TYPES", "OP_NAMES", "SET_QUERY", "SET_SCRATCHPAD",
           "UPDATE", "OpBatch", "empty_ops", "encode_ops", "MemoryState", "init_memory", "logical_axes",
           "state_sharding", "apply_ops", "create", "delete", "retrieve", "set_query", "set_scratchpad", "turn",
           "update"]
