"""One turn on device for any environment: its step gates the ops, the accepted ones change the memory, retrieval
refreshes what the next observation shows. Also the host side of it: parsed ops -> fixed-shape arrays.

An op the environment accepted can still be refused by the memory itself (a "Memory i" whose entry was evicted
earlier in the same turn, a Create into full storage under `overflow="reject"`); the memory's own counters
(`invalid_ops_B`, `overflow_events_B`) count those.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from atommem_jax import op_table
from atommem_jax.agent import protocol
from atommem_jax.agent.envs.base import TurnOps
from atommem_jax.memory import ops as memory_ops
from atommem_jax.memory import state as memory_state
from atommem_jax.memory import transitions
from atommem_jax.memory.config import MemoryConfig

# One compiled program instead of one dispatch per field.
init_memory = jax.jit(memory_state.init_memory, static_argnums=(0, 1))


# The memory is donated: without it every turn copies the whole store (36-42 ms vs 1.5 ms at 64 x 512 x 256).
@functools.partial(jax.jit, static_argnames=("step", "memory_config", "embed_fn"), donate_argnames=("memory",))
def transition(memory: memory_state.MemoryState, state: Any, ops: memory_ops.OpBatch, turn: TurnOps, params: Any, *,
               step: Callable, memory_config: MemoryConfig, embed_fn: transitions.EmbedFn):
  """(memory, env state) -> (memory, env state, step result) for the whole batch; `step` is the environment's."""
  state, result, ops = _gate(state, ops, turn, params, step)
  memory, _, _ = transitions.turn(memory, ops, embed_fn, config=memory_config)
  return memory, state, result


def _gate(state, ops: memory_ops.OpBatch, turn: TurnOps, params: Any, step: Callable):
  """The environment's step, and the ops it refused made memory no-ops."""
  state, result = step(state, turn, params)
  keep_BxO = result.accepted_BxO & (jnp.asarray(op_table.MEMORY_TYPE_K)[turn.kind_BxO] != memory_ops.NOOP)
  return state, result, ops.replace(type_BxO=jnp.where(keep_BxO, ops.type_BxO, memory_ops.NOOP))


@functools.partial(jax.jit, static_argnames=("step", "memory_config", "embed_fn"), donate_argnames=("memory",))
def transition_with_tier(memory: memory_state.MemoryState, state: Any, ops: memory_ops.OpBatch, turn: TurnOps,
                         params: Any, *, step: Callable, memory_config: MemoryConfig, embed_fn: transitions.EmbedFn):
  """`transition`, also returning the turn's `transitions.TierUpdate` for the host storage tier
  (`memory_config.spill="scann"`, `agent.memory_tiers`)."""
  state, result, ops = _gate(state, ops, turn, params, step)
  memory, _, _, tier = transitions.turn_with_tier(memory, ops, embed_fn, config=memory_config)
  return memory, state, result, tier


def fit_width(ops: list[protocol.Op], width: int) -> list[protocol.Op]:
  """The op arrays are O wide: what does not fit is dropped and counted as one invalid part."""
  if len(ops) <= width:
    return ops
  return ops[:width - 1] + [protocol.Op(kind=op_table.INVALID, valid=False,
                                        reason=f"{len(ops) - width + 1} ops past the per-turn limit of {width}")]


def turn_arrays(ops_per_row: Sequence[Sequence[protocol.Op]], acted_per_row: Sequence[bool], tokenizer: Any,
                config: MemoryConfig, on_device_per_row: Sequence[Sequence[bool]] | None = None
                ) -> tuple[memory_ops.OpBatch, TurnOps]:
  """Every row's ops (at most O, see `fit_width`; [] for a row not running) as the memory's `OpBatch` and the
  environment's `TurnOps` (padded with invalid ops). An op marked not on device (`on_device_per_row`: one that
  names an entry of the host tier) is still judged by the environment but is a no-op for the device memory."""
  width = config.max_ops_per_turn
  kind_BxO = np.zeros((len(ops_per_row), width), np.int32)
  valid_BxO = np.zeros((len(ops_per_row), width), bool)
  host_ops = []
  for b, ops in enumerate(ops_per_row):
    if len(ops) > width:
      raise ValueError(f"trajectory {b}: {len(ops)} ops exceed the op width {width}")
    for o, op in enumerate(ops):
      kind_BxO[b, o], valid_BxO[b, o] = op.kind, op.valid
    on_device = [True] * len(ops) if on_device_per_row is None else on_device_per_row[b]
    host_ops.append([(int(op_table.MEMORY_TYPE_K[op.kind]) if here else memory_ops.NOOP, op.target,
                      tokenizer.encode(op.text, add_special_tokens=False), op.valid)
                     for op, here in zip(ops, on_device)])
  turn = TurnOps(kind_BxO=kind_BxO, valid_BxO=valid_BxO, acted_B=np.asarray(acted_per_row, bool))
  return memory_ops.encode_ops(host_ops, config), turn
