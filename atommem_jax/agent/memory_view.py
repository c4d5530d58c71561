"""The memory state as text: what an observation shows of it, and the initial query.

The memory holds token ids; the host decodes the entries shown at the last retrieval (`shown_slots_BxK`) into the
`Memory i:` lines, so "Memory i" in the next response names exactly what was displayed. Every function here reads a
host copy of the state (`jax.device_get`), except `set_initial_query`.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import numpy as np

from atommem_jax.agent.envs.base import MemoryView
from atommem_jax.memory import state as memory_state
from atommem_jax.memory import transitions
from atommem_jax.memory.config import MemoryConfig


@functools.partial(jax.jit, static_argnames=("embed_fn", "config"))
def _query_and_retrieve(memory: memory_state.MemoryState, tokens_BxQ: jax.Array, lengths_B: jax.Array,
                        embed_fn: transitions.EmbedFn, config: MemoryConfig) -> memory_state.MemoryState:
  memory = transitions.set_query(memory, tokens_BxQ, lengths_B, embed_fn, config=config)
  memory, _, _ = transitions.retrieve(memory, config=config)
  return memory


def set_initial_query(memory: memory_state.MemoryState, queries: Sequence[str], tokenizer: Any,
                      embed_fn: transitions.EmbedFn, config: MemoryConfig) -> memory_state.MemoryState:
  """Every row starts with its query set and retrieved with (not one of the agent's Reads)."""
  tokens_BxQ = np.zeros((len(queries), config.query_tokens), np.int32)
  lengths_B = np.zeros((len(queries),), np.int32)
  for b, query in enumerate(queries):
    ids = tokenizer.encode(query, add_special_tokens=False)[:config.query_tokens]
    tokens_BxQ[b, :len(ids)], lengths_B[b] = ids, len(ids)
  return _query_and_retrieve(memory, tokens_BxQ, lengths_B, embed_fn, config)


def _text(tokenizer: Any, tokens: np.ndarray, length: int) -> str:
  return tokenizer.decode(tokens[:int(length)].tolist())


def shown_entries(memory: memory_state.MemoryState, row: int, tokenizer: Any) -> list[str]:
  """The entries shown at the last retrieval, in rank order ("Memory 1" first)."""
  out = []
  for slot in np.asarray(memory.shown_slots_BxK[row]):
    if slot < 0:
      break
    out.append(_text(tokenizer, memory.entry_tokens_BxMxE[row, slot], memory.entry_lengths_BxM[row, slot]))
  return out


def scratchpad_and_query(memory: memory_state.MemoryState, row: int, tokenizer: Any) -> tuple[str, str]:
  return (_text(tokenizer, memory.scratchpad_tokens_BxS[row], memory.scratchpad_length_B[row]),
          _text(tokenizer, memory.query_tokens_BxQ[row], memory.query_length_B[row]))


def storage_in_creation_order(memory: memory_state.MemoryState, row: int, tokenizer: Any) -> list[str]:
  live = [int(s) for s in np.flatnonzero(np.asarray(memory.valid_BxM[row]))]
  live.sort(key=lambda s: int(memory.entry_ids_BxM[row, s]))
  return [_text(tokenizer, memory.entry_tokens_BxMxE[row, s], memory.entry_lengths_BxM[row, s]) for s in live]


def memory_view(memory: memory_state.MemoryState, row: int, tokenizer: Any) -> MemoryView:
  scratchpad, query = scratchpad_and_query(memory, row, tokenizer)
  return MemoryView(scratchpad=scratchpad, query=query, entries=tuple(shown_entries(memory, row, tokenizer)))
