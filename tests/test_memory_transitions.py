"""Property tests of the memory transitions against a plain-Python model of the op semantics.

Random turns of random ops (valid and malformed) run through one jitted `turn` per overflow policy; after every turn
the device state must equal the Python model's, and retrieval must return live slots only, best first.
"""
from __future__ import annotations

import dataclasses

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atommem_jax.memory import embedders
from atommem_jax.memory import ops as op_lib
from atommem_jax.memory import retrieval
from atommem_jax.memory import state as state_lib
from atommem_jax.memory import transitions
from atommem_jax.memory.config import MemoryConfig

BATCH = 3
CONFIG = MemoryConfig(capacity=4, entry_tokens=3, scratchpad_tokens=5, query_tokens=4, embed_dim=16, top_k=2,
                      max_ops_per_turn=4, overflow="evict_oldest")
CONFIGS = {policy: dataclasses.replace(CONFIG, overflow=policy) for policy in ("reject", "evict_oldest", "evict_lru")}
EMBED = embedders.HashingEmbedder(CONFIG.embed_dim)
W = CONFIG.op_tokens

_STATIC = ("embed_fn", "config")
_turn = jax.jit(transitions.turn, static_argnames=_STATIC)
_apply_ops = jax.jit(transitions.apply_ops, static_argnames=_STATIC)


# ---------------------------------------------------------------------------------------------------------------
# The Python model: one trajectory, lists and dicts, written from the op semantics in transitions.py's docstring.


@dataclasses.dataclass
class Entry:
  tokens: list[int]
  entry_id: int
  created: int
  last_retrieved: int


@dataclasses.dataclass
class PyMemory:
  config: MemoryConfig
  slots: list = dataclasses.field(default_factory=list)
  next_id: int = 0
  step: int = 0
  scratchpad: list = dataclasses.field(default_factory=list)
  query: list = dataclasses.field(default_factory=list)
  shown: list = dataclasses.field(default_factory=list)  # (slot, entry id) pairs, in shown order
  op_counts: list = dataclasses.field(default_factory=lambda: [0] * op_lib.NUM_OP_TYPES)
  invalid: int = 0
  overflow: int = 0

  def __post_init__(self):
    self.slots = [None] * self.config.capacity

  def _target(self, target):
    position = target - 1
    if not 0 <= position < len(self.shown):
      return None
    slot, entry_id = self.shown[position]
    entry = self.slots[slot]
    return slot if entry is not None and entry.entry_id == entry_id else None

  def apply(self, op_type, target, tokens, length, valid):
    text = list(tokens[:max(0, min(length, W))])
    well_formed = valid and 0 <= op_type < op_lib.NUM_OP_TYPES
    if op_type in (op_lib.SET_SCRATCHPAD, op_lib.SET_QUERY, op_lib.CREATE, op_lib.UPDATE) and not text:
      well_formed = False
    slot = self._target(target) if op_type in op_lib.TARGETED_OPS else None
    if op_type in op_lib.TARGETED_OPS and slot is None:
      well_formed = False
    if not well_formed:
      self.invalid += 1
      return
    if op_type == op_lib.NOOP:
      return
    if op_type == op_lib.SET_SCRATCHPAD:
      self.scratchpad = text[:self.config.scratchpad_tokens]
    elif op_type == op_lib.SET_QUERY:
      self.query = text[:self.config.query_tokens]
    elif op_type == op_lib.CREATE:
      free = [i for i, e in enumerate(self.slots) if e is None]
      if free:
        slot = free[0]
      else:
        self.overflow += 1
        if self.config.overflow == "reject":
          return
        live = [(i, e) for i, e in enumerate(self.slots)]
        if self.config.overflow == "evict_oldest":
          slot = min(live, key=lambda ie: ie[1].entry_id)[0]
        else:
          slot = min(live, key=lambda ie: (ie[1].last_retrieved, ie[1].entry_id))[0]
      self.slots[slot] = Entry(text[:self.config.entry_tokens], self.next_id, self.step, self.step)
      self.next_id += 1
    elif op_type == op_lib.UPDATE:
      self.slots[slot].tokens = text[:self.config.entry_tokens]
    elif op_type == op_lib.DELETE:
      self.slots[slot] = None
    self.op_counts[op_type] += 1

  def end_turn_and_show(self, slots):
    self.step += 1
    self.shown = [(s, self.slots[s].entry_id) for s in slots if s >= 0]
    for s in slots:
      if s >= 0:
        self.slots[s].last_retrieved = self.step


