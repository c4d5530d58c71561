"""What a run reads before its first step: the task split (one world or many) and the oracle's SFT pairs."""
import dataclasses

import pytest

from atommem_jax.agent.config import AgentConfig
from atommem_jax.data import synthetic
from atommem_jax.data.long_context import LongContextConfig
from atommem_jax.data.tokenizer import load_tiny_tokenizer
from atommem_jax.memory.embedders import HashingEmbedder
from atommem_jax.train import inputs
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.train.config import ModelInitConfig, SFTStageConfig, TaskConfig, TrainConfig

SMALL_WORLD = synthetic.SyntheticConfig(seed=3, num_documents=16, num_questions=4, question_kinds=("birth_country",))


def _world_of(example_id: str) -> int:
  return int(example_id.split("-")[1])  # "synthetic-SEED-I"


def test_many_worlds_hold_out_whole_worlds_and_never_mix_them():
  config = TaskConfig(synthetic=SMALL_WORLD, synthetic_worlds=12, num_eval_episodes=6,
                      long_context=LongContextConfig(num_docs=4, seed=5))
  task = inputs.build_task(config)
  assert task == inputs.build_task(config)  # a pure function of the config
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
  batches = inputs._oracle_batches(task.train_examples, task.oracle_keys)  # pylint: disable=protected-access
  assert sum(len(examples) for examples, _ in batches) == 40
  for examples, table in batches:
    for example in examples:
      for question, question_id in zip(example.questions, example.question_ids):
        assert table[question].record.id == question_id


def test_one_world_holds_out_the_first_shuffled_episodes():
  config = TaskConfig(synthetic=dataclasses.replace(SMALL_WORLD, num_documents=32, num_questions=10),
                      num_eval_episodes=4, long_context=LongContextConfig(num_docs=4, seed=5))
  task = inputs.build_task(config)
  ids = {e.id for e in task.eval_episodes} | {e.id for e in task.train_examples}
  assert len(task.eval_episodes) == 4 and len(task.train_examples) == 6 and len(ids) == 10
  with pytest.raises(ValueError, match="nothing to train on"):
    inputs.build_task(dataclasses.replace(config, num_eval_episodes=10))
  # GRPO at 8 documents: the same questions held out, none of them in GRPO's examples.
  longer = inputs.build_task(dataclasses.replace(config, grpo_num_docs=8))
  held_out = [e.id for e in longer.eval_episodes]
  assert [e.id for e in longer.grpo_eval_episodes] == held_out and longer.eval_episodes == task.eval_episodes
  assert len(longer.grpo_examples) == 6 and not set(held_out) & {e.id for e in longer.grpo_examples}


def test_grpo_can_read_longer_documents_than_sft_with_the_same_questions_held_out():
  config = TaskConfig(synthetic=SMALL_WORLD, synthetic_worlds=6, num_eval_episodes=4, grpo_num_docs=8,
                      long_context=LongContextConfig(num_docs=4, seed=5))
  task = inputs.build_task(config)
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
  same = inputs.build_task(dataclasses.replace(config, grpo_num_docs=4))
  assert same.rollout_examples == same.train_examples and [n for n, _ in same.eval_sets(limit=4)] == [4]
  with pytest.raises(ValueError, match="grpo_num_docs must be >= 0"):
    TaskConfig(grpo_num_docs=-1)
  with pytest.raises(ValueError, match="examples_path holds one size"):
    TaskConfig(examples_path="built.jsonl", grpo_num_docs=8)


def test_grpo_can_mix_in_a_fraction_of_sft_size_examples():
  config = TaskConfig(synthetic=SMALL_WORLD, synthetic_worlds=6, num_eval_episodes=4, grpo_num_docs=8,
                      grpo_short_fraction=0.25, long_context=LongContextConfig(num_docs=4, seed=5))
  task = inputs.build_task(config)
  plain = inputs.build_task(dataclasses.replace(config, grpo_short_fraction=0.0))
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


def test_the_oracle_answers_every_episode_of_many_worlds(tmp_path):
  agent = AgentConfig(chunk_tokens=96, overlap_tokens=8, max_chunks=8, max_steps=6, template_dir="compact")
  memory = MemoryConfig(capacity=16, entry_tokens=32, scratchpad_tokens=48, query_tokens=32, embed_dim=64, top_k=4)
  task = inputs.build_task(TaskConfig(synthetic=SMALL_WORLD, synthetic_worlds=30, num_eval_episodes=4,
                                      long_context=LongContextConfig(num_docs=4, seed=0)))
  config = TrainConfig(task=TaskConfig(), agent=agent, memory=memory, sft=SFTStageConfig(oracle_episodes=100))
  pairs = inputs.sft_pairs(config, task, load_tiny_tokenizer(), HashingEmbedder(memory.embed_dim), tmp_path)
  answers = [p.completion for p in pairs if "final_answer" in p.completion]
  assert len(answers) == 100  # every trajectory reached reward 1 (the pairs keep trajectories >= min_reward)
  assert (tmp_path / inputs.SFT_PAIRS_FILE).exists()


