"""Rollouts end to end: the oracle on the synthetic task, a tiny random model, every baseline and ablation."""
import dataclasses
import json

import flax.nnx as nnx
import pytest

from atommem_jax.agent import oracle
from atommem_jax.agent.config import AgentConfig, RolloutConfig
from atommem_jax.agent.engines import host
from atommem_jax.agent.envs.long_context import Episode
from atommem_jax.agent.policy import SamplerPolicy
from atommem_jax.agent.trajectory import write_jsonl
from atommem_jax.data import long_context, synthetic
from atommem_jax.data.tokenizer import load_tiny_tokenizer
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.memory.embedders import HashingEmbedder
from atommem_jax.model import PRESETS, Qwen3
from atommem_jax.sampling.config import SamplerConfig
from atommem_jax.sampling.sampler import Sampler

MEMORY = MemoryConfig(capacity=32, entry_tokens=32, scratchpad_tokens=128, query_tokens=32, embed_dim=128, top_k=6,
                      max_ops_per_turn=8)
AGENT = AgentConfig(chunk_tokens=128, overlap_tokens=24, max_steps=40)
EMBED = HashingEmbedder(MEMORY.embed_dim)


@pytest.fixture(scope="module")
def tokenizer():
  return load_tiny_tokenizer()


@pytest.fixture(scope="module")
def task():
  return synthetic.generate(synthetic.SyntheticConfig(seed=3, num_documents=96, num_questions=12))


def _episodes(task, num_docs, count, bundled=True):
  config = long_context.LongContextConfig(num_docs=num_docs, seed=7, single_question_fraction=0.0 if bundled else 1.0,
                                          max_bundle_size=3)
  return [Episode.from_example(e) for e in long_context.build_examples(task.corpus(), config)[:count]]


@pytest.mark.parametrize("num_docs", [8, 32, 96])
def test_oracle_scores_exact_match_one_at_several_document_sizes(tokenizer, task, num_docs):
  episodes = _episodes(task, num_docs, count=2)
  trajectories = host.rollout(episodes, oracle.OraclePolicy(task.questions), tokenizer=tokenizer, embed_fn=EMBED,
                              config=RolloutConfig(agent=AGENT, memory=MEMORY))
  assert [t.reward for t in trajectories] == [1.0] * len(episodes)
  assert all(t.done for t in trajectories)
  assert sum(len(t.questions) for t in trajectories) > len(trajectories)  # bundles of several questions
  for t in trajectories:
    read_turns = [turn for turn in t.turns if turn.phase == "read"]
    assert [turn.chunk_index for turn in read_turns] == list(range(len(read_turns)))  # each chunk read once
    stored = {fact for question in t.questions for fact in _facts(task, question)}
    assert stored <= set(t.storage)  # every supporting fact was created
  pairs = oracle.oracle_sft_pairs(trajectories, tokenizer)
  assert len(pairs) == sum(len(t.turns) for t in trajectories)
  assert pairs[0]["prompt"].startswith("<|im_start|>system\n") and pairs[0]["prompt"].endswith(
      "<|im_start|>assistant\n")
  assert pairs[0]["completion"] == trajectories[0].turns[0].response + "<|im_end|>"
  assert tokenizer.encode(pairs[0]["completion"], add_special_tokens=False) == trajectories[0].turns[0].response_ids
  assert oracle.oracle_sft_pairs(trajectories, tokenizer, append_eos=False)[0]["completion"] == \
      trajectories[0].turns[0].response
  assert oracle.oracle_sft_pairs(trajectories, tokenizer, min_reward=1.1) == []