def _padded(tokens, width):
  return np.array(list(tokens) + [CONFIG.pad_id] * (width - len(tokens)), np.int32)


def assert_state_matches(state, models):
  for b, py in enumerate(models):
    where = f"trajectory {b}"
    live = [e is not None for e in py.slots]
    np.testing.assert_array_equal(np.asarray(state.valid_BxM[b]), live, err_msg=where)
    for s, entry in enumerate(py.slots):
      tokens = entry.tokens if entry else []
      np.testing.assert_array_equal(np.asarray(state.entry_tokens_BxMxE[b, s]), _padded(tokens, CONFIG.entry_tokens))
      assert int(state.entry_lengths_BxM[b, s]) == len(tokens), where
      assert int(state.entry_ids_BxM[b, s]) == (entry.entry_id if entry else -1), where
      assert int(state.created_step_BxM[b, s]) == (entry.created if entry else -1), where
      assert int(state.last_retrieved_step_BxM[b, s]) == (entry.last_retrieved if entry else -1), where
      expected_embedding = (embedders.hash_embed_numpy(_padded(tokens, CONFIG.entry_tokens)[None], [len(tokens)],
                                                       CONFIG.embed_dim)[0] if entry else np.zeros(CONFIG.embed_dim))
      np.testing.assert_allclose(np.asarray(state.entry_embeddings_BxMxD[b, s]), expected_embedding, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(state.scratchpad_tokens_BxS[b]),
                                  _padded(py.scratchpad, CONFIG.scratchpad_tokens))
    assert int(state.scratchpad_length_B[b]) == len(py.scratchpad)
    np.testing.assert_array_equal(np.asarray(state.query_tokens_BxQ[b]), _padded(py.query, CONFIG.query_tokens))
    expected_query = (embedders.hash_embed_numpy(_padded(py.query, CONFIG.query_tokens)[None], [len(py.query)],
                                                 CONFIG.embed_dim)[0])
    np.testing.assert_allclose(np.asarray(state.query_embedding_BxD[b]), expected_query, atol=1e-6)
    assert int(state.next_entry_id_B[b]) == py.next_id
    assert int(state.step_B[b]) == py.step
    assert list(np.asarray(state.op_counts_BxC[b])) == py.op_counts, where
    assert int(state.invalid_ops_B[b]) == py.invalid, where
    assert int(state.overflow_events_B[b]) == py.overflow, where
    assert int(state.valid_BxM[b].sum()) <= CONFIG.capacity


def assert_retrieval_sound(state, slots_BxK, scores_BxK):
  """Live slots only, each exactly once, best first, ties by lower slot, nothing better left out."""
  valid, embeddings, query = (np.asarray(state.valid_BxM), np.asarray(state.entry_embeddings_BxMxD),
                              np.asarray(state.query_embedding_BxD))
  for b in range(valid.shape[0]):
    slots, scores = np.asarray(slots_BxK[b]), np.asarray(scores_BxK[b])
    shown = slots[slots >= 0]
    assert len(shown) == min(valid[b].sum(), CONFIG.top_k)
    assert (slots[len(shown):] == -1).all() and np.isneginf(scores[len(shown):]).all()
    assert valid[b, shown].all() and len(set(shown)) == len(shown)
    reference = embeddings[b] @ query[b]
    np.testing.assert_allclose(scores[:len(shown)], reference[shown], atol=1e-5)
    assert (np.diff(scores[:len(shown)]) <= 1e-6).all()
    for i in range(len(shown) - 1):
      if np.array_equal(embeddings[b, shown[i]], embeddings[b, shown[i + 1]]):
        assert shown[i] < shown[i + 1], "ties must go to the lower slot"
    left_out = [s for s in np.flatnonzero(valid[b]) if s not in shown]
    if left_out and len(shown):
      assert reference[left_out].max() <= scores[len(shown) - 1] + 1e-5


