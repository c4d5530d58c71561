"""Evaluation: restore a checkpoint onto this run's mesh, run greedy episodes for every variant x dataset x N, and
write `trajectories.jsonl`, `results.json` and `results.md`.

Everything that can be wrong with the inputs is checked before the output directory is touched: the checkpoint
exists and its architecture matches `expected_model`, the tokenizer fits the model's vocabulary, the embedder's width
is the memory's, every dataset file reads and every example builds at every N. A bad input is one `EvalError`
(or the `ConfigError` / `CheckpointError` / `DataFormatError` / `FileNotFoundError` of the layer that found it) and
nothing is written. Checkpoint, tokenizer and embedder come from `checkpoint.loader`, as in training.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from typing import Any, Sequence

import jax
import numpy as np
from etils import epath
from tqdm import tqdm

from atommem_jax import configlib, rollout_engine, storage
from atommem_jax import sharding as sharding_lib
from atommem_jax.agent.config import RolloutConfig
from atommem_jax.agent.envs.long_context import Episode
from atommem_jax.agent.policy import SamplerPolicy
from atommem_jax.agent.trajectory import Trajectory
from atommem_jax.checkpoint import loader
from atommem_jax.data import long_context, readers, synthetic
from atommem_jax.eval import plots
from atommem_jax.eval import results as results_lib
from atommem_jax.eval import web_tasks
from atommem_jax.eval.config import (WEB_FORMATS, DatasetSpec, EvalConfig, EvalError, MeshSpec, dataset_format,
                                     dataset_label)
from atommem_jax.metrics.judge import LLMJudge
from atommem_jax.sampling.config import SamplerConfig
from atommem_jax.sampling.sampler import Sampler


@dataclasses.dataclass(frozen=True)
class Task:
  """One (dataset, N) cell: the long-context examples every variant answers."""

  dataset: str
  num_docs: int
  examples: tuple[long_context.LongContextExample, ...]


def resolve_mesh(spec: MeshSpec, devices: Sequence[jax.Device]) -> jax.sharding.Mesh:
  sizes = {"data": spec.data, "fsdp": spec.fsdp, "tensor": spec.tensor}
  free = [axis for axis, size in sizes.items() if size == 0]
  if len(free) > 1 or any(size < 0 for size in sizes.values()):
    raise EvalError(f"mesh {sizes}: at most one axis may be 0 (= the remaining devices), none negative")
  fixed = int(np.prod([size for size in sizes.values() if size]))
  if free:
    if len(devices) % fixed:
      raise EvalError(f"mesh {sizes}: {len(devices)} devices do not divide by the fixed axes' product {fixed}")
    sizes[free[0]] = len(devices) // fixed
  try:
    return sharding_lib.make_mesh(sharding_lib.MeshConfig(**sizes), devices)
  except ValueError as e:
    raise EvalError(str(e)) from None


def _bundling(spec: DatasetSpec, num_docs: int) -> long_context.LongContextConfig:
  return long_context.LongContextConfig(
      num_docs=num_docs, seed=spec.seed, single_question_fraction=spec.single_question_fraction,
      min_bundle_size=spec.min_bundle_size, max_bundle_size=spec.max_bundle_size, gold=spec.gold)


def _synthetic_world(spec: DatasetSpec, num_docs: int) -> synthetic.SyntheticConfig:
  return synthetic.SyntheticConfig(
      seed=spec.seed, num_documents=spec.synthetic_num_documents or max(2 * num_docs, 64),
      num_questions=spec.synthetic_num_questions,
      question_kinds=spec.synthetic_question_kinds or synthetic.QUESTION_KINDS)


def prepare_tasks(config: EvalConfig) -> list[Task | web_tasks.WebTask]:
  """Reads every dataset and builds its examples at every N (the builder's errors name the file/row/example).

  A synthetic dataset is `synthetic_worlds` worlds, each bundled on its own as the trainer's held-out worlds are.
  """
  tasks = []
  for name, spec in config.datasets.items():
    if dataset_format(name, spec) in WEB_FORMATS:
      tasks.append(web_tasks.prepare(name, spec, config))
      continue
    corpus = None
    for num_docs in spec.num_docs:
      if dataset_format(name, spec) == "synthetic":
        world = _synthetic_world(spec, num_docs)
        built = [example for index in range(spec.synthetic_worlds)
                 for example in long_context.build_synthetic_world(world, _bundling(spec, num_docs), index)[0]]
      else:
        if corpus is None:  # a native file is read once
          corpus = readers.read_dataset(dataset_format(name, spec), spec.path)
        built = long_context.build_examples(corpus, _bundling(spec, num_docs))
      if spec.max_examples:
        built = built[:spec.max_examples]
      if not built:
        raise EvalError(f"dataset {name} at {num_docs} documents has no examples")
      tasks.append(Task(dataset=dataset_label(name, spec), num_docs=num_docs, examples=tuple(built)))
  return tasks


def make_embedders(config: EvalConfig, mesh: jax.sharding.Mesh, tokenizer: Any) -> dict[int, Any]:
  """The retrieval embedder for every memory width the variants use (`loader.load_embedder`: weight-free hashing,
  or a Qwen3-Embedding checkpoint, whose width must then be every variant's)."""
  widths = sorted({memory.embed_dim for _, memory in config.variant_configs().values()})
  return {width: loader.load_embedder(config.embedder, embed_dim=width, tokenizer=tokenizer, mesh=mesh)
          for width in widths}


def episode_result(variant: str, task: Task | web_tasks.WebTask, trajectory: Trajectory, seconds: float = 0.0,
                   judge_scores: tuple[float, ...] | None = None) -> results_lib.EpisodeResult:
  counts = {key: 0 for key in results_lib.OP_KEYS}
  for turn in trajectory.turns:
    for name, count in turn.op_counts.items():
      counts[name] += count
    counts["invalid"] += turn.invalid_ops
  # Predictions carry the box the agent wrote, so boxed EM here is the reward the trainer optimised.
  predictions = tuple("" if a is None else f"\\boxed{{{a}}}" for a in trajectory.answers)
  return results_lib.EpisodeResult(
      variant=variant, dataset=task.dataset, num_docs=task.num_docs, example_id=trajectory.episode_id,
      questions=tuple(trajectory.questions), answers=tuple(tuple(a) for a in trajectory.gold_answers),
      predictions=predictions, op_counts=counts, steps=len(trajectory.turns), storage_size=len(trajectory.storage),
      done=trajectory.done, seconds=seconds,
      tool_calls=web_tasks.tool_calls(trajectory) if isinstance(task, web_tasks.WebTask) else None,
      judge_scores=judge_scores)


def _sampler_config(base: SamplerConfig, tokenizer: Any, checkpoint: loader.CheckpointDir,
                    tokenizer_spec: str) -> SamplerConfig:
  stop_ids = base.eos_ids or loader.stop_ids(tokenizer, loader.tokenizer_dir(tokenizer_spec, checkpoint))
  return dataclasses.replace(base, greedy=True, eos_ids=stop_ids, pad_id=tokenizer.pad_token_id)


def _run_task(variant: str, task: Task | web_tasks.WebTask, episodes: list[Any], env: Any, judge: Any,
              run_rollout: rollout_engine.RolloutFn, policy: Any, tokenizer: Any, embed_fn: Any,
              rollout_config: RolloutConfig, batch_size: int, progress: bool,
              episodes_out: list[results_lib.EpisodeResult], trajectory_rows: list[dict[str, Any]]) -> None:
  """Greedy episodes of one (variant, dataset, N) in batches; their results and readable trajectories appended.
  `env`: the task's environment object (the web one); None: the engine makes the one the config names."""
  with tqdm(total=len(episodes), desc=f"{variant} {task.dataset}@{task.num_docs}", unit="episode",
            disable=not progress, file=sys.stderr) as bar:
    for start in range(0, len(episodes), batch_size):
      batch = episodes[start:start + batch_size]
      began = time.perf_counter()
      trajectories = run_rollout(batch, policy, tokenizer=tokenizer, embed_fn=embed_fn, config=rollout_config,
                                 env=env)
      seconds = (time.perf_counter() - began) / len(batch)
      judged = web_tasks.judge_scores(judge, trajectories) if judge is not None else [None] * len(trajectories)
      for trajectory, judge_scores in zip(trajectories, judged):
        result = episode_result(variant, task, trajectory, seconds, judge_scores)
        episodes_out.append(result)
        row = {"variant": variant, "dataset": task.dataset, "num_docs": task.num_docs, **trajectory.to_json()}
        row["scores"] = [s.as_dict() for s in result.question_scores()]
        if judge_scores is not None:
          row["judge"] = list(judge_scores)
        trajectory_rows.append(row)
      bar.update(len(batch))


def evaluate(config: EvalConfig, workdir: str | os.PathLike, *, devices: Sequence[jax.Device] | None = None,
             progress: bool = True) -> dict[str, epath.Path]:
  """Runs the evaluation `config` describes and writes its three files under `workdir` (a local directory or any
  filesystem etils.epath reaches, gs:// included); returns their paths."""
  workdir = storage.as_path(workdir)
  # ---- inputs, all checked before anything is written
  devices = list(jax.devices() if devices is None else devices)
  mesh = resolve_mesh(config.mesh, devices)
  checkpoint = loader.resolve(config.checkpoint)
  loader.check_architecture(checkpoint, config.expected_model)
  tokenizer = loader.load_tokenizer(config.tokenizer, checkpoint)
  loader.check_vocabulary(tokenizer, checkpoint.model_config, f"checkpoint {checkpoint.path}")
  run_rollout = rollout_engine.rollout_fn(config.rollout)
  variants = config.variant_configs()
  tasks = prepare_tasks(config)
  embed_fns = make_embedders(config, mesh, tokenizer)
  model = loader.load_model(checkpoint, mesh)

  # ---- greedy episodes: every variant on every (dataset, N)
  sampler_config = _sampler_config(config.sampler, tokenizer, checkpoint, config.tokenizer)
  sampler = Sampler(model, sampler_config, tokenizer=tokenizer, mesh=mesh)
  policy = SamplerPolicy(sampler, seed=config.seed)
  episodes_out: list[results_lib.EpisodeResult] = []
  trajectory_rows: list[dict[str, Any]] = []
  is_main = jax.process_index() == 0
  judge = LLMJudge(config.judge) if config.judge.url else None
  is_web = [isinstance(task, web_tasks.WebTask) for task in tasks]
  for agent, memory in variants.values():  # every variant checked, in each environment it runs in, before any episode
    for env_agent in [agent] * (not all(is_web)) + [web_tasks.web_agent(agent)] * any(is_web):
      rollout_engine.check(config.rollout, tokenizer=tokenizer, sampler=sampler, rollout_config=RolloutConfig(
          agent=env_agent, memory=memory, num_samples=1, seed=config.seed))
  for variant, (agent, memory) in variants.items():
    for task in tasks:
      with contextlib.ExitStack() as resources:
        web_task = isinstance(task, web_tasks.WebTask)
        env = resources.enter_context(web_tasks.environment(agent, task, workdir)) if web_task else None
        episodes = list(task.episodes) if web_task else [Episode.from_example(e) for e in task.examples]
        rollout_config = RolloutConfig(agent=env.config if web_task else agent, memory=memory, num_samples=1,
                                       seed=config.seed)
        _run_task(variant, task, episodes, env, judge if web_task else None, run_rollout, policy, tokenizer,
                  embed_fns[memory.embed_dim], rollout_config, config.batch_size, progress and is_main,
                  episodes_out, trajectory_rows)

  # ---- outputs (process 0 only: every process ran the same episodes)
  summary = results_lib.summarize(episodes_out)
  if not is_main:
    return {}
  figures = {}
  if any(len(spec.num_docs) > 1 for spec in config.datasets.values()):  # a curve needs two document counts
    figures["em_vs_documents.png"] = plots.plot_em_vs_documents(summary, workdir)
  paths = results_lib.write_results(workdir, summary, trajectory_rows, checkpoint=str(checkpoint.path),
                                    config=configlib.to_dict(config), figures=list(figures),
                                    timing=results_lib.timing_rows(episodes_out))
  return {**paths, **figures}
