"""What a run reads before its first step: tokenizer, episodes, SFT pairs, the initial model; and what it exports.

Nothing here is written to the workdir except the oracle's SFT pairs (`sft_pairs.jsonl`, written atomically and
reused on resume) and the exported parameter dirs (`params_sft/`, `params/`) that evaluation restores.
"""
from __future__ import annotations

import dataclasses
import pathlib
import random
import shutil
from typing import Any

import jax
from absl import logging
from flax import nnx
from jax.sharding import Mesh

from atommem_jax import checkpoint as checkpoint_lib
from atommem_jax.agent import oracle
from atommem_jax.agent import rollout as rollout_lib
from atommem_jax.data import long_context, pipeline, readers, synthetic
from atommem_jax.data.long_context import LongContextExample
from atommem_jax.data.tokenizer import load_tiny_tokenizer, tiny_tokenizer_dir
from atommem_jax.model import Qwen3Config, get_preset
from atommem_jax.train import sft, step as step_lib
from atommem_jax.train.config import ModelInitConfig, TaskConfig, TrainConfig

SFT_PAIRS_FILE = "sft_pairs.jsonl"


@dataclasses.dataclass(frozen=True)
class Task:
  train_examples: tuple[LongContextExample, ...]
  eval_episodes: tuple[rollout_lib.Episode, ...]
  synthetic_questions: tuple[synthetic.SyntheticQuestion, ...]  # empty for native datasets (no oracle)


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
  import transformers  # pylint: disable=g-import-not-at-top
  tokenizer = transformers.AutoTokenizer.from_pretrained(source)
  for name in ("eos_token_id", "pad_token_id"):
    if getattr(tokenizer, name) is None:
      raise ValueError(f"tokenizer at {source} defines no {name.removesuffix('_id')} token; training needs one")
  return tokenizer


def build_task(config: TaskConfig) -> Task:
  """Long-context examples, shuffled with the builder's seed; the first `num_eval_episodes` are held out."""
  questions: tuple[synthetic.SyntheticQuestion, ...] = ()
  if config.examples_path:
    examples = pipeline.read_examples(config.examples_path)
  else:
    if config.dataset == "synthetic":
      world = synthetic.generate(config.synthetic)
      corpus, questions = world.corpus(), world.questions
    else:
      corpus = readers.read_dataset(config.dataset, config.path)
    examples = long_context.build_examples(corpus, config.long_context)
  examples = list(examples)
  random.Random(config.long_context.seed).shuffle(examples)
  if len(examples) <= config.num_eval_episodes:
    raise ValueError(f"{len(examples)} examples leave nothing to train on after holding out "
                     f"{config.num_eval_episodes} for evaluation")
  held_out = examples[:config.num_eval_episodes]
  return Task(train_examples=tuple(examples[config.num_eval_episodes:]),
              eval_episodes=tuple(rollout_lib.Episode.from_example(e) for e in held_out),
              synthetic_questions=tuple(questions))


def sft_pairs(config: TrainConfig, task: Task, tokenizer: Any, embed_fn: Any,
              workdir: pathlib.Path) -> list[pipeline.SftPair]:
  """The SFT data: `sft.pairs_path`, or the oracle's good trajectories on training episodes (cached)."""
  path = pathlib.Path(config.sft.pairs_path) if config.sft.pairs_path else workdir / SFT_PAIRS_FILE
  if not config.sft.pairs_path and not path.exists():
    if not task.synthetic_questions:
      raise ValueError("sft.pairs_path is required: the oracle only plays the synthetic task")
    episodes = [rollout_lib.Episode.from_example(e) for e in task.train_examples[:config.sft.oracle_episodes]]
    trajectories = rollout_lib.rollout(
        episodes, oracle.OraclePolicy(task.synthetic_questions), tokenizer=tokenizer, embed_fn=embed_fn,
        config=rollout_lib.RolloutConfig(agent=config.agent, memory=config.memory, num_samples=1, seed=config.seed))
    pairs = oracle.oracle_sft_pairs(trajectories, tokenizer, min_reward=config.sft.min_reward)
    if not pairs:
      raise ValueError(f"no oracle trajectory reached reward {config.sft.min_reward}; nothing to fine-tune on")
    if jax.process_index() == 0:
      sft.write_sft_pairs(path, [(p["prompt"], p["completion"]) for p in pairs])
    logging.info("oracle: %d trajectories, mean reward %.3f, %d SFT pairs -> %s", len(trajectories),
                 sum(t.reward for t in trajectories) / len(trajectories), len(pairs), path)
    return [pipeline.SftPair(prompt=p["prompt"], completion=p["completion"], id=f"oracle-{i}")
            for i, p in enumerate(pairs)]
  return [pipeline.SftPair(prompt=p, completion=c, id=f"{path.name}:{i + 1}")
          for i, (p, c) in enumerate(sft.read_sft_pairs(path))]


def init_model(config: ModelInitConfig, seed: int, mesh: Mesh
               ) -> tuple[Qwen3Config, nnx.GraphDef, step_lib.Params, step_lib.Params]:
  """`(model config, graphdef, params, params shardings)`, the params placed on `mesh`."""
  if not config.checkpoint:
    model_config = get_preset(config.preset)
    graphdef, params, shardings = step_lib.init_params(model_config, seed, mesh)
    return model_config, graphdef, params, shardings
  if checkpoint_lib.is_orbax_params_dir(config.checkpoint):
    model_config, model = checkpoint_lib.restore_params(config.checkpoint, mesh=mesh)
  else:
    model_config, model = checkpoint_lib.load_hf(config.checkpoint, mesh=mesh)
  graphdef, _ = nnx.split(model)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return model_config, graphdef, params, step_lib.param_shardings(model, mesh)


def export_params(directory: pathlib.Path, graphdef: nnx.GraphDef, params: step_lib.Params,
                  model_config: Qwen3Config, config: ModelInitConfig) -> None:
  """An Orbax parameter dir (`checkpoint.save_params` layout, tokenizer included) that evaluation restores."""
  if directory.exists():
    shutil.rmtree(directory)  # a pure function of the run: an earlier (possibly interrupted) export is replaced
  checkpoint_lib.save_params(directory, nnx.merge(graphdef, params), model_config,
                             tokenizer_src=tokenizer_source(config))
