"""`MemoryConfig`: the fixed shapes and policies of one agent memory (built with `configlib.from_dict`)."""
from __future__ import annotations

import dataclasses
from typing import Literal

OverflowPolicy = Literal["reject", "evict_oldest", "evict_lru"]
RetrievalMode = Literal["exact", "approx"]
SpillTier = Literal["none", "scann"]


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
  """Shapes and policies of the per-trajectory memory.

  Every array in `MemoryState` has a shape fixed by these numbers, so one compiled transition serves every turn.
  The config is hashable and is passed to the jitted transitions as a static argument.
  """

  capacity: int = 64  # M storage slots
  entry_tokens: int = 64  # E tokens per storage entry
  scratchpad_tokens: int = 256  # S
  query_tokens: int = 64  # Q
  embed_dim: int = 256  # D
  top_k: int = 6  # K entries shown per retrieval (released setting)
  # What a Create does when every slot is taken: refuse it, or overwrite the entry created first, or the entry
  # retrieved longest ago. Each is counted in `overflow_events_B`.
  overflow: OverflowPolicy = "evict_oldest"
  retrieval: RetrievalMode = "exact"
  # Only read by `retrieval="approx"` (`jax.lax.approx_max_k`; exact on CPU/GPU, a real approximation on TPU).
  approx_recall_target: float = 0.95
  max_ops_per_turn: int = 8  # O
  pad_id: int = 0
  # Where an entry the overflow policy evicts goes: "none" (it is lost) or "scann" (a per-trajectory namespace of a
  # host-side `ScannStore`, searched with the device store every retrieval; `agent.memory_tiers`).
  spill: SpillTier = "none"

  def __post_init__(self):
    for name in ("capacity", "entry_tokens", "scratchpad_tokens", "query_tokens", "embed_dim", "top_k",
                 "max_ops_per_turn"):
      if getattr(self, name) < 1:
        raise ValueError(f"MemoryConfig.{name} must be >= 1, got {getattr(self, name)}")
    if self.top_k > self.capacity:
      raise ValueError(f"MemoryConfig.top_k ({self.top_k}) must not exceed capacity ({self.capacity})")
    if self.overflow not in ("reject", "evict_oldest", "evict_lru"):
      raise ValueError(f"MemoryConfig.overflow must be reject|evict_oldest|evict_lru, got {self.overflow!r}")
    if self.retrieval not in ("exact", "approx"):
      raise ValueError(f"MemoryConfig.retrieval must be exact|approx, got {self.retrieval!r}")
    if self.spill not in ("none", "scann"):
      raise ValueError(f"MemoryConfig.spill must be none|scann, got {self.spill!r}")
    if self.spill == "scann" and self.overflow == "reject":
      raise ValueError("MemoryConfig.spill='scann' moves evicted entries to the host; overflow='reject' evicts none "
                       "(use evict_oldest or evict_lru)")
    if not 0.0 < self.approx_recall_target <= 1.0:
      raise ValueError(f"MemoryConfig.approx_recall_target must be in (0, 1], got {self.approx_recall_target}")

  @property
  def op_tokens(self) -> int:
    """W: the token width of one op's text, wide enough for the largest destination (entry, scratchpad, query)."""
    return max(self.entry_tokens, self.scratchpad_tokens, self.query_tokens)