def test_oracle_extra_notes_store_one_unneeded_sentence_and_still_answer(tokenizer, task):
  """`extra_notes=1`: every read turn that stores facts also stores one other whole sentence of its chunk; the
  answers stay right; the notes are a function of the observation and the seed (not of the batch)."""
  episodes = _episodes(task, 8, count=3, bundled=False)
  config = RolloutConfig(agent=AGENT, memory=MEMORY)
  run = lambda eps, seed: host.rollout(eps, oracle.OraclePolicy(task.questions, extra_notes=1.0, seed=seed),
                                       tokenizer=tokenizer, embed_fn=EMBED, config=config)
  trajectories = run(episodes, seed=0)
  assert [t.reward for t in trajectories] == [1.0] * len(episodes)
  sentences = {s if s.endswith(".") else s + "." for e in episodes for line in e.document.splitlines()
               for s in line.split(". ") if " " in s}
  for t in trajectories:
    needed = set(_facts(task, t.questions[0]))
    for turn in t.turns:
      notes = [op["text"] for op in turn.ops if op["type"] == "add_memory"]
      if turn.phase == "read" and notes:
        extra = [n for n in notes if n not in needed]
        assert len(extra) == 1 and extra[0] in sentences and extra[0] in turn.prompt, turn.response
  assert [t.storage for t in run(episodes[1:2], seed=0)] == [trajectories[1].storage]
  assert [t.storage for t in run(episodes, seed=1)] != [t.storage for t in trajectories]
  plain = host.rollout(episodes, oracle.OraclePolicy(task.questions), tokenizer=tokenizer, embed_fn=EMBED, config=config)
  assert all(set(t.storage) <= set(_facts(task, t.questions[0])) for t in plain)


def _facts(task, question):
  (match,) = [q for q in task.questions if q.record.question == question]
  return [f.sentence for f in match.facts]


def test_oracle_queries_storage_when_facts_are_out_of_view(tokenizer, task):
  """With K=1 the answer view shows one entry: the oracle must Read (and note facts in its scratchpad) to answer."""
  memory = dataclasses.replace(MEMORY, top_k=1)
  episodes = _episodes(task, 32, count=2)
  trajectories = host.rollout(episodes, oracle.OraclePolicy(task.questions), tokenizer=tokenizer, embed_fn=EMBED,
                              config=RolloutConfig(agent=AGENT, memory=memory))
  assert [t.reward for t in trajectories] == [1.0, 1.0]
  reads = sum(turn.op_counts["update_query"] for t in trajectories for turn in t.turns)
  assert reads > 0
  assert all(len(turn.retrieved) <= 1 for t in trajectories for turn in t.turns)


@pytest.fixture(scope="module")
def model_policy(tokenizer):
  # The tiny default shape (vocabulary of the tiny tokenizer) with fewer layers: a random policy needs no depth.
  model = Qwen3(dataclasses.replace(PRESETS["tiny_gqa"], num_layers=1), rngs=nnx.Rngs(0))
  config = SamplerConfig(max_new_tokens=8, temperature=1.0, prompt_buckets=(1024,), batch_buckets=(16,),
                         eos_ids=(tokenizer.eos_token_id,), pad_id=tokenizer.pad_token_id)
  return SamplerPolicy(Sampler(model, config, tokenizer=tokenizer), seed=0)


def test_random_model_rollout_4_prompts_x_4_samples_ends_and_writes_jsonl(tokenizer, task, model_policy, tmp_path):
  episodes = _episodes(task, 8, count=4, bundled=False)
  agent = dataclasses.replace(AGENT, chunk_tokens=64, overlap_tokens=8, max_steps=5)
  trajectories = host.rollout(episodes, model_policy, tokenizer=tokenizer, embed_fn=EMBED,
                              config=RolloutConfig(agent=agent, memory=MEMORY, num_samples=4))
  assert len(trajectories) == 16
  assert [(t.episode_id, t.sample) for t in trajectories] == [(e.id, g) for e in episodes for g in range(4)]
  for t in trajectories:
    assert t.done and 1 <= len(t.turns) <= 5
    assert 0.0 <= t.reward <= 1.0
    for turn in t.turns:
      assert turn.prompt_ids == tokenizer.encode(turn.prompt, add_special_tokens=False)
      assert 1 <= len(turn.response_ids) <= 8
      assert len(turn.response_logprobs) == len(turn.response_ids)
      assert all(lp <= 0.0 for lp in turn.response_logprobs)
      assert turn.loss_mask == [0] * len(turn.prompt_ids) + [1] * len(turn.response_ids)
      assert turn.invalid_ops == sum(not op["valid"] for op in turn.ops)
  # The G samples of one prompt see the same first observation and sample independently.
  first = [t.turns[0] for t in trajectories[:4]]
  assert len({turn.prompt for turn in first}) == 1
  assert len({tuple(turn.response_ids) for turn in first}) > 1

  path = tmp_path / "rollout.jsonl"
  write_jsonl(trajectories, path)
  rows = [json.loads(line) for line in path.read_text().splitlines()]
  assert len(rows) == 16
  assert rows[5]["turns"][0]["observation"] == trajectories[5].turns[0].observation
  assert rows[5]["turns"][0]["response"] == trajectories[5].turns[0].response
  assert {"ops", "storage_size", "op_counts", "retrieved"} <= set(rows[5]["turns"][0])
  assert "prompt_ids" not in rows[5]["turns"][0]


