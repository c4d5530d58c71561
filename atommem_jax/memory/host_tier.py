"""The host storage tier: entries the device store evicts move here instead of being lost (`MemoryConfig.spill`).

One `ScannStore` namespace per trajectory (row) holds its spilled entries under the entry ids they had on the device
(a per-trajectory creation counter, so ids never collide between the tiers). A retrieval takes the device tier's top
K and this tier's top K for the same query embedding and keeps the K best of both (`merge_top_k`). Everything here is
host-side numpy; the device transitions never see this tier, they only report what they evicted
(`transitions.TierUpdate`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from atommem_jax.memory.config import MemoryConfig
from atommem_jax.memory.scann_store import ScannStore, ScannStoreConfig


def merge_top_k(device_ids: Sequence[int], device_scores: Sequence[float], host_ids: Sequence[int],
                host_scores: Sequence[float], k: int) -> list[tuple[bool, int]]:
  """The k best of two ranked lists as `(on_device, index into its list)`, by score, ties to the lower entry id
  (the entry created first)."""
  candidates = [(-float(s), int(i), True, j) for j, (i, s) in enumerate(zip(device_ids, device_scores))]
  candidates += [(-float(s), int(i), False, j) for j, (i, s) in enumerate(zip(host_ids, host_scores))]
  return [(on_device, j) for _, _, on_device, j in sorted(candidates)[:k]]


class HostTier:
  """Per-row namespaces of one `ScannStore` (dim = the memory's embedding width)."""

  def __init__(self, config: MemoryConfig, store_config: ScannStoreConfig | None = None):
    self.store = ScannStore(store_config or ScannStoreConfig(dim=config.embed_dim, k=config.top_k))
    if self.store.config.dim != config.embed_dim:
      raise ValueError(f"host tier dim {self.store.config.dim} != MemoryConfig.embed_dim {config.embed_dim}")

  @staticmethod
  def _namespace(row: int) -> str:
    return f"row{row}"

  def spill(self, row: int, entry_ids: Sequence[int], embeddings_NxD: np.ndarray, texts: Sequence[str]) -> None:
    """Entries evicted from row `row`'s device store."""
    if len(entry_ids):
      self.store.add(np.asarray(entry_ids, np.int64), embeddings_NxD, texts, namespace=self._namespace(row))

  def update(self, row: int, entry_id: int, embedding_D: np.ndarray, text: str) -> None:
    """An Update of a spilled entry: same id, new text and embedding."""
    self.store.upsert(np.asarray([entry_id], np.int64), np.asarray(embedding_D, np.float32)[None], [text],
                      namespace=self._namespace(row))

  def delete(self, row: int, entry_id: int) -> None:
    self.store.delete(np.asarray([entry_id], np.int64), namespace=self._namespace(row))

  def search(self, row: int, query_D: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(ids, scores, texts) of row `row`'s k best spilled entries for the query, best first, live ones only."""
    if not self.size(row):
      return np.zeros((0,), np.int64), np.zeros((0,), np.float32), []
    ids, scores = self.store.search(np.asarray(query_D, np.float32)[None], k, namespace=self._namespace(row))
    live = ids[0] >= 0
    ids, scores = ids[0][live], scores[0][live]
    return ids, scores, self.store.texts(ids, namespace=self._namespace(row))

  def size(self, row: int) -> int:
    return self.store.size(self._namespace(row))

  def entries(self, row: int) -> list[tuple[int, str]]:
    """(entry id, text) of every spilled entry of the row, by id (creation order)."""
    ids = sorted(self.store.ids(self._namespace(row)).tolist())
    return list(zip(ids, self.store.texts(ids, namespace=self._namespace(row)) if ids else []))
