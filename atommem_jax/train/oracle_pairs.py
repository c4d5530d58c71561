"""The SFT stage's (prompt, completion) pairs: a JSONL file, or the oracle's good trajectories on the training
episodes (written once to `WORKDIR/sft_pairs.jsonl`, atomically, and reused on resume), plus recitation pairs.
"""
from __future__ import annotations

import random
from typing import Any, Sequence

import jax
from absl import logging
from etils import epath

from atommem_jax import storage
from atommem_jax.agent import oracle, protocol
from atommem_jax.agent.config import RolloutConfig
from atommem_jax.agent.engines import host
from atommem_jax.agent.envs.long_context import Episode
from atommem_jax.data import pipeline, synthetic
from atommem_jax.data.long_context import LongContextExample
from atommem_jax.train import sft
from atommem_jax.train.config import TrainConfig
from atommem_jax.train.task_split import TaskSplit

SFT_PAIRS_FILE = "sft_pairs.jsonl"
SFT_LATER_PAIRS_FILE = "sft_pairs_extra_notes.jsonl"  # the pairs from `sft.oracle_extra_notes_from` on


def has_later_pairs(sft_config: Any) -> bool:
  """Whether the SFT steps from `oracle_extra_notes_from` on read other pairs (the oracle with extra notes) than the
  steps before (the plain oracle)."""
  return bool(sft_config.oracle_extra_notes and sft_config.oracle_extra_notes_from and not sft_config.pairs_path)


def oracle_batches(examples: Sequence[LongContextExample], keys: Sequence[Sequence[synthetic.SyntheticQuestion]]
                   ) -> list[tuple[list[LongContextExample], dict[str, synthetic.SyntheticQuestion]]]:
  """Examples grouped so that within a group no question text means two different questions (worlds reuse names,
  and the oracle knows a question by its text): first fit, in order."""
  batches: list[tuple[list[LongContextExample], dict[str, synthetic.SyntheticQuestion]]] = []
  for example, key in zip(examples, keys):
    table = {q.record.question: q for q in key}
    for batch_examples, batch_table in batches:
      if all(batch_table.get(text, q) is q for text, q in table.items()):
        batch_examples.append(example)
        batch_table.update(table)
        break
    else:
      batches.append(([example], table))
  return batches


def sft_pairs(config: TrainConfig, task: TaskSplit, tokenizer: Any, embed_fn: Any,
              workdir: epath.Path, *, later: bool = False) -> list[pipeline.SftPair]:
  """The SFT data: `sft.pairs_path`, or the oracle's good trajectories on training episodes (cached).

  The oracle stores extra notes (`sft.oracle_extra_notes`) in every pair when they start at step 0; with
  `sft.oracle_extra_notes_from` > 0 these are the plain oracle's pairs and `later=True` gives the extra-note ones.
  """
  staged = has_later_pairs(config.sft)
  if later and not staged:
    raise ValueError("later SFT pairs need sft.oracle_extra_notes > 0, sft.oracle_extra_notes_from > 0 and the "
                     "oracle (no sft.pairs_path)")
  extra_notes = config.sft.oracle_extra_notes if later or not staged else 0.0
  path = (storage.as_path(config.sft.pairs_path) if config.sft.pairs_path
          else workdir / (SFT_LATER_PAIRS_FILE if later else SFT_PAIRS_FILE))
  if not config.sft.pairs_path and not path.exists():
    if not task.oracle_keys:
      raise ValueError("sft.pairs_path is required: the oracle only plays the synthetic task")
    trajectories = []
    rollout_config = RolloutConfig(agent=config.agent, memory=config.memory, num_samples=1, seed=config.seed)
    n = config.sft.oracle_episodes
    for examples, table in oracle_batches(task.train_examples[:n], task.oracle_keys[:n]):
      trajectories += host.rollout([Episode.from_example(e) for e in examples],
                                   oracle.OraclePolicy(list(table.values()), extra_notes=extra_notes,
                                                       seed=config.seed), tokenizer=tokenizer,
                                   embed_fn=embed_fn, config=rollout_config)
    pairs = oracle.oracle_sft_pairs(trajectories, tokenizer, min_reward=config.sft.min_reward)
    if not pairs:
      raise ValueError(f"no oracle trajectory reached reward {config.sft.min_reward}; nothing to fine-tune on")
    pairs += recitation_pairs(task.train_examples[n:n + config.sft.recitation_pairs], tokenizer, config.seed)
    return keep_pairs(pairs, trajectories, path, "oracle")
  return [pipeline.SftPair(prompt=p, completion=c, id=f"{path.name}:{i + 1}")
          for i, (p, c) in enumerate(sft.read_sft_pairs(path))]


RECITE_SYSTEM = "Recite every fact of the document, in any order."


def recitation_pairs(examples: Sequence[LongContextExample], tokenizer: Any, seed: int) -> list[dict[str, str]]:
  """Reading practice for a model trained from scratch: the prompt shows an example's documents, the completion
  states each of their sentences once, in a shuffled order.

  A pretrained LLM arrives knowing how to find and copy a fact from its context; a randomly initialised tiny model
  does not, and the oracle's turns teach it slowly (a few names per turn). Here every sentence's object is a lookup
  keyed by its subject, so the same skill gets a dense signal.
  """
  rng = random.Random(seed)
  pairs = []
  for example in examples:
    sentences = [s if s.endswith(".") else s + "." for d in example.documents for s in d.text.split(". ")]
    rng.shuffle(sentences)
    pairs.append({"prompt": protocol.chat_prompt(tokenizer, RECITE_SYSTEM, example.context),
                  "completion": " ".join(sentences) + tokenizer.eos_token})
  return pairs


def keep_pairs(pairs: list[dict[str, str]], trajectories: list[Any], path: Any, what: str) -> list[pipeline.SftPair]:
  """Writes an oracle's SFT pairs to `path` (process 0) for the runs that resume, and returns them."""
  if jax.process_index() == 0:
    sft.write_sft_pairs(path, [(p["prompt"], p["completion"]) for p in pairs])
  logging.info("%s: %d trajectories, mean reward %.3f, %d SFT pairs -> %s", what, len(trajectories),
               sum(t.reward for t in trajectories) / len(trajectories), len(pairs), path)
  return [pipeline.SftPair(prompt=p["prompt"], completion=p["completion"], id=f"oracle-{i}")
          for i, p in enumerate(pairs)]