# ---------------------------------------------------------------------------------------------------------------
# Strategies: small vocabulary so texts collide, every kind of malformed op.

@st.composite
def _op(draw):
  """Mostly well-formed ops (so storage fills and overflows), with every kind of malformed op mixed in."""
  op_type = draw(st.sampled_from([op_lib.NOOP, op_lib.SET_SCRATCHPAD, op_lib.SET_QUERY, op_lib.SET_QUERY,
                                  op_lib.CREATE, op_lib.CREATE, op_lib.CREATE, op_lib.CREATE, op_lib.UPDATE,
                                  op_lib.UPDATE, op_lib.DELETE, -1, 7]))
  target = draw(st.integers(1, CONFIG.top_k)) if draw(st.integers(0, 5)) else draw(st.integers(-1, CONFIG.top_k + 1))
  length = draw(st.integers(1, W + 1)) if draw(st.integers(0, 9)) else 0
  tokens = draw(st.lists(st.integers(1, 5), min_size=length, max_size=length))
  valid = bool(draw(st.integers(0, 9)))
  return op_type, target, tokens, valid


_turn_ops = st.lists(st.lists(_op(), min_size=CONFIG.max_ops_per_turn - 1, max_size=CONFIG.max_ops_per_turn),
                     min_size=BATCH, max_size=BATCH)


def _encode(turn_ops):
  return op_lib.encode_ops([[(t, g, toks, v) for t, g, toks, v in row] for row in turn_ops], CONFIG)


def _run_model(models, turn_ops):
  ops = _encode(turn_ops)
  for b, py in enumerate(models):
    for o in range(CONFIG.max_ops_per_turn):
      py.apply(int(ops.type_BxO[b, o]), int(ops.target_BxO[b, o]), list(ops.tokens_BxOxW[b, o]),
               int(ops.length_BxO[b, o]), bool(ops.valid_BxO[b, o]))
  return ops


