"""A host-side vector store with the device memory's retrieval contract, for stores too large for the device and
for memory that persists across episodes.

Entries are keyed by (namespace, id): each namespace is an independent index (one agent's long-lived memory, one
evaluation document, ...), ids are int64 and unique within it, each entry may carry its text. `search` returns the
top-k (ids_NxK, scores_NxK) by dot product of unit embeddings, best first, -1 / -inf where a namespace holds fewer
than k live entries; ties go to the earlier-inserted entry.

Per namespace:
- below `brute_force_below` live entries (20k by default) it is exact numpy search (one matmul + a partition).
  Measured on 2 shared CPU cores (`python -m atommem_jax.bench memory`, `brute_force_crossover`, 200 queries,
  D=128): at 5k numpy took 48 ms vs ScaNN 19 ms + a 0.4 s build; at 20k 159 ms vs 44 ms + 1.6 s; at 50k 215 ms vs
  71 ms + 4.7 s. Below 20k exact search costs under a millisecond per query and needs no build, and every
  `max_delta` mutations would trigger a multi-second rebuild; above it ScaNN's search advantage grows with size.
- above it, a ScaNN searcher (asymmetric hashing, plus a k-means tree at >= `tree_above` entries) whose search
  effort (leaves searched, candidates re-scored exactly) is calibrated at build time on held-out database rows to
  reach `recall_target` recall@k against exact search.
- Adds, upserts and deletes go to a brute-force delta buffer and a tombstone mask, so the next search sees them
  (ScaNN over-fetches by the number of tombstones, then results are merged with the exact delta results). When the
  delta exceeds `max_delta` entries or tombstones exceed `max_dead_fraction` of the index, the namespace is
  compacted and the searcher rebuilt.

`save(directory)` writes a plain directory (written to a temporary sibling and renamed, so a failed save leaves
nothing behind): `store.json` (config, namespaces) and per namespace `rows.npz` (ids, embeddings, live mask, which
rows the searcher covers), `texts.json`, `search.json` (calibrated search settings) and `scann/` (ScaNN's own
serialised searcher). `ScannStore.load(directory)` restores it exactly.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import shutil
import tempfile
from typing import Sequence

import numpy as np

from atommem_jax import configlib

FORMAT = "atommem_jax.scann_store/1"
_QUERY_CHUNK = 1024
_SCORES_PER_CHUNK = 1 << 25  # bounds the query x database score block to 128 MiB


@dataclasses.dataclass(frozen=True)
class ScannStoreConfig:
  dim: int = 256
  brute_force_below: int = 20_000
  tree_above: int = 250_000
  recall_target: float = 0.95
  k: int = 10  # the k the calibration targets
  max_delta: int = 4096
  max_dead_fraction: float = 0.1
  calibration_queries: int = 200
  ah_training_sample: int = 50_000
  seed: int = 0

  def __post_init__(self):
    if self.dim < 1 or self.k < 1 or self.max_delta < 0 or self.calibration_queries < 1:
      raise ValueError(f"ScannStoreConfig: dim, k, calibration_queries must be >= 1 and max_delta >= 0: {self}")
    if not 0.0 < self.recall_target <= 1.0:
      raise ValueError(f"ScannStoreConfig.recall_target must be in (0, 1], got {self.recall_target}")


def exact_top_k(queries_NxD: np.ndarray, embeddings_MxD: np.ndarray, live_M: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
  """Exact top-k rows by dot product among live rows: (rows_NxK int64, scores_NxK float32), ties to lower row."""
  n, m = queries_NxD.shape[0], embeddings_MxD.shape[0]
  rows_NxK = np.full((n, k), -1, np.int64)
  scores_NxK = np.full((n, k), -np.inf, np.float32)
  if m == 0 or n == 0:
    return rows_NxK, scores_NxK
  take = min(k, m)
  chunk = max(1, min(_QUERY_CHUNK, _SCORES_PER_CHUNK // m))
  for start in range(0, n, chunk):
    scores_CxM = queries_NxD[start:start + chunk] @ embeddings_MxD.T
    scores_CxM[:, ~live_M] = -np.inf
    if take < m:
      # Everything scoring at least the take-th best is a candidate, so ties at the boundary resolve by row below.
      kth_C1 = -np.partition(-scores_CxM, take - 1, axis=1)[:, take - 1:take]
      candidates_CxM = scores_CxM >= kth_C1
    else:
      candidates_CxM = np.ones_like(scores_CxM, bool)
    for c in range(scores_CxM.shape[0]):
      rows = np.flatnonzero(candidates_CxM[c])
      order = np.lexsort((rows, -scores_CxM[c, rows]))[:take]
      rows, row_scores = rows[order], scores_CxM[c, rows[order]]
      live = np.isfinite(row_scores)
      rows_NxK[start + c, :live.sum()] = rows[live]
      scores_NxK[start + c, :live.sum()] = row_scores[live]
  return rows_NxK, scores_NxK


@dataclasses.dataclass
class _Namespace:
  """Rows [0, indexed) are covered by `searcher` (when there is one); rows past it are the brute-force delta."""

  dim: int
  ids: np.ndarray = None
  embeddings: np.ndarray = None
  live: np.ndarray = None
  texts: list = dataclasses.field(default_factory=list)
  size: int = 0  # rows in use (the arrays grow by doubling)
  indexed: int = 0
  searcher: object = None
  search_settings: dict = dataclasses.field(default_factory=dict)
  row_of_id: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.ids is None:
      self.ids = np.zeros((0,), np.int64)
      self.embeddings = np.zeros((0, self.dim), np.float32)
      self.live = np.zeros((0,), bool)

  def append(self, ids: np.ndarray, embeddings: np.ndarray, texts: Sequence[str]) -> None:
    need = self.size + len(ids)
    if need > len(self.ids):
      capacity = max(need, 2 * len(self.ids), 64)
      grow = capacity - len(self.ids)
      self.ids = np.concatenate([self.ids, np.zeros((grow,), np.int64)])
      self.embeddings = np.concatenate([self.embeddings, np.zeros((grow, self.dim), np.float32)])
      self.live = np.concatenate([self.live, np.zeros((grow,), bool)])
    rows = np.arange(self.size, need)
    self.ids[rows], self.embeddings[rows], self.live[rows] = ids, embeddings, True
    self.texts.extend(texts)
    self.row_of_id.update(zip(ids.tolist(), rows.tolist()))
    self.size = need

  @property
  def num_live(self) -> int:
    return int(self.live[:self.size].sum())

  @property
  def dead_indexed(self) -> int:
    return self.indexed - int(self.live[:self.indexed].sum())


class ScannStore:
  """Namespaced vector store; see the module docstring for the contract."""

  def __init__(self, config: ScannStoreConfig):
    self.config = config
    self._namespaces: dict[str, _Namespace] = {}

  # ------------------------------------------------------------------------------------------------- writes

  def add(self, ids, embeddings, texts: Sequence[str] | None = None, *, namespace: str = "default") -> None:
    """Inserts new entries; an id already present in the namespace is an error (use `upsert`)."""
    self._write(ids, embeddings, texts, namespace, allow_existing=False)

  def upsert(self, ids, embeddings, texts: Sequence[str] | None = None, *, namespace: str = "default") -> None:
    """Inserts new entries and replaces existing ones (same id, new embedding and text)."""
    self._write(ids, embeddings, texts, namespace, allow_existing=True)

  def delete(self, ids, *, namespace: str = "default") -> None:
    """Removes entries; an unknown id is an error and nothing is removed."""
    ns = self._get(namespace)
    ids = self._as_ids(ids)
    missing = [i for i in ids.tolist() if i not in ns.row_of_id]
    if missing:
      raise KeyError(f"namespace {namespace!r}: ids not found: {missing[:10]}")
    for i in ids.tolist():
      ns.live[ns.row_of_id.pop(i)] = False
    self._maybe_rebuild(ns)

  def _write(self, ids, embeddings, texts, namespace: str, allow_existing: bool) -> None:
    ids = self._as_ids(ids)
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or embeddings.shape != (len(ids), self.config.dim):
      raise ValueError(f"embeddings have shape {embeddings.shape}; expected ({len(ids)}, dim={self.config.dim})")
    if not np.isfinite(embeddings).all():
      raise ValueError(f"embeddings row {int(np.flatnonzero(~np.isfinite(embeddings).all(1))[0])} is not finite")
    texts = [""] * len(ids) if texts is None else list(texts)
    if len(texts) != len(ids):
      raise ValueError(f"{len(texts)} texts for {len(ids)} ids")
    if len(np.unique(ids)) != len(ids):
      raise ValueError(f"duplicate ids in one write: {ids[np.unique(ids, return_counts=True)[1] > 1][:10]}")
    ns = self._namespaces.get(namespace) or _Namespace(self.config.dim)
    present = [i for i in ids.tolist() if i in ns.row_of_id]
    if present and not allow_existing:
      raise KeyError(f"namespace {namespace!r}: ids already present (use upsert): {present[:10]}")
    for i in present:
      ns.live[ns.row_of_id[i]] = False
    ns.append(ids, embeddings, texts)
    self._namespaces[namespace] = ns
    self._maybe_rebuild(ns)

  @staticmethod
  def _as_ids(ids) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
      raise ValueError(f"ids must be a 1-D integer array, got dtype {ids.dtype} shape {ids.shape}")
    return ids.astype(np.int64)

  # ------------------------------------------------------------------------------------------------- index upkeep

  def _maybe_rebuild(self, ns: _Namespace) -> None:
    delta = ns.size - ns.indexed
    too_dead = ns.dead_indexed > self.config.max_dead_fraction * max(ns.indexed, 1)
    brute_force_outgrown = ns.searcher is None and ns.num_live >= self.config.brute_force_below
    compact = ns.searcher is None and ns.size > 2 * max(ns.num_live, 64)
    if delta > self.config.max_delta or (ns.searcher is not None and too_dead) or brute_force_outgrown or compact:
      self._rebuild(ns)

  def _rebuild(self, ns: _Namespace) -> None:
    """Compacts to live rows (in insertion order) and indexes all of them."""
    keep = np.flatnonzero(ns.live[:ns.size])
    ids, embeddings, texts = ns.ids[keep], ns.embeddings[keep], [ns.texts[r] for r in keep]
    fresh = _Namespace(ns.dim)
    fresh.append(ids, embeddings, texts)
    ns.__dict__.update(fresh.__dict__)
    ns.indexed = ns.size
    ns.searcher, ns.search_settings = None, {}
    if ns.size >= self.config.brute_force_below:
      ns.searcher, ns.search_settings = self._build_searcher(ns.embeddings[:ns.size])

  def _build_searcher(self, embeddings_MxD: np.ndarray):
    import scann  # imported here: only namespaces past the brute-force threshold need it

    cfg, m = self.config, embeddings_MxD.shape[0]
    builder = scann.scann_ops_pybind.builder(embeddings_MxD, cfg.k, "dot_product")
    use_tree = m >= cfg.tree_above
    if use_tree:
      num_leaves = int(2 * math.sqrt(m))
      builder = builder.tree(num_leaves=num_leaves, num_leaves_to_search=max(1, num_leaves // 20),
                             training_sample_size=min(m, 250_000))
    sample = min(m, cfg.ah_training_sample)
    builder = builder.score_ah(2, anisotropic_quantization_threshold=0.2, training_sample_size=sample)
    searcher = builder.reorder(2000).build()
    leaves_options = ([max(1, int(num_leaves * f)) for f in (1 / 40, 1 / 20, 1 / 10, 1 / 5, 1 / 3, 1 / 2, 1.0)]
                      if use_tree else [-1])
    return searcher, self._calibrate(searcher, embeddings_MxD, leaves_options)

  def _calibrate(self, searcher, embeddings_MxD: np.ndarray, leaves_options: list[int]) -> dict:
    """The cheapest (leaves, re-scored candidates) reaching the recall target on held-out database rows.

    Each calibration query is a database row; its own row is dropped from both result lists, so recall@k is
    measured on the k neighbours a fresh query near the data would get.
    """
    cfg, m = self.config, embeddings_MxD.shape[0]
    rng = np.random.default_rng(cfg.seed)
    query_rows = rng.choice(m, size=min(cfg.calibration_queries, m), replace=False)
    queries = embeddings_MxD[query_rows]
    exact_rows, _ = exact_top_k(queries, embeddings_MxD, np.ones(m, bool), cfg.k + 1)
    truth = [set(r[r != q][:cfg.k].tolist()) for r, q in zip(exact_rows, query_rows)]
    best = None
    for leaves in leaves_options:
      for reorder in (100, 250, 500, 1000, 2000):
        found, _ = searcher.search_batched_parallel(queries, cfg.k + 1, max(reorder, cfg.k + 1), leaves)
        found = np.asarray(found, np.int64)
        recall = float(np.mean([len(t & set(f[f != q][:cfg.k].tolist())) / max(len(t), 1)
                                for t, f, q in zip(truth, found, query_rows)]))
        best = {"leaves_to_search": leaves, "pre_reorder": reorder, "calibrated_recall": recall}
        if recall >= cfg.recall_target:
          return best
    return best

  # ------------------------------------------------------------------------------------------------- search

  def search(self, queries_NxD, k: int, *, namespace: str = "default") -> tuple[np.ndarray, np.ndarray]:
    """Top-k entries per query: (ids_NxK int64, scores_NxK float32), best first, -1 / -inf padding."""
    queries_NxD = np.asarray(queries_NxD, np.float32)
    if queries_NxD.ndim != 2 or queries_NxD.shape[1] != self.config.dim:
      raise ValueError(f"queries have shape {queries_NxD.shape}; expected (N, dim={self.config.dim})")
    if k < 1:
      raise ValueError(f"k must be >= 1, got {k}")
    n = queries_NxD.shape[0]
    ns = self._namespaces.get(namespace)
    if ns is None or ns.size == 0:
      return np.full((n, k), -1, np.int64), np.full((n, k), -np.inf, np.float32)
    if ns.searcher is None:
      rows, scores = exact_top_k(queries_NxD, ns.embeddings[:ns.size], ns.live[:ns.size], k)
    else:
      rows, scores = self._search_indexed(ns, queries_NxD, k)
    return np.where(rows >= 0, ns.ids[np.maximum(rows, 0)], -1), scores

  def _search_indexed(self, ns: _Namespace, queries_NxD: np.ndarray, k: int):
    dead = ns.dead_indexed
    fetch = min(k + dead, ns.indexed)
    settings = ns.search_settings
    found, _ = ns.searcher.search_batched_parallel(queries_NxD, fetch, max(settings["pre_reorder"], fetch),
                                                   settings["leaves_to_search"])
    found = np.asarray(found, np.int64).reshape(queries_NxD.shape[0], -1)
    # Exact scores of the fetched rows (the delta's are exact too), then one merge with tombstones removed.
    base_scores = np.einsum("nd,nkd->nk", queries_NxD, ns.embeddings[found])
    base_scores[~ns.live[found]] = -np.inf
    delta_rows, delta_scores = exact_top_k(queries_NxD, ns.embeddings[ns.indexed:ns.size],
                                           ns.live[ns.indexed:ns.size], k)
    delta_rows = np.where(delta_rows >= 0, delta_rows + ns.indexed, -1)
    rows = np.concatenate([found, delta_rows], axis=1)
    scores = np.concatenate([base_scores, delta_scores], axis=1)
    order = np.lexsort((np.where(rows >= 0, rows, np.iinfo(np.int64).max), -scores), axis=1)[:, :k]
    rows, scores = np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1).astype(np.float32)
    rows = np.where(np.isfinite(scores), rows, -1)
    if rows.shape[1] < k:
      pad = k - rows.shape[1]
      rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
      scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return rows, scores

  # ------------------------------------------------------------------------------------------------- inspection

  def namespaces(self) -> list[str]:
    return sorted(self._namespaces)

  def size(self, namespace: str = "default") -> int:
    ns = self._namespaces.get(namespace)
    return 0 if ns is None else ns.num_live

  def ids(self, namespace: str = "default") -> np.ndarray:
    """The live ids of a namespace in insertion order (an upsert moves an id to the end); empty if unknown."""
    ns = self._namespaces.get(namespace)
    return np.zeros((0,), np.int64) if ns is None else ns.ids[:ns.size][ns.live[:ns.size]].copy()

  def texts(self, ids, *, namespace: str = "default") -> list[str]:
    ns = self._get(namespace)
    return [ns.texts[ns.row_of_id[i]] if i in ns.row_of_id else "" for i in self._as_ids(ids).tolist()]

  def stats(self, namespace: str = "default") -> dict:
    ns = self._get(namespace)
    return {"live": ns.num_live, "indexed": ns.indexed, "delta": ns.size - ns.indexed,
            "dead_indexed": ns.dead_indexed, "uses_scann": ns.searcher is not None, **ns.search_settings}

  def _get(self, namespace: str) -> _Namespace:
    if namespace not in self._namespaces:
      raise KeyError(f"unknown namespace {namespace!r}; known: {self.namespaces()}")
    return self._namespaces[namespace]

  # ------------------------------------------------------------------------------------------------- persistence

  def save(self, directory: str | os.PathLike) -> None:
    """Writes the store to `directory` (replacing it) via a temporary sibling directory and a rename."""
    directory = pathlib.Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
      listing = []
      for index, (name, ns) in enumerate(sorted(self._namespaces.items())):
        sub = tmp / f"ns_{index:05d}"
        sub.mkdir()
        np.savez(sub / "rows.npz", ids=ns.ids[:ns.size], embeddings=ns.embeddings[:ns.size], live=ns.live[:ns.size],
                 indexed=np.int64(ns.indexed))
        (sub / "texts.json").write_text(json.dumps(ns.texts))
        (sub / "search.json").write_text(json.dumps(ns.search_settings))
        if ns.searcher is not None:
          (sub / "scann").mkdir()
          ns.searcher.serialize(str(sub / "scann"), relative_path=True)
        listing.append({"name": name, "dir": sub.name})
      (tmp / "store.json").write_text(json.dumps(
          {"format": FORMAT, "config": configlib.to_dict(self.config), "namespaces": listing}, indent=1))
      if directory.exists():
        shutil.rmtree(directory)
      tmp.rename(directory)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise

  @classmethod
  def load(cls, directory: str | os.PathLike) -> "ScannStore":
    directory = pathlib.Path(directory)
    meta_path = directory / "store.json"
    if not meta_path.is_file():
      raise FileNotFoundError(f"{meta_path}: not a saved ScannStore (store.json missing)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
      raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    store = cls(configlib.from_dict(ScannStoreConfig, meta["config"]))
    for entry in meta["namespaces"]:
      sub = directory / entry["dir"]
      with np.load(sub / "rows.npz") as rows:
        ids, embeddings, live, indexed = rows["ids"], rows["embeddings"], rows["live"], int(rows["indexed"])
      texts = json.loads((sub / "texts.json").read_text())
      if not (len(ids) == len(embeddings) == len(live) == len(texts)) or embeddings.shape[1:] != (store.config.dim,):
        raise ValueError(f"{sub}: rows.npz / texts.json disagree: ids {ids.shape}, embeddings {embeddings.shape}, "
                         f"live {live.shape}, texts {len(texts)}")
      ns = _Namespace(store.config.dim)
      ns.append(ids, embeddings, texts)
      ns.live[:ns.size] = live
      ns.row_of_id = {i: r for r, i in enumerate(ids.tolist()) if live[r]}
      ns.indexed = indexed
      ns.search_settings = json.loads((sub / "search.json").read_text())
      if (sub / "scann").is_dir():
        import scann

        ns.searcher = scann.scann_ops_pybind.load_searcher(str(sub / "scann"))
      store._namespaces[entry["name"]] = ns
    return store
