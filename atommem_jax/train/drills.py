"""SFT drills (`sft.drill`): dense practice batches for a model trained from scratch, on the SFT steps
`is_drill_step` picks; each batch is a pure function of (seed, step), so resuming needs no state."""
from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np

from atommem_jax.data import synthetic
from atommem_jax.data.long_context import LongContextExample
from atommem_jax.train import batching
from atommem_jax.train.config import SFTStageConfig

COPY_LENGTHS = (16, 32)  # names per copy drill, inclusive range
COPY_ROW_TOKENS = 72  # a copy drill's row: the names, a newline, the names again, end-of-sequence
RECITE_ROW_BUCKETS = (128, 192, 256)  # a recitation drill's row: the documents, then one line per fact


def is_drill_step(config: SFTStageConfig, step: int) -> bool:
  """Whether SFT step `step` trains on drills: the first `drill_steps`, then every `drill_every`-th step."""
  if step >= config.steps:
    return False
  if step < config.drill_steps:
    return True
  return bool(config.drill_every) and (step - config.drill_steps) % config.drill_every == 0


def drill_batch(config: SFTStageConfig, tokenizer: Any, examples: Sequence[LongContextExample], seed: int,
                step: int) -> batching.TrainBatch:
  """SFT step `step`'s drills.

  A pretrained LLM arrives knowing how to find and copy a fact from its context; a randomly initialised tiny model
  does not, and the oracle's turns teach it slowly (a few names per turn). Drills give that skill a dense signal:
  - "copy": a line of 16-32 random names, then the same line; every name is a copy target (an induction head).
  - "recite": an example's documents, then its questions, each followed by its supporting facts in reasoning order
    (the first subject is copied from the question, each object looked up by its subject: the steps of a note or an
    answer), then every other fact of the documents (years left out) restated in a shuffled order, its object the
    target.
  """
  if config.drill == "copy":
    return copy_drill_batch(tokenizer, seed, step, config.drill_batch_size)
  return recite_drill_batch(tokenizer, examples, seed, step, config.drill_batch_size, config.recite_layout)


def copy_pairs(count: int, tokenizer: Any, seed: int | str) -> list[dict[str, str]]:
  """Copy drills: the prompt is a line of random short names, the completion repeats it."""
  rng = random.Random(f"copy-{seed}")
  pairs = []
  for _ in range(count):
    names = "".join(" " + rng.choice(synthetic.SHORT_NAMES) for _ in range(rng.randint(*COPY_LENGTHS)))
    pairs.append({"prompt": names + "\n", "completion": names + tokenizer.eos_token})
  return pairs


def copy_drill_batch(tokenizer: Any, seed: int, step: int, batch_size: int) -> batching.TrainBatch:
  """Copy drills; with every name a copy target the tiny model learns to copy in about 250 steps at learning rate
  1e-3 (about 125 steps later at 3e-3)."""
  pairs = copy_pairs(batch_size, tokenizer, seed=f"{seed}-{step}")
  prompts = [tokenizer.encode(p["prompt"], add_special_tokens=False) for p in pairs]
  completions = [tokenizer.encode(p["completion"], add_special_tokens=False) for p in pairs]
  batch, stats = batching.pack_rows(prompts, completions, buckets=(COPY_ROW_TOKENS,), pad_id=tokenizer.pad_token_id)
  if stats["truncated_rows"]:
    raise ValueError(f"copy drills exceed {COPY_ROW_TOKENS} tokens with this tokenizer; they need single-token "
                     f"names (the tiny tokenizer)")
  return batch


def recite_drill_batch(tokenizer: Any, examples: Sequence[LongContextExample], seed: int, step: int,
                       batch_size: int, layout: str = "inline") -> batching.TrainBatch:
  """Recitation drills: the loss is on the supporting facts and on each restated fact's object (its subject and
  relation are the cue).

  `layout` "inline" writes a question's chain after it on its line (` Bafo was born in Kaka. Kaka is ...`), so every
  name there is the space-prefixed token. "lines" writes each fact on its own line and then `\boxed{answer}`, also a
  target: a byte-level tokenizer gives a name at a line start or after `{` a different token (`Bafo`) from the one
  inside a sentence (` Bafo`), and those bare forms are what the oracle's turns copy (`<add_memory>Bafo was born in
  Kaka.</add_memory><add_memory>Kaka ...`, `\boxed{Nezu}`): with only "inline" rows a model can learn every lookup
  and still have no copy into the bare form (seed 2 of the tiny default, BUILD_NOTES).
  """
  if layout not in ("inline", "lines"):
    raise ValueError(f"unknown recitation layout {layout!r}; use 'inline' or 'lines'")
  if not examples:
    raise ValueError("recitation drills need training examples")
  rng = random.Random(f"recite-{seed}-{step}")
  rows = []
  for _ in range(batch_size):
    example = examples[rng.randrange(len(examples))]
    ids: list[int] = []
    targets: list[bool] = []

    def add(text: str, is_target: bool) -> None:
      piece = tokenizer.encode(text, add_special_tokens=False)
      ids.extend(piece)
      targets.extend([is_target] * len(piece))

    add(example.context + "\n", False)
    for question, evidence, answers in zip(example.questions, example.supporting_facts, example.answers):
      add(question, False)
      if layout == "inline":
        add(" " + " ".join(evidence), True)
      else:
        for fact in evidence:
          add("\n", False)
          add(fact, True)
        add("\n\\boxed{", False)
        add(answers[0], True)
        add("}", False)
      add("\n", False)
    stated = {s.removesuffix(".") for evidence in example.supporting_facts for s in evidence}
    sentences = [s.removesuffix(".") for d in example.documents for s in d.text.split(". ")
                 if s.removesuffix(".") not in stated]
    facts = [s.rsplit(" ", 1) for s in sentences if not s.rsplit(" ", 1)[-1].isdigit()]
    rng.shuffle(facts)
    for cue, obj in facts:
      add(" " + cue, False)
      add(" " + obj, True)
      add(".", False)
    rows.append((ids, targets))
  length = batching.bucket_length(max(len(ids) for ids, _ in rows), RECITE_ROW_BUCKETS)
  tokens = np.full((batch_size, length), tokenizer.pad_token_id, np.int32)
  mask = np.zeros((batch_size, length), bool)
  loss_mask = np.zeros((batch_size, length), bool)
  for i, (ids, targets) in enumerate(rows):
    tokens[i, :len(ids)], mask[i, :len(ids)], loss_mask[i, :len(ids)] = ids, True, targets
  zeros = np.zeros((batch_size, length), np.float32)
  return batching.TrainBatch(tokens_NxT=tokens, positions_NxT=np.where(mask, np.arange(length), 0).astype(np.int32),
                             mask_NxT=mask, loss_mask_NxT=loss_mask, old_logprobs_NxT=zeros, ref_logprobs_NxT=zeros,
                             advantage_N=np.zeros((batch_size,), np.float32))
