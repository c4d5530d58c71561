"""What a run reads before its first step: tokenizer, episodes, SFT pairs, the initial model; and what it exports.

Nothing here is written to the workdir except the oracle's SFT pairs (`sft_pairs.jsonl`, written atomically and
reused on resume) and the exported parameter dirs (`params_sft/`, `params/`) that evaluation restores.
"""
from __future__ import annotations

import dataclasses
import pathlib
import random
from typing import Any, Sequence

import jax
import numpy as np
from absl import logging
from etils import epath
from flax import nnx
from jax.sharding import Mesh

from atommem_jax import checkpoint as checkpoint_lib
from atommem_jax import distributed, storage
from atommem_jax.agent import oracle, protocol
from atommem_jax.agent.config import RolloutConfig
from atommem_jax.agent.engines import host
from atommem_jax.agent.envs.long_context import Episode
from atommem_jax.data import long_context, pipeline, readers, synthetic
from atommem_jax.data.long_context import LongContextExample
from atommem_jax.data.tokenizer import load_tiny_tokenizer, tiny_tokenizer_dir
from atommem_jax.model import Qwen3Config, abstract_model, get_preset
from atommem_jax.train import batching, sft, step as step_lib
from atommem_jax.train.config import ModelInitConfig, SFTStageConfig, TaskConfig, TrainConfig

SFT_PAIRS_FILE = "sft_pairs.jsonl"


@dataclasses.dataclass(frozen=True)
class Task:
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


def tokenizer_source(config: ModelInitConfig) -> str:
  if config.tokenizer:
    return config.tokenizer
  if config.checkpoint:
    return config.checkpoint
  return tiny_tokenizer_dir()


def load_tokenizer(config: ModelInitConfig) -> Any:
  source = tokenizer_source(config)
  if source == tiny_tokenizer_dir():
    return load_tiny_tokenizer()
  if not pathlib.Path(source).is_dir():
    field = "model.tokenizer" if config.tokenizer else "model.checkpoint"
    raise FileNotFoundError(f"{field}: no directory {source} (tokenizers are read from local directories only)")
  import transformers  # pylint: disable=g-import-not-at-top
  tokenizer = transformers.AutoTokenizer.from_pretrained(source)
  for name in ("eos_token_id", "pad_token_id"):
    if getattr(tokenizer, name) is None:
      raise ValueError(f"tokenizer at {source} defines no {name.removesuffix('_id')} token; training needs one")
  return tokenizer


def build_task(config: TaskConfig) -> Task:
  """Long-context examples, shuffled with the builder's seed; the first `num_eval_episodes` are held out.

  With several synthetic worlds (`synthetic_worlds`), the held-out episodes are whole worlds (the first ones) that
  training never sees, and every example draws its documents from one world only. With `grpo_num_docs`, the same
  split is made again at that size for GRPO; no question held out at either size is trained on at the other.
  """
  held_out, train = _split(config, config.long_context)
  task = Task(train_examples=tuple(e for e, _ in train),
              eval_episodes=tuple(Episode.from_example(e) for e, _ in held_out),
              oracle_keys=tuple(key for _, key in train) if train[0][1] else ())
  if config.grpo_num_docs in (0, config.long_context.num_docs):
    return task
  grpo_held_out, grpo_train = _split(config, dataclasses.replace(config.long_context, num_docs=config.grpo_num_docs))
  held_out_ids = {i for e, _ in held_out + grpo_held_out for i in e.question_ids}
  grpo_examples = tuple(e for e, _ in grpo_train if held_out_ids.isdisjoint(e.question_ids))
  if not grpo_examples:
    raise ValueError(f"no {config.grpo_num_docs}-document example is free of held-out questions")
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


