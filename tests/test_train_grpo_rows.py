"""Rollout trajectories (the oracle on the synthetic task) -> GRPO rows, mini-batches and rollout metrics."""
import dataclasses

import numpy as np
import pytest

from atommem_jax.agent import oracle
from atommem_jax.agent.config import AgentConfig, RolloutConfig
from atommem_jax.agent.engines import host
from atommem_jax.agent.envs.long_context import Episode
from atommem_jax.data import long_context, synthetic
from atommem_jax.data.tokenizer import load_tiny_tokenizer
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.memory.embedders import HashingEmbedder
from atommem_jax.train import grpo, grpo_rows, sft


@pytest.fixture(scope="module")
def oracle_run():
  tokenizer = load_tiny_tokenizer()
  world = synthetic.generate(synthetic.SyntheticConfig(seed=0, num_documents=64, num_questions=8,
                                                       question_kinds=("birth_country",)))
  examples = long_context.build_examples(world.corpus(), long_context.LongContextConfig(num_docs=4, seed=0))[:2]
  memory = MemoryConfig(capacity=16, entry_tokens=32, scratchpad_tokens=48, query_tokens=32, embed_dim=64, top_k=4,
                        max_ops_per_turn=4)
  config = RolloutConfig(agent=AgentConfig(chunk_tokens=96, overlap_tokens=8, max_chunks=8, max_steps=6),
                         memory=memory, num_samples=2)
  trajectories = host.rollout([Episode.from_example(e) for e in examples], oracle.OraclePolicy(world.questions),
                              tokenizer=tokenizer, embed_fn=HashingEmbedder(dim=64), config=config)
  return tokenizer, trajectories


def test_turn_rows_carry_group_advantages(oracle_run):
  _, trajectories = oracle_run
  assert all(t.reward == 1.0 for t in trajectories)  # the oracle solves these
  for t, reward in zip(trajectories, (1.0, 0.0, 0.5, 0.5)):
    t.reward = reward  # group 0 has signal, group 1 none
  rows, advantages = grpo_rows.turn_rows(trajectories, grpo.GRPOConfig(num_generations=2,
                                                                      zero_variance_groups="filter"))
  np.testing.assert_allclose(advantages, [[0.5, -0.5], [0.0, 0.0]])
  assert len(rows) == sum(len(t.turns) for t in trajectories)
  turns_0 = len(trajectories[0].turns)
  assert rows.advantages[:turns_0] == [0.5] * turns_0
  assert rows.valid == [True] * (len(trajectories[0].turns) + len(trajectories[1].turns)) + [False] * (
      len(trajectories[2].turns) + len(trajectories[3].turns))

  batches, stats = grpo_rows.minibatches(rows, 1, buckets=(768, 1024), pad_id=0, microbatch_rows=4)
  batch = batches[0]
  assert batch.tokens_NxT.shape[:2] == (stats["microbatches"], 4)  # micro-batches of 4 rows
  assert stats["microbatches"] * 4 >= len(rows) > stats["microbatches"] * 2  # the smallest power of two that fits
  flat_loss_mask = batch.loss_mask_NxT.reshape(-1, batch.loss_mask_NxT.shape[-1])
  flat_tokens = batch.tokens_NxT.reshape(flat_loss_mask.shape)
  first = trajectories[0].turns[0]
  p, r = len(first.prompt_ids), len(first.response_ids)
  np.testing.assert_array_equal(flat_tokens[0, :p + r], first.prompt_ids + first.response_ids)
  assert not flat_loss_mask[0, :p].any() and flat_loss_mask[0, p:p + r].all() and not flat_loss_mask[0, p + r:].any()
  # Rows of the zero-variance group carry no loss.
  assert not flat_loss_mask[len(trajectories[0].turns) + len(trajectories[1].turns):].any()


def test_rollout_metrics_count_memory_ops(oracle_run):
  _, trajectories = oracle_run
  metrics = grpo_rows.rollout_metrics(trajectories)
  for key in ("reward_mean", "reward_std", "em", "f1", "storage_size_mean"):
    assert np.isfinite(metrics[key])
  assert metrics["op_rate/create"] > 0 and metrics["op_rate/answer"] > 0
  assert metrics["storage_size_mean"] >= 1
  assert metrics["em"] == 1.0  # the oracle's answers are right whatever reward the test assigned


def test_rollout_metrics_count_the_tool_calls_that_ran_per_turn(oracle_run):
  _, trajectories = oracle_run
  turns = [turn for t in trajectories for turn in t.turns]
  calls = [{"name": "search", "arguments": {"query": "Rizu"}}, {"name": "fetch_url", "arguments": {"url": "u"}},
           {"name": "search", "arguments": {"query": "Riti"}}]
  actions = iter(calls + [None] * len(turns))  # the first three turns (in trajectory order) call a tool
  web = [dataclasses.replace(t, turns=[dataclasses.replace(turn, action=next(actions)) for turn in t.turns])
         for t in trajectories]
  metrics = grpo_rows.rollout_metrics(web, tool_names=("search", "fetch_url", "visit"))
  assert metrics["tool_rate/search"] == pytest.approx(2 / len(turns))
  assert metrics["tool_rate/fetch_url"] == pytest.approx(1 / len(turns))
  assert metrics["tool_rate/visit"] == 0.0 and metrics["tool_rate/all"] == pytest.approx(3 / len(turns))
  # An environment without tools adds no keys.
  assert not any(k.startswith("tool_rate/") for k in grpo_rows.rollout_metrics(trajectories))
  env = type("Env", (), {"tools": [{"type": "function", "function": {"name": "search"}},
                                   {"type": "function", "function": {"name": "fetch_url"}}]})()
  assert grpo_rows.tool_names(env) == ("search", "fetch_url") and grpo_rows.tool_names(None) == ()


def test_tokenize_pairs_appends_eos(oracle_run):
  tokenizer, trajectories = oracle_run
  turn = trajectories[0].turns[0]
  prompts, completions = sft.tokenize_pairs([(turn.prompt, turn.response)], tokenizer)
  assert prompts[0] == turn.prompt_ids
  assert completions[0][-1] == tokenizer.eos_token_id
  assert tokenizer.decode(completions[0][:-1]) == turn.response
