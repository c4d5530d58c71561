"""A run's episodes: the task split (one world or many, one size or two) is a pure function of the task config."""
import dataclasses

import pytest

from atommem_jax.data import synthetic
from atommem_jax.data.long_context import LongContextConfig
from atommem_jax.train import oracle_pairs, task_split
from atommem_jax.train.config import TaskConfig

SMALL_WORLD = synthetic.SyntheticConfig(seed=3, num_documents=16, num_questions=4, question_kinds=("birth_country",))


def _world_of(example_id: str) -> int:
  return int(example_id.split("-")[1])  # "synthetic-SEED-I"


def test_many_worlds_hold_out_whole_worlds_and_never_mix_them():
  config = TaskConfig(synthetic=SMALL_WORLD, synthetic_worlds=12, num_eval_episodes=6,
                      long_context=LongContextConfig(num_docs=4, seed=5))
  task = task_split.split_task(config)
  assert task == task_split.split_task(config)  # a pure function of the config
  held_out = {_world_of(e.id) for e in task.eval_episodes}
  trained = {_world_of(e.id) for e in task.train_examples}
  assert len(task.eval_episodes) == 6 and held_out == {3, 4}  # worlds 0, 1 (seeds 3, 4), four examples each
  assert trained == set(range(5, 15)) and len(task.train_examples) == 40
  documents = {w: set(synthetic.generate(dataclasses.replace(SMALL_WORLD, seed=w)).documents) for w in range(3, 15)}
  for example in task.train_examples:
    assert set(example.documents) <= documents[_world_of(example.id)]
  for example, key in zip(task.train_examples, task.oracle_keys):
    assert {q.record.id for q in key} >= set(example.question_ids)
  # Worlds reuse names, so one question text can mean different questions: each oracle batch is unambiguous.
  batches = oracle_pairs.oracle_batches(task.train_examples, task.oracle_keys)
  assert sum(len(examples) for examples, _ in batches) == 40
  for examples, table in batches:
    for example in examples:
      for question, question_id in zip(example.questions, example.question_ids):
        assert table[question].record.id == question_id


def test_one_world_holds_out_the_first_shuffled_episodes():
  config = TaskConfig(synthetic=dataclasses.replace(SMALL_WORLD, num_documents=32, num_questions=10),
                      num_eval_episodes=4, long_context=LongContextConfig(num_docs=4, seed=5))
  task = task_split.split_task(config)
  ids = {e.id for e in task.eval_episodes} | {e.id for e in task.train_examples}
  assert len(task.eval_episodes) == 4 and len(task.train_examples) == 6 and len(ids) == 10
  with pytest.raises(ValueError, match="nothing to train on"):
    task_split.split_task(dataclasses.replace(config, num_eval_episodes=10))
  # GRPO at 8 documents: the same questions held out, none of them in GRPO's examples.
  longer = task_split.split_task(dataclasses.replace(config, grpo_num_docs=8))
  held_out = [e.id for e in longer.eval_episodes]
  assert [e.id for e in longer.grpo_eval_episodes] == held_out and longer.eval_episodes == task.eval_episodes
  assert len(longer.grpo_examples) == 6 and not set(held_out) & {e.id for e in longer.grpo_examples}


def test_grpo_can_read_longer_documents_than_sft_with_the_same_questions_held_out():
  config = TaskConfig(synthetic=SMALL_WORLD, synthetic_worlds=6, num_eval_episodes=4, grpo_num_docs=8,
                      long_context=LongContextConfig(num_docs=4, seed=5))
  task = task_split.split_task(config)
  assert {e.num_docs for e in task.train_examples} == {4} and {e.num_docs for e in task.grpo_examples} == {8}
  assert task.rollout_examples == task.grpo_examples
  # The same held-out questions at both sizes; no GRPO example asks one of them.
  assert [e.questions for e in task.grpo_eval_episodes] == [e.questions for e in task.eval_episodes]
  assert [e.id for e in task.grpo_eval_episodes] == [e.id for e in task.eval_episodes]
  held_out_worlds = {_world_of(e.id) for e in task.eval_episodes}
  assert not held_out_worlds & {_world_of(e.id) for e in task.grpo_examples}
  assert len(task.grpo_examples) == len(task.train_examples) == 20
  sets = task.eval_sets(limit=3)
  assert [(n, len(episodes)) for n, episodes in sets] == [(4, 3), (8, 3)]
  assert all(e.document.count("Document ") == 8 for e in sets[1][1])
  # One size: GRPO reads SFT's examples, and there is one evaluation set.
  same = task_split.split_task(dataclasses.replace(config, grpo_num_docs=4))
  assert same.rollout_examples == same.train_examples and [n for n, _ in same.eval_sets(limit=4)] == [4]
  with pytest.raises(ValueError, match="grpo_num_docs must be >= 0"):
    TaskConfig(grpo_num_docs=-1)
  with pytest.raises(ValueError, match="examples_path holds one size"):
    TaskConfig(examples_path="built.jsonl", grpo_num_docs=8)


def test_grpo_can_mix_in_a_fraction_of_sft_size_examples():
  config = TaskConfig(synthetic=SMALL_WORLD, synthetic_worlds=6, num_eval_episodes=4, grpo_num_docs=8,
                      grpo_short_fraction=0.25, long_context=LongContextConfig(num_docs=4, seed=5))
  task = task_split.split_task(config)
  plain = task_split.split_task(dataclasses.replace(config, grpo_short_fraction=0.0))
  sizes = [e.num_docs for e in task.grpo_examples]
  # 20 long examples as before, then round(20 * 0.25 / 0.75) = 7 of SFT's own training examples.
  assert task.grpo_examples[:20] == plain.grpo_examples and sizes == [8] * 20 + [4] * 7
  assert set(task.grpo_examples[20:]) <= set(task.train_examples)
  held_out_worlds = {_world_of(e.id) for e in task.eval_episodes}
  assert not held_out_worlds & {_world_of(e.id) for e in task.grpo_examples}
  # Evaluation still reads the held-out questions at both sizes, the longer one labelled by its size.
  assert [n for n, _ in task.eval_sets(limit=4)] == [4, 8]
  with pytest.raises(ValueError, match="grpo_short_fraction must be in"):
    TaskConfig(grpo_short_fraction=1.0)