def _oracle_batches(examples: Sequence[LongContextExample], keys: Sequence[Sequence[synthetic.SyntheticQuestion]]
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


def sft_pairs(config: TrainConfig, task: Task, tokenizer: Any, embed_fn: Any,
              workdir: epath.Path) -> list[pipeline.SftPair]:
  """The SFT data: `sft.pairs_path`, or the oracle's good trajectories on training episodes (cached)."""
  path = storage.as_path(config.sft.pairs_path) if config.sft.pairs_path else workdir / SFT_PAIRS_FILE
  if not config.sft.pairs_path and not path.exists():
    if not task.oracle_keys:
      raise ValueError("sft.pairs_path is required: the oracle only plays the synthetic task")
    trajectories = []
    rollout_config = RolloutConfig(agent=config.agent, memory=config.memory, num_samples=1, seed=config.seed)
    n = config.sft.oracle_episodes
    for examples, table in _oracle_batches(task.train_examples[:n], task.oracle_keys[:n]):
      trajectories += host.rollout([Episode.from_example(e) for e in examples],
                                   oracle.OraclePolicy(list(table.values())), tokenizer=tokenizer,
                                   embed_fn=embed_fn, config=rollout_config)
    pairs = oracle.oracle_sft_pairs(trajectories, tokenizer, min_reward=config.sft.min_reward)
    if not pairs:
      raise ValueError(f"no oracle trajectory reached reward {config.sft.min_reward}; nothing to fine-tune on")
    pairs += recitation_pairs(task.train_examples[n:n + config.sft.recitation_pairs], tokenizer, config.seed)
    if jax.process_index() == 0:
      sft.write_sft_pairs(path, [(p["prompt"], p["completion"]) for p in pairs])
    logging.info("oracle: %d trajectories, mean reward %.3f, %d SFT pairs -> %s", len(trajectories),
                 sum(t.reward for t in trajectories) / len(trajectories), len(pairs), path)
    return [pipeline.SftPair(prompt=p["prompt"], completion=p["completion"], id=f"oracle-{i}")
            for i, p in enumerate(pairs)]
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
  """SFT step `step`'s drills (`sft.drill`): a pure function of (seed, step), so resuming needs no state.

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
  return recite_drill_batch(tokenizer, examples, seed, step, config.drill_batch_size)


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
                       batch_size: int) -> batching.TrainBatch:
  """Recitation drills: the loss is on the supporting facts and on each restated fact's object (its subject and
  relation are the cue)."""
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
    for question, evidence in zip(example.questions, example.supporting_facts):
      add(question, False)
      add(" " + " ".join(evidence), True)
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


def init_model(config: ModelInitConfig, seed: int, mesh: Mesh
               ) -> tuple[Qwen3Config, nnx.GraphDef, step_lib.Params, step_lib.Params]:
  """`(model config, graphdef, params, params shardings)`, the params placed on `mesh`."""
  if not config.checkpoint:
    model_config = config.runtime(get_preset(config.preset))
    graphdef, params, shardings = step_lib.init_params(model_config, seed, mesh)
    return model_config, graphdef, params, shardings
  if checkpoint_lib.is_orbax_params_dir(config.checkpoint):
    stored_config, model = checkpoint_lib.restore_params(config.checkpoint, mesh=mesh)
  else:
    stored_config, model = checkpoint_lib.load_hf(config.checkpoint, mesh=mesh)
  model_config = config.runtime(stored_config)
  graphdef, _ = abstract_model(model_config)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  if model_config.param_dtype != stored_config.param_dtype:
    params = jax.tree.map(lambda x: x.astype(model_config.param_dtype), params)
  return model_config, graphdef, params, step_lib.param_shardings(model, mesh)


def export_params(directory: epath.Path, graphdef: nnx.GraphDef, params: step_lib.Params,
                  model_config: Qwen3Config, config: ModelInitConfig) -> None:
  """An Orbax parameter dir (`checkpoint.save_params` layout, tokenizer included) that evaluation restores."""
  if distributed.is_main() and directory.exists():
    directory.rmtree()  # a pure function of the run: an earlier (possibly interrupted) export is replaced
  distributed.barrier(f"export {directory.name}")  # every process writes its shards into the fresh directory
  checkpoint_lib.save_params(directory, nnx.merge(graphdef, params), model_config,
                             tokenizer_src=tokenizer_source(config))