@hypothesis.settings(max_examples=60, deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(policy=st.sampled_from(sorted(CONFIGS)), turns=st.lists(_turn_ops, min_size=3, max_size=6))
def test_turns_match_python_model(policy, turns):
  config = CONFIGS[policy]
  state = state_lib.init_memory(config, BATCH)
  models = [PyMemory(config) for _ in range(BATCH)]
  for turn_ops in turns:
    ops = _run_model(models, turn_ops)
    state, slots_BxK, scores_BxK = _turn(state, ops, EMBED, config=config)
    assert_retrieval_sound(state, slots_BxK, scores_BxK)
    for b, py in enumerate(models):
      py.end_turn_and_show(list(np.asarray(slots_BxK[b])))
    assert_state_matches(state, models)


def _filled_state():
  """Three entries per trajectory, retrieved, so targeted ops have something to hit."""
  state = state_lib.init_memory(CONFIG, BATCH)
  ops = op_lib.encode_ops([[(op_lib.CREATE, 0, [b + 1, 2]), (op_lib.CREATE, 0, [3, b + 1]),
                            (op_lib.CREATE, 0, [4]), (op_lib.SET_QUERY, 0, [b + 1])] for b in range(BATCH)], CONFIG)
  return _turn(state, ops, EMBED, config=CONFIG)[0]


FILLED = None


def filled():
  global FILLED
  if FILLED is None:
    FILLED = _filled_state()
  return FILLED


def _leaves_except(state, skip):
  return {k: np.asarray(v) for k, v in vars(state).items() if k not in skip}


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(_turn_ops)
def test_ops_marked_invalid_change_only_their_counter(turn_ops):
  before = filled()
  malformed = [[(t, g, toks, False) for t, g, toks, _ in row] for row in turn_ops]
  after, _, _ = _turn(before, _encode(malformed), EMBED, config=CONFIG)
  skip = {"invalid_ops_B", "step_B", "last_retrieved_step_BxM", "shown_slots_BxK", "shown_entry_ids_BxK"}
  for name, value in _leaves_except(before, skip).items():
    np.testing.assert_array_equal(np.asarray(getattr(after, name)), value, err_msg=name)
  counts = np.array([len(row) for row in turn_ops])
  np.testing.assert_array_equal(np.asarray(after.invalid_ops_B - before.invalid_ops_B), counts)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(target=st.integers(1, CONFIG.top_k), text=st.lists(st.integers(1, 9), min_size=1, max_size=3))
def test_update_changes_only_its_slot(target, text):
  before = filled()
  ops = op_lib.encode_ops([[(op_lib.UPDATE, target, text)]] * BATCH, CONFIG)
  after = _apply_ops(before, ops, EMBED, config=CONFIG)
  for b in range(BATCH):
    slot = int(before.shown_slots_BxK[b, target - 1])
    for name in ("entry_tokens_BxMxE", "entry_lengths_BxM", "entry_embeddings_BxMxD"):
      old, new = np.asarray(getattr(before, name)[b]), np.asarray(getattr(after, name)[b])
      others = np.arange(CONFIG.capacity) != slot
      np.testing.assert_array_equal(new[others], old[others], err_msg=name)
    np.testing.assert_array_equal(np.asarray(after.entry_tokens_BxMxE[b, slot]), _padded(text, CONFIG.entry_tokens))
    for name in ("valid_BxM", "entry_ids_BxM", "created_step_BxM"):
      np.testing.assert_array_equal(np.asarray(getattr(after, name)), np.asarray(getattr(before, name)))


def test_deleted_entry_never_retrieved_and_memory_i_is_fixed_within_a_turn():
  before = filled()
  shown_ids = np.asarray(before.shown_entry_ids_BxK)
  # Delete "Memory 1", then "Memory 2" still names the second entry shown, and "Memory 1" is gone.
  ops = op_lib.encode_ops([[(op_lib.DELETE, 1, []), (op_lib.UPDATE, 2, [9]), (op_lib.DELETE, 1, [])]] * BATCH,
                          CONFIG)
  after, slots_BxK, _ = _turn(before, ops, EMBED, config=CONFIG)
  ids_after = np.asarray(after.entry_ids_BxM)
  for b in range(BATCH):
    assert shown_ids[b, 0] not in ids_after[b]
    assert shown_ids[b, 0] not in np.asarray(after.shown_entry_ids_BxK[b])
    updated_slot = int(before.shown_slots_BxK[b, 1])
    assert int(after.entry_tokens_BxMxE[b, updated_slot, 0]) == 9
  np.testing.assert_array_equal(np.asarray(after.invalid_ops_B - before.invalid_ops_B), [1] * BATCH)
  np.testing.assert_array_equal(np.asarray(after.op_counts_BxC[:, op_lib.DELETE]), [1] * BATCH)


def test_slot_reused_within_a_turn_does_not_inherit_memory_i():
  before = filled()
  # Memory 1 is deleted, a Create takes its slot (the lowest free one), and "Memory 1" must not reach the new entry.
  ops = op_lib.encode_ops([[(op_lib.DELETE, 1, []), (op_lib.CREATE, 0, [5, 5]), (op_lib.UPDATE, 1, [9])]] * BATCH,
                          CONFIG)
  after = _apply_ops(before, ops, EMBED, config=CONFIG)
  np.testing.assert_array_equal(np.asarray(after.invalid_ops_B - before.invalid_ops_B), [1] * BATCH)
  assert not (np.asarray(after.entry_tokens_BxMxE)[..., 0] == 9).any()


def test_jitted_equals_not_jitted():
  # Without jax.jit the transitions run op by op (the scan body is still one compiled loop, as JAX always does).
  before = filled()
  ops = op_lib.encode_ops([[(op_lib.UPDATE, 3, [2, 2]), (op_lib.CREATE, 0, [1]), (op_lib.CREATE, 0, [5, 4, 3, 2]),
                            (op_lib.SET_QUERY, 0, [2])]] * BATCH, CONFIG)
  jitted = _turn(before, ops, EMBED, config=CONFIG)
  eager = transitions.turn(before, ops, EMBED, config=CONFIG)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6), jitted, eager)


