"""The device memory with a host storage tier behind it (`MemoryConfig.spill="scann"`), as the host engine drives it.

The device store keeps its fixed capacity and its pure transitions; an entry its overflow policy evicts moves to the
row's namespace of a `memory.host_tier.HostTier` instead of being lost. Around each jitted transition, on the host:
- `view`: the entries shown are the K best of the device tier's top K and the host tier's top K for the current
  query embedding (`host_tier.merge_top_k`), numbered "Memory 1".."Memory K" in that merged order;
- `route`: a "Memory i" naming a device entry is rewritten to its position in the device's own shown list (what
  the device transition resolves); one naming a spilled entry becomes a no-op for the device, judged by the
  environment like any other op;
- `apply`: from what the transition returned (`transitions.TierUpdate`), the accepted Updates and Deletes of spilled
  entries are applied to the host tier (an Update re-embedded as the device embedded its text), then the entries
  the turn's Creates evicted are added to it.
An op naming an entry that a Create of the same response evicted earlier stays invalid, as without the tier.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from atommem_jax import op_table
from atommem_jax.agent import memory_view
from atommem_jax.agent.envs.base import MemoryView
from atommem_jax.memory import state as memory_state
from atommem_jax.memory import transitions
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.memory.host_tier import HostTier, merge_top_k


@dataclasses.dataclass(frozen=True)
class Shown:
  """One entry of the merged list: its text, id, and where it lives (its 1-based position in the device's shown
  list, or 0 on the host)."""

  text: str
  entry_id: int
  device_position: int


class TieredMemory:
  """The host side of a spilling memory for `num_rows` trajectories (one namespace each)."""

  def __init__(self, config: MemoryConfig, tokenizer: Any):
    if config.spill != "scann":
      raise ValueError(f"TieredMemory needs MemoryConfig.spill='scann', got {config.spill!r}")
    self.config, self.tokenizer = config, tokenizer
    self.host = HostTier(config)
    self.shown: dict[int, list[Shown]] = {}

  def _text(self, tokens: np.ndarray, length: int) -> str:
    return self.tokenizer.decode(np.asarray(tokens)[:int(length)].tolist())

  def refresh(self, memory: memory_state.MemoryState, rows: Sequence[int]) -> None:
    """Merges each row's device shown list with the host tier's top K (host copy of the memory, after retrieval)."""
    for row in rows:
      query_D = np.asarray(memory.query_embedding_BxD[row], np.float32)
      slots = [int(s) for s in np.asarray(memory.shown_slots_BxK[row]) if s >= 0]
      device_ids = [int(memory.entry_ids_BxM[row, s]) for s in slots]
      device_scores = [float(np.dot(memory.entry_embeddings_BxMxD[row, s], query_D)) for s in slots]
      host_ids, host_scores, host_texts = self.host.search(row, query_D, self.config.top_k)
      shown = []
      for on_device, j in merge_top_k(device_ids, device_scores, host_ids, host_scores, self.config.top_k):
        if on_device:
          slot = slots[j]
          shown.append(Shown(self._text(memory.entry_tokens_BxMxE[row, slot], memory.entry_lengths_BxM[row, slot]),
                             device_ids[j], j + 1))
        else:
          shown.append(Shown(host_texts[j], int(host_ids[j]), 0))
      self.shown[row] = shown

  def view(self, memory: memory_state.MemoryState, row: int) -> MemoryView:
    scratchpad, query = memory_view.scratchpad_and_query(memory, row, self.tokenizer)
    return MemoryView(scratchpad=scratchpad, query=query, entries=tuple(s.text for s in self.shown.get(row, ())))

  def route(self, row: int, ops: Sequence[Any]) -> tuple[list[Any], list[bool]]:
    """The row's ops with device targets rewritten, and whether each op is the device's to apply."""
    shown, routed, on_device = self.shown.get(row, []), [], []
    for op in ops:
      if op.valid and op.target > 0 and op.target <= len(shown) and not shown[op.target - 1].device_position:
        routed.append(op)
        on_device.append(False)
      elif op.valid and op.target > 0 and op.target <= len(shown):
        routed.append(dataclasses.replace(op, target=shown[op.target - 1].device_position))
        on_device.append(True)
      else:
        routed.append(op)
        on_device.append(True)
    return routed, on_device

  def apply(self, rows: Sequence[int], ops: dict[int, list[Any]], on_device: dict[int, list[bool]],
            accepted_BxO: np.ndarray, tier: transitions.TierUpdate) -> None:
    """The turn's effects on the host tier (host copies of the step result and `TierUpdate`)."""
    for row in rows:
      shown = self.shown.get(row, [])
      for o, (op, here) in enumerate(zip(ops[row], on_device[row])):
        if here or not accepted_BxO[row, o]:
          continue
        entry_id = shown[op.target - 1].entry_id
        if op_table.MEMORY_TYPE_K[op.kind] == op_table.DELETE:
          self.host.delete(row, entry_id)
        elif op_table.MEMORY_TYPE_K[op.kind] == op_table.UPDATE:
          ids = self.tokenizer.encode(op.text, add_special_tokens=False)[:self.config.entry_tokens]
          self.host.update(row, entry_id, tier.entry_embeddings_BxOxD[row, o], self.tokenizer.decode(ids))
      evicted = np.flatnonzero(np.asarray(tier.evicted_BxO[row]))
      self.host.spill(row, [int(tier.evicted_ids_BxO[row, o]) for o in evicted],
                      np.asarray(tier.evicted_embeddings_BxOxD[row, evicted], np.float32),
                      [self._text(tier.evicted_tokens_BxOxE[row, o], tier.evicted_lengths_BxO[row, o])
                       for o in evicted])

  def storage(self, memory: memory_state.MemoryState, row: int) -> list[str]:
    """Every entry of both tiers in creation order."""
    live = [int(s) for s in np.flatnonzero(np.asarray(memory.valid_BxM[row]))]
    device = [(int(memory.entry_ids_BxM[row, s]),
               self._text(memory.entry_tokens_BxMxE[row, s], memory.entry_lengths_BxM[row, s])) for s in live]
    return [text for _, text in sorted(device + self.host.entries(row))]

  def size(self, memory: memory_state.MemoryState, row: int) -> int:
    return int(np.asarray(memory.valid_BxM[row]).sum()) + self.host.size(row)