@pytest.mark.parametrize("method, overrides, memory_overrides", [
    ("memagent", {}, {}),
    ("rag", {}, {"top_k": 3}),
    ("full_context", {"context_tokens": 400}, {}),
    ("atommem", {"use_scratchpad": False}, {}),
    ("atommem", {"use_storage": False, "max_steps": 12}, {}),
    ("atommem", {"allow_update": False, "allow_delete": False}, {"top_k": 2}),
])
def test_baselines_and_ablations_run_episodes_end_to_end(tokenizer, task, method, overrides, memory_overrides):
  episodes = _episodes(task, 16, count=2)
  agent = dataclasses.replace(AGENT, method=method, **overrides)
  memory = dataclasses.replace(MEMORY, **memory_overrides)
  trajectories = host.rollout(episodes, oracle.OraclePolicy(task.questions, method=method), tokenizer=tokenizer,
                              embed_fn=EMBED, config=RolloutConfig(agent=agent, memory=memory))
  for episode, t in zip(episodes, trajectories):
    assert t.done and len(t.turns) <= agent.max_steps
    names = {op["type"] for turn in t.turns for op in turn.ops if op["valid"]}
    if method in ("rag", "full_context"):
      assert len(t.turns) == len(episode.questions)  # one answer turn per question, no reading
      assert all(turn.phase == "answer" for turn in t.turns) and names <= {"final_answer"}
      assert t.storage == [] and t.scratchpad == ""
    if method == "memagent":
      assert [turn.chunk_index for turn in t.turns if turn.phase == "read"] == list(range(len(
          [turn for turn in t.turns if turn.phase == "read"])))
      assert t.storage == [] and names <= {"update_memory", "final_answer"}
      assert t.reward == 1.0  # its notes carry every fact (the scratchpad is wide enough here)
    if overrides.get("use_scratchpad") is False:
      assert t.scratchpad == "" and "update_memory" not in names
      assert all("Scratchpad:\n(disabled)" in turn.observation for turn in t.turns)
    if overrides.get("use_storage") is False:
      assert t.storage == [] and not names & {"add_memory", "update_query", "modify_memory", "delete_memory"}
      assert t.reward == 0.0
  if method == "full_context":
    assert all(len(tokenizer.encode(turn.observation)) < 400 + 100 for t in trajectories for turn in t.turns)
  if method == "rag":
    assert all(turn.observation.count("Passage ") <= 3 for t in trajectories for turn in t.turns)
  if method == "atommem" and not overrides.get("use_scratchpad", True):
    invalid = sum(turn.invalid_ops for t in trajectories for turn in t.turns)
    assert invalid > 0  # the oracle's scratchpad writes are counted, as invalid


def test_policy_returning_the_wrong_number_of_responses_is_a_clear_error(tokenizer, task):
  episodes = _episodes(task, 8, count=2)
  with pytest.raises(ValueError, match="one string per observation"):
    host.rollout(episodes, lambda observations: [], tokenizer=tokenizer, embed_fn=EMBED,
                 config=RolloutConfig(agent=AGENT, memory=MEMORY))