@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(_turn_ops)
def test_vmapped_equals_row_by_row(turn_ops):
  before = filled()
  ops = _encode(turn_ops)
  batched = _turn(before, ops, EMBED, config=CONFIG)
  for b in range(BATCH):
    row = lambda tree: jax.tree.map(lambda x: x[b:b + 1], tree)
    single = _turn(row(before), row(ops), EMBED, config=CONFIG)
    jax.tree.map(lambda a, s: np.testing.assert_array_equal(np.asarray(a)[b:b + 1], np.asarray(s)), batched, single)


def test_standalone_transitions_agree_with_apply_ops():
  create, update, set_query = (jax.jit(f, static_argnames=_STATIC)
                               for f in (transitions.create, transitions.update, transitions.set_query))
  delete = jax.jit(transitions.delete, static_argnames="config")
  set_scratchpad = jax.jit(transitions.set_scratchpad, static_argnames="config")
  before = filled()
  tokens = jnp.array([[3, 3, 1]] * BATCH)
  lengths = jnp.full((BATCH,), 3)
  via_create = create(before, tokens, lengths, EMBED, config=CONFIG)
  via_ops = _apply_ops(before, op_lib.encode_ops([[(op_lib.CREATE, 0, [3, 3, 1])]] * BATCH, CONFIG),
                                  EMBED, config=CONFIG)
  jax.tree.map(np.testing.assert_array_equal, via_create.replace(step_B=via_ops.step_B), via_ops)
  deleted = delete(before, jnp.array([1, 2, 9]), config=CONFIG)
  assert list(np.asarray(deleted.valid_BxM.sum(1))) == [2, 2, 3]
  assert list(np.asarray(deleted.invalid_ops_B - before.invalid_ops_B)) == [0, 0, 1]
  updated = update(before, jnp.array([1, 1, 1]), tokens, lengths, EMBED, config=CONFIG)
  assert (np.asarray(updated.entry_lengths_BxM) == 3).sum() == BATCH
  queried = set_query(before, tokens, lengths, EMBED, config=CONFIG)
  np.testing.assert_allclose(np.asarray(queried.query_embedding_BxD),
                             embedders.hash_embed_numpy(np.pad(np.asarray(tokens), ((0, 0), (0, 1))),
                                                        np.asarray(lengths), CONFIG.embed_dim), atol=1e-6)
  scratch = set_scratchpad(before, jnp.zeros((BATCH, 2), jnp.int32), jnp.zeros((BATCH,)), config=CONFIG)
  assert list(np.asarray(scratch.invalid_ops_B - before.invalid_ops_B)) == [1] * BATCH


