"""The atomic memory operations as fixed-shape integer arrays: op types, `OpBatch`, and the host-side encoder.

One turn of one trajectory holds at most O ops, applied in the order written. Each op carries a type, a target
("Memory i" as written, 1-based; 0 when the op has none), the op's text as token ids padded to W tokens
(`MemoryConfig.op_tokens`, the widest destination), its length, and a `valid` flag a parser clears for a malformed
op: such an op is counted in `invalid_ops_B` and does nothing else.
"""
from __future__ import annotations

from typing import Sequence

import flax.struct
import jax
import numpy as np

from atommem_jax import op_table
from atommem_jax.memory.config import MemoryConfig

# The op types and their names come from the op table (`atommem_jax.op_table.MEMORY_OPS`).
NOOP, SET_SCRATCHPAD, SET_QUERY, CREATE, UPDATE, DELETE = (op_table.NOOP, op_table.SET_SCRATCHPAD, op_table.SET_QUERY,
                                                           op_table.CREATE, op_table.UPDATE, op_table.DELETE)
NUM_OP_TYPES = op_table.NUM_MEMORY_OPS
OP_NAMES = op_table.MEMORY_OP_NAMES
TARGETED_OPS = op_table.TARGETED_MEMORY_OPS

# One op as the host hands it over: (type, target, token ids) or (type, target, token ids, valid).
HostOp = tuple[int, int, Sequence[int]] | tuple[int, int, Sequence[int], bool]


@flax.struct.dataclass
class OpBatch:
  """O ops per trajectory for B trajectories; every leaf has leading axes B x O."""

  type_BxO: jax.Array  # int32, one of the op-type constants (anything else is an invalid op)
  target_BxO: jax.Array  # int32, "Memory i" as written (1-based); 0 when none
  tokens_BxOxW: jax.Array  # int32, the op's text, padded with pad_id
  length_BxO: jax.Array  # int32, number of real tokens in tokens_BxOxW
  valid_BxO: jax.Array  # bool, False for an op the parser found malformed


def empty_ops(config: MemoryConfig, batch: int) -> OpBatch:
  """B rows of O no-ops (the padding a turn with fewer ops is filled with)."""
  o, w = config.max_ops_per_turn, config.op_tokens
  return OpBatch(
      type_BxO=np.full((batch, o), NOOP, np.int32),
      target_BxO=np.zeros((batch, o), np.int32),
      tokens_BxOxW=np.full((batch, o, w), config.pad_id, np.int32),
      length_BxO=np.zeros((batch, o), np.int32),
      valid_BxO=np.ones((batch, o), bool),
  )


def encode_ops(ops_per_trajectory: Sequence[Sequence[HostOp]], config: MemoryConfig) -> OpBatch:
  """Packs per-trajectory op lists into an `OpBatch` of numpy arrays (B = len(ops_per_trajectory)).

  Texts longer than W tokens are cut at W (the transitions cut them again at their destination's width). More than
  O ops in one trajectory is an error: the parser decides what to drop, not this packer.
  """
  batch = len(ops_per_trajectory)
  ops = empty_ops(config, batch)
  types, targets, tokens, lengths, valid = (ops.type_BxO, ops.target_BxO, ops.tokens_BxOxW, ops.length_BxO,
                                            ops.valid_BxO)
  for b, row in enumerate(ops_per_trajectory):
    if len(row) > config.max_ops_per_turn:
      raise ValueError(f"trajectory {b} has {len(row)} ops, more than max_ops_per_turn={config.max_ops_per_turn}")
    for o, op in enumerate(row):
      if len(op) not in (3, 4):
        raise ValueError(f"trajectory {b} op {o}: expected (type, target, token_ids[, valid]), got {op!r}")
      op_type, target, token_ids = op[0], op[1], np.asarray(op[2], np.int64).reshape(-1)
      if token_ids.size and (token_ids.min() < np.iinfo(np.int32).min or token_ids.max() > np.iinfo(np.int32).max):
        raise ValueError(f"trajectory {b} op {o}: token ids do not fit int32")
      n = min(token_ids.size, config.op_tokens)
      types[b, o] = int(op_type)
      targets[b, o] = int(target)
      tokens[b, o, :n] = token_ids[:n]
      lengths[b, o] = n
      valid[b, o] = bool(op[3]) if len(op) == 4 else True
  return ops
