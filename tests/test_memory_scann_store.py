"""The host ScaNN store against exact search: recall@10 at 100k x 128, mutations, persistence, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from atommem_jax.memory.scann_store import ScannStore, ScannStoreConfig, exact_top_k

N, DIM, K = 100_000, 128, 10


def _unit(x):
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _dataset(kind: str, rng: np.random.Generator):
  """Database and fresh queries from the same distribution: isotropic, or 1000 clusters."""
  if kind == "random":
    return _unit(rng.standard_normal((N, DIM))), _unit(rng.standard_normal((300, DIM)))
  centers = rng.standard_normal((1000, DIM))
  def draw(n):
    return _unit(centers[rng.integers(0, len(centers), n)] + 0.35 * rng.standard_normal((n, DIM)))
  return draw(N), draw(300)


def _recall(found_NxK, exact_NxK):
  return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found_NxK, exact_NxK)]))


@pytest.fixture(scope="module", params=["random", "clustered"])
def big_store(request):
  rng = np.random.default_rng(0 if request.param == "random" else 1)
  database, queries = _dataset(request.param, rng)
  store = ScannStore(ScannStoreConfig(dim=DIM, k=K))
  store.add(np.arange(N) * 7 + 3, database)  # ids unrelated to rows
  return request.param, store, database, queries


def test_scann_recall_at_10_against_exact(big_store):
  kind, store, database, queries = big_store
  assert store.stats()["uses_scann"]
  ids, scores = store.search(queries, K)
  exact_rows, exact_scores = exact_top_k(queries, database, np.ones(N, bool), K)
  recall = _recall(ids, exact_rows * 7 + 3)
  print(f"{kind}: recall@10 {recall:.4f}, settings {store.stats()}")
  assert recall >= 0.95, (kind, recall)
  assert (np.diff(scores, axis=1) <= 0).all()
  # Returned scores are the exact dot products of the returned entries.
  np.testing.assert_allclose(scores, np.einsum("nd,nkd->nk", queries, database[(ids - 3) // 7]), atol=1e-5)


def test_mutations_visible_in_next_search_and_persisted(big_store, tmp_path):
  kind, store, database, queries = big_store
  if kind != "clustered":
    pytest.skip("one dataset is enough for mutation semantics")
  ids_before, _ = store.search(queries[:20], K)
  # Delete every query's best hit: none may come back.
  gone = np.unique(ids_before[:, 0])
  store.delete(gone)
  ids_after, _ = store.search(queries[:20], K)
  assert not np.isin(gone, ids_after).any()
  # Upsert: an existing id moved onto the query, and a brand-new id; both must be the top hit now.
  moved = int(ids_before[0, 5])
  store.upsert([moved, 10**12], np.stack([queries[0], queries[1]]), texts=["moved", "new"])
  top, top_scores = store.search(queries[:2], 1)
  assert top[:, 0].tolist() == [moved, 10**12]
  np.testing.assert_allclose(top_scores[:, 0], 1.0, atol=1e-5)
  assert store.texts([moved, 10**12]) == ["moved", "new"]
  stats = store.stats()
  assert stats["uses_scann"] and stats["delta"] == 2 and stats["dead_indexed"] == len(gone) + 1

  store.save(tmp_path / "store")
  loaded = ScannStore.load(tmp_path / "store")
  for a, b in zip(store.search(queries, K), loaded.search(queries, K)):
    np.testing.assert_array_equal(a, b)
  assert loaded.texts([moved]) == ["moved"] and loaded.stats() == store.stats()
  assert not any(p.name.startswith(".store.") for p in tmp_path.iterdir()), "temporary directory left behind"


def test_small_namespace_is_exact_and_namespaces_are_separate():
  rng = np.random.default_rng(2)
  store = ScannStore(ScannStoreConfig(dim=16, max_delta=8))
  a, b = _unit(rng.standard_normal((50, 16))), _unit(rng.standard_normal((30, 16)))
  store.add(np.arange(50), a, namespace="episode_a")
  store.add(np.arange(30), b, namespace="episode_b")
  queries = _unit(rng.standard_normal((5, 16)))
  ids, scores = store.search(queries, 4, namespace="episode_a")
  exact_rows, exact_scores = exact_top_k(queries, a, np.ones(50, bool), 4)
  np.testing.assert_array_equal(ids, exact_rows)
  np.testing.assert_allclose(scores, exact_scores, atol=1e-6)
  assert not store.stats("episode_a")["uses_scann"]
  # Fewer live entries than k: -1 / -inf padding; an unknown namespace is empty.
  store.delete(np.arange(28), namespace="episode_b")
  ids, scores = store.search(queries, 4, namespace="episode_b")
  assert (ids[:, 2:] == -1).all() and np.isneginf(scores[:, 2:]).all() and set(ids[:, :2].ravel()) == {28, 29}
  assert (store.search(queries, 3, namespace="nobody")[0] == -1).all()


def test_ties_go_to_the_earlier_entry():
  store = ScannStore(ScannStoreConfig(dim=4))
  same = np.eye(4, dtype=np.float32)[[0, 0, 0]]
  store.add([30, 10, 20], same)
  ids, _ = store.search(np.eye(4, dtype=np.float32)[:1], 2)
  assert ids.tolist() == [[30, 10]]


def test_bad_input_is_one_clear_error_and_changes_nothing(tmp_path):
  store = ScannStore(ScannStoreConfig(dim=4))
  store.add([1, 2], np.eye(4, dtype=np.float32)[:2])
  with pytest.raises(KeyError, match="already present"):
    store.add([2, 3], np.eye(4, dtype=np.float32)[:2])
  with pytest.raises(ValueError, match="expected \\(2, dim=4\\)"):
    store.upsert([3, 4], np.ones((2, 5), np.float32))
  with pytest.raises(ValueError, match="row 1 is not finite"):
    store.upsert([3, 4], np.array([[1, 0, 0, 0], [np.nan, 0, 0, 0]], np.float32))
  with pytest.raises(KeyError, match="ids not found: \\[9\\]"):
    store.delete([1, 9])
  assert store.size() == 2 and store.search(np.eye(4, dtype=np.float32)[:1], 1)[0].tolist() == [[1]]
  with pytest.raises(FileNotFoundError, match="store.json"):
    ScannStore.load(tmp_path)
  store.save(tmp_path / "s")
  meta = json.loads((tmp_path / "s" / "store.json").read_text())
  meta["format"] = "other/9"
  (tmp_path / "s" / "store.json").write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="format"):
    ScannStore.load(tmp_path / "s")