def test_overflow_policies_pick_the_documented_victim():
  # Entries [1] [2] [3] [4] fill slots 0-3 at step 0; the empty query then shows slots 0, 1 (all scores 0, ties to
  # the lower slot) at step 1; the query [4] shows slot 3 first, then slot 0 at step 2. Slot 2 was never shown since
  # its creation (the least recently retrieved), slot 0 is the oldest.
  fill = [[(op_lib.CREATE, 0, [i + 1]) for i in range(4)]] * BATCH
  query = [[(op_lib.SET_QUERY, 0, [4])]] * BATCH
  create = [[(op_lib.CREATE, 0, [5])]] * BATCH
  for policy, expect_ids in (("reject", [0, 1, 2, 3]), ("evict_oldest", [4, 1, 2, 3]), ("evict_lru", [0, 1, 4, 3])):
    config = CONFIGS[policy]
    state = state_lib.init_memory(config, BATCH)
    state = _turn(state, op_lib.encode_ops(fill, config), EMBED, config=config)[0]
    state, slots_BxK, _ = _turn(state, op_lib.encode_ops(query, config), EMBED, config=config)
    assert list(np.asarray(slots_BxK[0])) == [3, 0]
    state = _turn(state, op_lib.encode_ops(create, config), EMBED, config=config)[0]
    assert list(np.asarray(state.entry_ids_BxM[0])) == expect_ids, policy
    assert list(np.asarray(state.overflow_events_B)) == [1] * BATCH
    expected_creates = 4 if policy == "reject" else 5
    assert list(np.asarray(state.op_counts_BxC[:, op_lib.CREATE])) == [expected_creates] * BATCH


def test_approx_retrieval_recall_against_exact():
  key = jax.random.key(0)
  b, m, d, k = 8, 512, 64, 6
  embeddings = jax.random.normal(key, (b, m, d))
  embeddings = embeddings / jnp.linalg.norm(embeddings, axis=-1, keepdims=True)
  valid = jax.random.bernoulli(jax.random.key(1), 0.8, (b, m))
  query = embeddings[:, 0] + 0.1 * jax.random.normal(jax.random.key(2), (b, d))
  exact_slots, _ = retrieval.top_k(embeddings, valid, query, k, dataclasses.replace(CONFIG, retrieval="exact"))
  approx_config = dataclasses.replace(CONFIG, retrieval="approx", approx_recall_target=0.9)
  approx_slots, approx_scores = retrieval.top_k(embeddings, valid, query, k, approx_config)
  assert float(retrieval.recall(approx_slots, exact_slots)) >= 0.9
  assert (np.diff(np.asarray(approx_scores), axis=1) <= 0).all()
  assert np.asarray(jnp.take_along_axis(valid, jnp.maximum(approx_slots, 0), 1) | (approx_slots < 0)).all()


def test_bad_op_batch_shape_is_one_clear_error():
  ops = op_lib.empty_ops(dataclasses.replace(CONFIG, scratchpad_tokens=9), BATCH)
  with pytest.raises(ValueError, match="tokens_BxOxW"):
    transitions.apply_ops(filled(), ops, EMBED, config=CONFIG)
  with pytest.raises(ValueError, match="trajectory 0 has 5 ops"):
    op_lib.encode_ops([[(op_lib.NOOP, 0, [])] * 5], CONFIG)
  with pytest.raises(ValueError, match="top_k"):
    MemoryConfig(capacity=2, top_k=3)


def test_sharded_over_trajectories_equals_unsharded():
  from atommem_jax import sharding

  mesh = sharding.make_mesh(sharding.MeshConfig(data=8))
  batch = 8
  state = state_lib.init_memory(CONFIG, batch)
  ops = op_lib.encode_ops([[(op_lib.CREATE, 0, [b % 5 + 1, 2]), (op_lib.SET_QUERY, 0, [2]),
                            (op_lib.CREATE, 0, [3])] for b in range(batch)], CONFIG)
  expected = _turn(state, ops, EMBED, config=CONFIG)
  shardings = state_lib.state_sharding(state, mesh)
  assert shardings.entry_tokens_BxMxE.spec[0] == ("data", "fsdp")
  sharded_state = jax.device_put(state, shardings)
  got = _turn(sharded_state, ops, EMBED, config=CONFIG)
  assert got[0].entry_embeddings_BxMxD.sharding.spec[0] == ("data", "fsdp")
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), got, expected)