def test_recitation_pairs_state_each_sentence_of_the_prompt_once():
  task = inputs.build_task(TaskConfig(synthetic=SMALL_WORLD, synthetic_worlds=3, num_eval_episodes=4,
                                      long_context=LongContextConfig(num_docs=4, seed=0)))
  tokenizer = load_tiny_tokenizer()
  pairs = inputs.recitation_pairs(task.train_examples, tokenizer, seed=0)
  assert len(pairs) == len(task.train_examples)
  orders = set()
  for pair, example in zip(pairs, task.train_examples):
    assert pair["prompt"].startswith(f"<|im_start|>system\n{inputs.RECITE_SYSTEM}")
    assert example.context in pair["prompt"]
    assert pair["completion"].endswith(tokenizer.eos_token)
    stated = pair["completion"].removesuffix(tokenizer.eos_token).split(". ")
    stated = [s if s.endswith(".") else s + "." for s in stated]
    expected = [s if s.endswith(".") else s + "." for d in example.documents for s in d.text.split(". ")]
    assert sorted(stated) == sorted(expected)
    orders.add(stated == expected)
  assert False in orders  # shuffled, not merely copied in order


def test_copy_drills_repeat_the_prompt_names_and_depend_only_on_seed_and_step():
  tokenizer = load_tiny_tokenizer()
  batch = inputs.copy_drill_batch(tokenizer, seed=0, step=7, batch_size=8)
  again = inputs.copy_drill_batch(tokenizer, seed=0, step=7, batch_size=8)
  other = inputs.copy_drill_batch(tokenizer, seed=0, step=8, batch_size=8)
  assert (batch.tokens_NxT == again.tokens_NxT).all() and not (batch.tokens_NxT == other.tokens_NxT).all()
  assert batch.tokens_NxT.shape == (8, inputs.COPY_ROW_TOKENS)
  for row in range(8):
    ids = batch.tokens_NxT[row][batch.mask_NxT[row]].tolist()
    completion = batch.tokens_NxT[row][batch.loss_mask_NxT[row]].tolist()
    assert completion[-1] == tokenizer.eos_token_id
    names = tokenizer.decode(completion[:-1])
    assert inputs.COPY_LENGTHS[0] <= len(names.split()) <= inputs.COPY_LENGTHS[1]
    assert set(names.split()) <= set(synthetic.SHORT_NAMES)
    assert len(completion) - 1 == len(names.split())  # one token per name: every loss token is a copy target
    assert tokenizer.decode(ids[:len(ids) - len(completion)]) == names + "\n"


def test_recitation_drills_target_the_evidence_chain_and_the_objects_and_depend_only_on_seed_and_step():
  task = inputs.build_task(TaskConfig(synthetic=SMALL_WORLD, synthetic_worlds=6, num_eval_episodes=4,
                                      long_context=LongContextConfig(num_docs=4, seed=0)))
  tokenizer = load_tiny_tokenizer()
  config = SFTStageConfig(steps=10, drill="recite", drill_steps=2, drill_every=3, drill_batch_size=8)
  assert [inputs.is_drill_step(config, s) for s in range(11)] == [True, True, True, False, False, True, False,
                                                                   False, True, False, False]
  batch = inputs.drill_batch(config, tokenizer, task.train_examples, seed=0, step=7)
  again = inputs.drill_batch(config, tokenizer, task.train_examples, seed=0, step=7)
  other = inputs.drill_batch(config, tokenizer, task.train_examples, seed=0, step=8)
  assert (batch.tokens_NxT == again.tokens_NxT).all() and not (batch.tokens_NxT == other.tokens_NxT).all()
  contexts = {e.context: e for e in task.train_examples}
  for row in range(8):
    text = tokenizer.decode(batch.tokens_NxT[row][batch.mask_NxT[row]])
    example = next(e for c, e in contexts.items() if text.startswith(c))  # the row opens with one example
    chain = f"{example.questions[0]} {' '.join(example.supporting_facts[0])}\n"
    assert chain in text
    targets = batch.tokens_NxT[row][batch.loss_mask_NxT[row]].tolist()
    evidence = tokenizer.encode(" " + " ".join(example.supporting_facts[0]), add_special_tokens=False)
    assert targets[:len(evidence)] == evidence  # the whole evidence chain, then one object per restated fact
    recited = text.split(chain, 1)[1].split(". ")
    objects = [tokenizer.decode([t]).strip() for t in targets[len(evidence):]]
    assert objects == [s.removesuffix(".").rsplit(" ", 1)[1] for s in recited if s.strip()]
    assert not any(o.isdigit() for o in objects) and all(o in example.context for o in objects)


def test_drill_settings_are_checked():
  with pytest.raises(ValueError, match="sft.drill_every"):
    TrainConfig(sft=SFTStageConfig(steps=4, drill_every=-1))
  with pytest.raises(ValueError, match="drill_batch_size"):
    TrainConfig(sft=SFTStageConfig(steps=4, drill_batch_size=3), mesh=dataclasses.replace(TrainConfig().mesh, data=2))
  # More drill steps than SFT steps: all of SFT is drills (a GRPO-only run keeps the tiny default's drill_steps).
  config = SFTStageConfig(steps=3, drill_steps=250)
  assert [inputs.is_drill_step(config, s) for s in range(5)] == [True, True, True, False, False]


def test_a_missing_tokenizer_or_checkpoint_directory_is_one_clear_error(tmp_path):
  missing = tmp_path / "no_such_run" / "params_sft"
  with pytest.raises(FileNotFoundError, match=r"model\.checkpoint: no directory .*no_such_run/params_sft"):
    inputs.load_tokenizer(ModelInitConfig(checkpoint=str(missing)))
  with pytest.raises(FileNotFoundError, match=r"model\.tokenizer: no directory"):
    inputs.load_tokenizer(ModelInitConfig(tokenizer=str(missing)))
