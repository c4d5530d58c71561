"""SFT drills: copy and recitation batches depend only on (seed, step) and target what they claim to."""
import dataclasses

import pytest

from atommem_jax.data import synthetic
from atommem_jax.data.long_context import LongContextConfig
from atommem_jax.data.tokenizer import load_tiny_tokenizer
from atommem_jax.train import drills, task_split
from atommem_jax.train.config import SFTStageConfig, TaskConfig, TrainConfig

SMALL_WORLD = synthetic.SyntheticConfig(seed=3, num_documents=16, num_questions=4, question_kinds=("birth_country",))


def test_copy_drills_repeat_the_prompt_names_and_depend_only_on_seed_and_step():
  tokenizer = load_tiny_tokenizer()
  batch = drills.copy_drill_batch(tokenizer, seed=0, step=7, batch_size=8)
  again = drills.copy_drill_batch(tokenizer, seed=0, step=7, batch_size=8)
  other = drills.copy_drill_batch(tokenizer, seed=0, step=8, batch_size=8)
  assert (batch.tokens_NxT == again.tokens_NxT).all() and not (batch.tokens_NxT == other.tokens_NxT).all()
  assert batch.tokens_NxT.shape == (8, drills.COPY_ROW_TOKENS)
  for row in range(8):
    ids = batch.tokens_NxT[row][batch.mask_NxT[row]].tolist()
    completion = batch.tokens_NxT[row][batch.loss_mask_NxT[row]].tolist()
    assert completion[-1] == tokenizer.eos_token_id
    names = tokenizer.decode(completion[:-1])
    assert drills.COPY_LENGTHS[0] <= len(names.split()) <= drills.COPY_LENGTHS[1]
    assert set(names.split()) <= set(synthetic.SHORT_NAMES)
    assert len(completion) - 1 == len(names.split())  # one token per name: every loss token is a copy target
    assert tokenizer.decode(ids[:len(ids) - len(completion)]) == names + "\n"


def test_recitation_drills_target_the_evidence_chain_and_the_objects_and_depend_only_on_seed_and_step():
  task = task_split.split_task(TaskConfig(synthetic=SMALL_WORLD, synthetic_worlds=6, num_eval_episodes=4,
                                      long_context=LongContextConfig(num_docs=4, seed=0)))
  tokenizer = load_tiny_tokenizer()
  config = SFTStageConfig(steps=10, drill="recite", drill_steps=2, drill_every=3, drill_batch_size=8)
  assert [drills.is_drill_step(config, s) for s in range(11)] == [True, True, True, False, False, True, False,
                                                                   False, True, False, False]
  batch = drills.drill_batch(config, tokenizer, task.train_examples, seed=0, step=7)
  again = drills.drill_batch(config, tokenizer, task.train_examples, seed=0, step=7)
  other = drills.drill_batch(config, tokenizer, task.train_examples, seed=0, step=8)
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


def test_line_recitation_drills_target_the_bare_name_forms_the_oracle_copies():
  task = task_split.split_task(TaskConfig(synthetic=SMALL_WORLD, synthetic_worlds=6, num_eval_episodes=4,
                                      long_context=LongContextConfig(num_docs=4, seed=0)))
  tokenizer = load_tiny_tokenizer()
  config = SFTStageConfig(steps=10, drill="recite", drill_steps=2, recite_layout="lines", drill_batch_size=8)
  batch = drills.drill_batch(config, tokenizer, task.train_examples, seed=0, step=7)
  inline = drills.drill_batch(dataclasses.replace(config, recite_layout="inline"), tokenizer, task.train_examples,
                              seed=0, step=7)
  contexts = {e.context: e for e in task.train_examples}
  for row in range(8):
    text = tokenizer.decode(batch.tokens_NxT[row][batch.mask_NxT[row]])
    example = next(e for c, e in contexts.items() if text.startswith(c))  # the same examples as "inline" picks
    assert tokenizer.decode(inline.tokens_NxT[row][inline.mask_NxT[row]]).startswith(example.context)
    facts, answer = example.supporting_facts[0], example.answers[0][0]
    block = example.questions[0] + "".join("\n" + f for f in facts) + "\n\\boxed{" + answer + "}\n"
    assert block in text
    targets = batch.tokens_NxT[row][batch.loss_mask_NxT[row]].tolist()
    expected = [t for f in facts for t in tokenizer.encode(f, add_special_tokens=False)]
    expected += tokenizer.encode(answer, add_special_tokens=False)
    assert targets[:len(expected)] == expected
    # The chain's subjects and the boxed answer are the bare name tokens, not the in-sentence ones.
    subject = facts[0].split(" ", 1)[0]
    bare, spaced = (tokenizer.encode(n, add_special_tokens=False) for n in (subject, " " + subject))
    assert bare != spaced and targets[:len(bare)] == bare
  with pytest.raises(ValueError, match="recitation layout"):
    drills.recite_drill_batch(tokenizer, task.train_examples, 0, 0, 8, layout="table")


def test_drill_settings_are_checked():
  with pytest.raises(ValueError, match="sft.drill_every"):
    TrainConfig(sft=SFTStageConfig(steps=4, drill_every=-1))
  with pytest.raises(ValueError, match="drill_batch_size"):
    TrainConfig(sft=SFTStageConfig(steps=4, drill_batch_size=3), mesh=dataclasses.replace(TrainConfig().mesh, data=2))
  # More drill steps than SFT steps: all of SFT is drills (a GRPO-only run keeps the tiny default's drill_steps).
  config = SFTStageConfig(steps=3, drill_steps=250)
  assert [drills.is_drill_step(config, s) for s in range(5)] == [True, True, True, False, False]
