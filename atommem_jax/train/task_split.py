"""A run's episodes: the task's long-context examples split into training examples and held-out episodes.

`split_task(config)` is a pure function of the task config: the same examples, shuffled with the builder's seed,
every time a run starts or resumes.
"""
from __future__ import annotations

import dataclasses
import random

from atommem_jax.agent.envs.long_context import Episode
from atommem_jax.data import long_context, pipeline, readers, synthetic
from atommem_jax.data.long_context import LongContextExample
from atommem_jax.train.config import TaskConfig


@dataclasses.dataclass(frozen=True)
class TaskSplit:
  """A run's episodes: what SFT and GRPO train on and what is held out for its greedy evaluations."""

  train_examples: tuple[LongContextExample, ...]
  eval_episodes: tuple[Episode, ...]
  # Per training example, the questions of its synthetic world (the oracle's answer key); empty for native datasets.
  oracle_keys: tuple[tuple[synthetic.SyntheticQuestion, ...], ...] = ()
  # With `grpo_num_docs`: GRPO's training examples and the same held-out questions at that size.
  grpo_examples: tuple[LongContextExample, ...] = ()
  grpo_eval_episodes: tuple[Episode, ...] = ()

  @property
  def rollout_examples(self) -> tuple[LongContextExample, ...]:
    return self.grpo_examples or self.train_examples

  def eval_sets(self, limit: int) -> list[tuple[int, tuple[Episode, ...]]]:
    """`(documents per episode, the first `limit` held-out episodes)` for each size trained at."""
    sets = [(self.eval_episodes, self.train_examples), (self.grpo_eval_episodes, self.grpo_examples)]
    return [(examples[0].num_docs, episodes[:limit]) for episodes, examples in sets if episodes[:limit]]


def split_task(config: TaskConfig) -> TaskSplit:
  """Long-context examples, shuffled with the builder's seed; the first `num_eval_episodes` are held out.

  With several synthetic worlds (`synthetic_worlds`), the held-out episodes are whole worlds (the first ones) that
  training never sees, and every example draws its documents from one world only. With `grpo_num_docs`, the same
  split is made again at that size for GRPO; no question held out at either size is trained on at the other.
  `grpo_short_fraction` of GRPO's examples are then SFT-size training examples.
  """
  held_out, train = _split(config, config.long_context)
  task = TaskSplit(train_examples=tuple(e for e, _ in train),
              eval_episodes=tuple(Episode.from_example(e) for e, _ in held_out),
              oracle_keys=tuple(key for _, key in train) if train[0][1] else ())
  if config.grpo_num_docs in (0, config.long_context.num_docs):
    return task
  grpo_held_out, grpo_train = _split(config, dataclasses.replace(config.long_context, num_docs=config.grpo_num_docs))
  held_out_ids = {i for e, _ in held_out + grpo_held_out for i in e.question_ids}
  grpo_examples = tuple(e for e, _ in grpo_train if held_out_ids.isdisjoint(e.question_ids))
  if not grpo_examples:
    raise ValueError(f"no {config.grpo_num_docs}-document example is free of held-out questions")
  # SFT-size examples after the longer ones (the pipeline shuffles them in; `eval_sets` reads the size of the first).
  num_short = min(len(task.train_examples),
                  round(len(grpo_examples) * config.grpo_short_fraction / (1.0 - config.grpo_short_fraction)))
  grpo_examples += task.train_examples[:num_short]
  return dataclasses.replace(task, grpo_examples=grpo_examples, grpo_eval_episodes=tuple(
      Episode.from_example(e) for e, _ in grpo_held_out))


Keyed = list[tuple[LongContextExample, tuple[synthetic.SyntheticQuestion, ...]]]


def _split(config: TaskConfig, bundling: long_context.LongContextConfig) -> tuple[Keyed, Keyed]:
  """`(held out, train)` at `bundling`'s size, each example with its world's answer key (empty for native data)."""
  if config.dataset == "synthetic" and not config.examples_path:
    groups = [long_context.build_synthetic_world(config.synthetic, bundling, w) for w in range(config.synthetic_worlds)]
  elif config.examples_path:
    groups = [(pipeline.read_examples(config.examples_path), ())]
  else:
    groups = [(long_context.build_examples(readers.read_dataset(config.dataset, config.path), bundling), ())]
  if len(groups) == 1:
    keyed = [(e, groups[0][1]) for e in groups[0][0]]
    random.Random(bundling.seed).shuffle(keyed)
    held_out, train = keyed[:config.num_eval_episodes], keyed[config.num_eval_episodes:]
  else:
    held_out, world = [], 0
    while len(held_out) < config.num_eval_episodes and world < len(groups):
      held_out += [(e, groups[world][1]) for e in groups[world][0]]
      world += 1
    held_out = held_out[:config.num_eval_episodes]  # the rest of the last held-out world is not trained on either
    train = [(e, key) for examples, key in groups[world:] for e in examples]
    random.Random(bundling.seed).shuffle(train)
  if not train or len(held_out) < config.num_eval_episodes:
    raise ValueError(f"{sum(len(g[0]) for g in groups)} examples leave nothing to train on after holding out "
                     f"{config.num_eval_episodes} for evaluation")
  return held_out, train
