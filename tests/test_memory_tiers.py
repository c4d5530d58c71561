"""The host storage tier (`memory.spill="scann"`): evicted entries move to a per-trajectory ScaNN namespace, retrieval
merges both tiers, "Memory i" reaches spilled entries; the device transitions stay pure."""
import jax
import numpy as np
import pytest

from atommem_jax.agent import replay
from atommem_jax.data.tokenizer import load_tiny_tokenizer
from atommem_jax.memory import ops as op_lib
from atommem_jax.memory import state as memory_state
from atommem_jax.memory import transitions
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.memory.embedders import HashingEmbedder
from atommem_jax.memory.host_tier import HostTier, merge_top_k

DOCUMENT = ("Document 1:\nKalomi\nKalomi was born in Tesuna. Kalomi was born in 1875.\n\n"
            "Document 2:\nRativo\nRativo was founded by Kalomi.\n\n"
            "Document 3:\nTesuna\nTesuna is located in Vorika.")
FACTS = ["Kalomi was born in Tesuna.", "Rativo was founded by Kalomi.", "Tesuna is located in Vorika.",
         "Kalomi was born in 1875.", "Dabesu owns Rativo."]
CONFIG = {"capacity": 2, "top_k": 2, "embed_dim": 64, "entry_tokens": 24, "scratchpad_tokens": 32,
          "query_tokens": 16, "max_ops_per_turn": 6, "chunk_tokens": 16, "overlap_tokens": 0}


def _replay(responses, **config):
  return replay.replay({"document": DOCUMENT, "questions": ["Where was Kalomi born?"], "answers": [["Tesuna"]],
                        "config": {**CONFIG, **config}, "responses": responses})


CREATE_FIVE = "".join(f"<add_memory>{f}</add_memory>" for f in FACTS)


def test_spilled_entries_are_retrieved_by_query_and_deleted_through_memory_i():
  responses = [CREATE_FIVE, f"<update_query>{FACTS[0]}</update_query>", "<delete_memory>Memory 1</delete_memory>",
               f"<update_query>{FACTS[0]}</update_query>"]
  spilled = _replay(responses, spill="scann")
  turns = spilled["turns"]
  assert all(op["valid"] for t in turns for op in t["ops"])
  assert [t["retrieved"][0] for t in turns[2:]] == [FACTS[0], FACTS[3]]  # found on the host, then gone
  assert spilled["final"]["storage"] == FACTS[1:]  # every other entry kept, in creation order

  lost = _replay(responses, spill="none")
  assert FACTS[0] not in lost["turns"][2]["retrieved"]  # evicted from the 2-entry store: gone
  assert lost["final"]["storage"] == [FACTS[4]]  # the Delete took one of the two survivors


def test_an_update_reaches_a_spilled_entry_and_both_tiers_are_ranked_together():
  result = _replay([CREATE_FIVE, f"<update_query>{FACTS[2]}</update_query>",
                    "<modify_memory>Memory 1: Tesuna lies in Vorika.</modify_memory>",
                    "<update_query>Tesuna lies in Vorika.</update_query>"], spill="scann")
  assert result["turns"][2]["retrieved"][0] == FACTS[2]
  assert result["turns"][3]["retrieved"][0] == "Tesuna lies in Vorika."
  assert result["final"]["storage"] == [FACTS[0], FACTS[1], "Tesuna lies in Vorika.", FACTS[3], FACTS[4]]
  assert merge_top_k([7, 3], [0.5, 0.2], [1, 9], [0.5, 0.9], 3) == [(False, 1), (False, 0), (True, 0)]


def test_the_device_transition_is_the_same_and_reports_what_it_evicted():
  tokenizer = load_tiny_tokenizer()
  base = MemoryConfig(capacity=2, top_k=2, embed_dim=64, entry_tokens=24, scratchpad_tokens=32, query_tokens=16,
                      max_ops_per_turn=6)
  spilling = MemoryConfig(**{**base.__dict__, "spill": "scann"})
  embed = HashingEmbedder(64)
  ops = op_lib.encode_ops([[(op_lib.CREATE, 0, tokenizer.encode(f, add_special_tokens=False)) for f in FACTS]],
                          base)
  plain, _, _ = jax.jit(transitions.turn, static_argnames=("embed_fn", "config"))(
      memory_state.init_memory(base, 1), ops, embed, config=base)
  tiered, _, _, tier = jax.jit(transitions.turn_with_tier, static_argnames=("embed_fn", "config"))(
      memory_state.init_memory(spilling, 1), ops, embed, config=spilling)
  jax.tree.map(np.testing.assert_array_equal, plain, tiered)
  assert tier.evicted_BxO[0].tolist() == [False, False, True, True, True, False]
  assert tier.evicted_ids_BxO[0, 2:5].tolist() == [0, 1, 2]
  texts = [tokenizer.decode(tier.evicted_tokens_BxOxE[0, o, :tier.evicted_lengths_BxO[0, o]].tolist())
           for o in range(2, 5)]
  assert texts == FACTS[:3]
  np.testing.assert_allclose(np.linalg.norm(tier.evicted_embeddings_BxOxD[0, 2:5], axis=-1), 1.0, atol=1e-5)

  host = HostTier(spilling)
  host.spill(0, [0, 1], np.asarray(tier.evicted_embeddings_BxOxD[0, 2:4]), FACTS[:2])
  ids, scores, found = host.search(0, np.asarray(tier.evicted_embeddings_BxOxD[0, 3]), 2)
  assert ids.tolist()[0] == 1 and found[0] == FACTS[1] and scores[0] == pytest.approx(1.0, abs=1e-5)
  host.delete(0, 1)
  assert host.entries(0) == [(0, FACTS[0])] and host.size(1) == 0
  with pytest.raises(ValueError, match="overflow='reject' evicts none"):
    MemoryConfig(spill="scann", overflow="reject")
