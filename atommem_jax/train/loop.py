"""The training run: SFT then GRPO on agent rollouts, resumable bit-for-bit from its Orbax checkpoints.

`train_and_evaluate(config, workdir)` is one readable main in sections: mesh, data, model + optimizer, update steps,
checkpoint restore, loop. The loop body is the schedule; each stage is one named function: a drill or SFT update
here, a GRPO rollout (`grpo_stage.GRPOStage.collect`) and its updates (`.update`), the held-out evaluations
(`HeldOutEval`). Everything a step consumes is a function of (seed, step, restored state): the SFT batches and
rollout episodes come from grain iterators whose positions are checkpointed, and the sampling seed of rollout r is
derived from the run's key and r. So a run killed at any point and restarted ends with the same parameters and
metrics as an uninterrupted one (timing metrics aside).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from typing import Any, Callable, Sequence

import jax
import numpy as np
from absl import logging
from flax import nnx

from atommem_jax import distributed, rollout_engine, storage, workdir_lock
from atommem_jax import sharding as sharding_lib
from atommem_jax.agent import rewards
from atommem_jax.agent.config import RolloutConfig
from atommem_jax.agent.envs.long_context import Episode
from atommem_jax.agent.policy import SamplerPolicy
from atommem_jax.agent.trajectory import Trajectory
from atommem_jax.checkpoint import loader
from atommem_jax.data import pipeline
from atommem_jax.model import param_shardings
from atommem_jax.sampling.sampler import Sampler
from atommem_jax.train import (batching, checkpointing, drills, grpo_rows, grpo_stage, oracle_pairs, params_io,
                               step as step_lib, task_split, web_inputs)
from atommem_jax.train.config import TrainConfig
from atommem_jax.train.metrics_log import DeferredMetrics, MetricsLog, NonFiniteLossError

# Wall-clock metrics differ between runs; everything else in metrics.jsonl is reproducible.
TIMING_KEYS = ("tokens_per_s", "step_time_s", "eta_s", "rollout_time_s")
UpdateFn = Callable[..., tuple[step_lib.TrainState, dict[str, jax.Array]]]


def _sft_batch(raw: dict[str, np.ndarray], num_microbatches: int) -> batching.TrainBatch:
  """The data pipeline's [left-padded prompt | right-padded completion] as one row per pair."""
  tokens = np.concatenate([raw["prompt_ids_BxP"], raw["completion_ids_BxC"]], axis=1)
  mask = np.concatenate([raw["prompt_mask_BxP"], raw["completion_mask_BxC"]], axis=1)
  loss_mask = np.concatenate([np.zeros_like(raw["prompt_mask_BxP"]), raw["completion_mask_BxC"]], axis=1)
  positions = np.where(mask, np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
  zeros = np.zeros(tokens.shape, np.float32)
  batch = batching.TrainBatch(tokens_NxT=tokens, positions_NxT=positions, mask_NxT=mask, loss_mask_NxT=loss_mask,
                              old_logprobs_NxT=zeros, ref_logprobs_NxT=zeros,
                              advantage_N=np.zeros(tokens.shape[:1], np.float32))
  return batching.split_microbatches(batch, num_microbatches)


def drill_update(state: step_lib.TrainState, sft_step: UpdateFn, batch_sharding: batching.TrainBatch,
                 config: TrainConfig, tokenizer: Any, task: task_split.TaskSplit | web_inputs.WebTask, step: int
                 ) -> tuple[step_lib.TrainState, dict[str, jax.Array], dict[str, Any]]:
  """One SFT update on step `step`'s drills: `(state, device metrics, host metrics)`."""
  host_batch = drills.drill_batch(config.sft, tokenizer, task.train_examples, config.seed, step)
  state, device_metrics = sft_step(state, step_lib.shard_batch(batching.split_microbatches(host_batch, 1),
                                                               batch_sharding))
  return state, device_metrics, dict(phase=config.sft.drill, reward_mean=None,
                                     num_tokens=float(host_batch.mask_NxT.sum()))


def sft_update(state: step_lib.TrainState, sft_step: UpdateFn, batch_sharding: batching.TrainBatch,
               raw: dict[str, np.ndarray], num_microbatches: int
               ) -> tuple[step_lib.TrainState, dict[str, jax.Array], dict[str, Any]]:
  """One SFT update on a batch of (prompt, completion) pairs: `(state, device metrics, host metrics)`."""
  state, device_metrics = sft_step(state, step_lib.shard_batch(_sft_batch(raw, num_microbatches), batch_sharding))
  return state, device_metrics, dict(phase="sft", reward_mean=None,
                                     num_tokens=float(raw["completion_mask_BxC"].sum() + raw["prompt_mask_BxP"].sum()))


def rollout_shared(run_rollout: rollout_engine.RolloutFn) -> rollout_engine.RolloutFn:
  """`run_rollout` (any engine's) split over the processes: every trajectory of the episodes, in order, on every
  process; each process rolls out only its share, its rows seeded by their index in the whole list
  (`distributed.share`, `SamplerPolicy.row_offset`). `run_rollout` itself in a 1-process run."""
  if jax.process_count() == 1:
    return run_rollout

  def shared(episodes: Sequence[Episode], policy: SamplerPolicy, *, config: RolloutConfig,
             **kwargs: Any) -> list[Trajectory]:
    mine = distributed.share(len(episodes))
    policy.row_offset = mine.start * config.num_samples
    logging.info("rollout: episodes [%d, %d) of %d on process %d", mine.start, mine.stop, len(episodes),
                 jax.process_index())
    local = run_rollout([episodes[i] for i in mine], policy, config=config, **kwargs) if mine else []
    return distributed.allgather(local)

  return shared


def evaluate_em(eval_sets: Sequence[tuple[int, Sequence[Episode]]], policy: SamplerPolicy,
                tokenizer: Any, embed_fn: Any, rollout_config: RolloutConfig,
                run_rollout: rollout_engine.RolloutFn, reward_fn: rewards.RewardFn, env: Any = None
                ) -> dict[int, dict[str, float]]:
  """Greedy episodes, every size in one rollout (split over the processes by `rollout_shared`): per size, reward,
  EM / F1, memory-op rates and tool-call rates (`grpo_rows.rollout_metrics`). `env`: the run's environment
  (None: the one the config names)."""
  episodes = [e for _, size_episodes in eval_sets for e in size_episodes]
  trajectories = run_rollout(episodes, policy, tokenizer=tokenizer, embed_fn=embed_fn, config=rollout_config,
                             env=env, reward_fn=reward_fn)
  metrics, start = {}, 0
  for num_docs, size_episodes in eval_sets:
    metrics[num_docs] = grpo_rows.rollout_metrics(trajectories[start:start + len(size_episodes)],
                                                 grpo_rows.tool_names(env))
    start += len(size_episodes)
  return metrics


@dataclasses.dataclass(frozen=True)
class HeldOutEval:
  """The run's greedy evaluations on its held-out episodes (at the start, after SFT, at the end), each logged once
  to `eval.jsonl`, so a resumed run does not repeat one."""

  eval_sets: list[tuple[int, tuple[Episode, ...]]]
  sampler: Sampler
  graphdef: nnx.GraphDef
  tokenizer: Any
  embed_fn: Any
  run_rollout: rollout_engine.RolloutFn
  rollout_config: RolloutConfig
  reward_fn: rewards.RewardFn
  log: MetricsLog
  echo: bool
  sampler_params: Callable[[step_lib.Params], Any]  # as in `grpo_stage.GRPOStage`
  env: Any = None  # the run's environment object (the web one, shared by the run); None: the engine makes it

  def __call__(self, label: str, at_step: int, params: step_lib.Params) -> dict[int, dict[str, float]] | None:
    if not self.eval_sets or self.log.has_eval(label):
      return None
    self.sampler.params = self.sampler_params(params)
    policy = SamplerPolicy(self.sampler, seed=self.rollout_config.seed)
    metrics = evaluate_em(self.eval_sets, policy, self.tokenizer, self.embed_fn, self.rollout_config,
                          self.run_rollout, self.reward_fn, env=self.env)
    self.log.write_eval(at_step, label, metrics)
    if self.echo:
      for (num_docs, episodes), size in zip(self.eval_sets, metrics.values()):
        kind = f"{num_docs}-document" if num_docs else "web"
        print(f"[eval] {label} (step {at_step}): EM {size['em']:.3f}  F1 {size['f1']:.3f}  "
              f"reward {size['reward_mean']:.3f} on {len(episodes)} held-out {kind} episodes", flush=True)
    return metrics


def data_positions(iterators: dict[str, Any]) -> dict[str, Any]:
  """Each data iterator's position by name (`sft`, `sft_later`, `grpo`), for the checkpoint."""
  return {name: pipeline.iterator_state(it) for name, it in iterators.items() if it is not None}


def train_and_evaluate(config: TrainConfig, workdir: str | os.PathLike, *,
                       reward_fn: rewards.RewardFn | None = None) -> dict[str, Any]:
  """Runs (or resumes) the run `config` describes in `workdir` (a local directory, or any URI etils.epath reaches:
  `gs://bucket/run`); returns the final evaluation metrics, keyed by documents per episode (0 for web episodes).
  `reward_fn(trajectory) -> float` scores the GRPO rollouts and the held-out evaluations (default: the reward
  `config.agent.reward` names)."""
  with contextlib.ExitStack() as resources:  # the web environment and its corpus server, when the run has them
    return _train_and_evaluate(config, workdir, reward_fn, resources)


def _train_and_evaluate(config: TrainConfig, workdir: str | os.PathLike, reward_fn: rewards.RewardFn | None,
                        resources: contextlib.ExitStack) -> dict[str, Any]:
  workdir = storage.as_path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  is_main = distributed.is_main()
  lock = workdir_lock.acquire_for_job(workdir)  # a second run on this workdir is refused, naming this one

  # ---- mesh (the sampler's is this process's part of it: rollouts run per process)
  mesh = sharding_lib.make_mesh(config.mesh)
  sampler_mesh = distributed.local_mesh(mesh)

  # ---- data: tokenizer, embedder, episodes (eval held out), SFT pairs, grain iterators
  start = params_io.start_checkpoint(config.model)
  tokenizer = loader.load_tokenizer(config.model.tokenizer, start, field="model.tokenizer")
  embed_fn = loader.load_embedder(config.embedder, embed_dim=config.memory.embed_dim, tokenizer=tokenizer, mesh=mesh)
  run_rollout = rollout_shared(rollout_engine.rollout_fn(config.rollout))
  reward_fn = reward_fn if reward_fn is not None else rewards.for_agent(config.agent)
  env = None  # the long-context reader: made by the engine for each rollout; the web environment: once per run
  if config.agent.env == "web":
    # Refused before the corpus server starts (the full check, with the sampler, follows once it exists).
    rollout_engine.check(config.rollout, tokenizer=tokenizer, sampler=None,
                         rollout_config=RolloutConfig(agent=config.agent, memory=config.memory))
    task = web_inputs.build_task(config.task, workdir)
    env = resources.enter_context(web_inputs.environment(config.agent, task, workdir / web_inputs.SERVER_LOG))
  else:
    task = task_split.split_task(config.task)
  sft_iter = sft_later_iter = grpo_iter = None
  if any(not drills.is_drill_step(config.sft, s) for s in range(config.sft.steps)):  # drills need no pairs
    def make_pairs(later: bool):
      if env is not None:
        return web_inputs.sft_pairs(config, task, env, tokenizer, embed_fn, workdir)
      return oracle_pairs.sft_pairs(config, task, tokenizer, embed_fn, workdir, later=later)

    def pairs_iterator(later: bool = False):
      # Process 0 writes the cached pairs; the others read them once written.
      pairs = make_pairs(later) if is_main else None
      distributed.barrier("sft_pairs_later" if later else "sft_pairs")
      pairs = pairs or make_pairs(later)
      return iter(pipeline.sft_dataset(
          pairs, pipeline.PipelineConfig(batch_size=config.sft.batch_size, seed=config.seed, num_threads=0,
                                         prefetch_buffer_size=0),
          pipeline.SftConfig(max_prompt_tokens=config.sft.max_prompt_tokens,
                             max_completion_tokens=config.sft.max_completion_tokens, on_overlong="drop"), tokenizer))

    sft_iter = pairs_iterator()
    if env is None and oracle_pairs.has_later_pairs(config.sft):  # the long-context oracle's extra notes
      sft_later_iter = pairs_iterator(later=True)
  if config.total_steps > config.sft.steps:
    grpo_iter = iter(pipeline.rollout_dataset(
        task.rollout_examples, pipeline.PipelineConfig(batch_size=config.grpo.prompts_per_rollout, seed=config.seed + 1,
                                                       num_threads=0, prefetch_buffer_size=0)))

  # ---- model + optimizer
  model_config, graphdef, params, params_sharding = params_io.init_model(config.model, config.seed, mesh)
  loader.check_vocabulary(tokenizer, model_config, "the model")
  sft_tx = step_lib.make_optimizer(config.sft.optimizer)
  grpo_tx = step_lib.make_optimizer(config.grpo.optimizer)
  abstract_params = jax.eval_shape(lambda: params)
  state_sharding = step_lib.state_shardings(sft_tx, params_sharding, abstract_params, mesh)
  batch_sharding = step_lib.batch_shardings(mesh)
  stop_ids = loader.stop_ids(tokenizer, loader.tokenizer_dir(config.model.tokenizer, start))
  sampler_config = dataclasses.replace(config.grpo.sampler, eos_ids=stop_ids, pad_id=tokenizer.pad_token_id)
  sampler_sharding = param_shardings(nnx.state(nnx.merge(graphdef, params)), sampler_mesh)

  def sampler_params(p: step_lib.Params) -> Any:
    return distributed.localize(nnx.state(nnx.merge(graphdef, p)), mesh, sampler_sharding)

  sampler = Sampler(nnx.merge(graphdef, sampler_params(params)), sampler_config, tokenizer=tokenizer,
                    mesh=sampler_mesh)
  eval_sampler = Sampler(nnx.merge(graphdef, sampler_params(params)), dataclasses.replace(
      sampler_config, greedy=True, max_new_tokens=config.eval.max_new_tokens), tokenizer=tokenizer,
                         mesh=sampler_mesh)

  # ---- update steps
  sft_step = step_lib.make_train_step(graphdef, sft_tx, step_lib.StepConfig("sft"), state_sharding, mesh)
  temperature = config.grpo.sampler.temperature
  grpo = grpo_stage.GRPOStage(
      config=config.grpo, graphdef=graphdef, sampler=sampler, tokenizer=tokenizer, embed_fn=embed_fn,
      run_rollout=run_rollout,
      rollout_config=RolloutConfig(agent=config.agent, memory=config.memory,
                                   num_samples=config.grpo.loss.num_generations, seed=config.seed),
      reward_fn=reward_fn, env=env,
      train_step=step_lib.make_train_step(graphdef, grpo_tx,
                                          step_lib.StepConfig("grpo", config.grpo.loss, temperature=temperature),
                                          state_sharding, mesh),
      logprobs_fn=step_lib.make_logprobs_fn(graphdef, params_sharding, mesh, temperature=temperature),
      batch_sharding=batch_sharding, sampler_params=sampler_params)
  rollout_engine.check(config.rollout, tokenizer=tokenizer, rollout_config=grpo.rollout_config, sampler=sampler)

  # ---- checkpoint restore
  checkpoints = checkpointing.RunCheckpoints(workdir, config)
  rng_key = jax.random.key(config.seed)
  abstract_state = checkpointing.abstract_with_shardings(
      jax.eval_shape(lambda: step_lib.init_train_state(params, sft_tx, state_sharding)), state_sharding)
  restored = checkpoints.restore_newest(abstract_state)  # one that does not restore is reported and moved aside
  start_step = restored.step if restored else 0
  if restored:
    state, data_state, rng_key = restored.state, restored.data, restored.rng_key
    for name, it in (("sft", sft_iter), ("sft_later", sft_later_iter), ("grpo", grpo_iter)):
      if it is not None and name in data_state:
        pipeline.restore_iterator_state(it, data_state[name])
    logging.info("resumed from %s at step %d", checkpoints.directory, start_step)
  else:
    state = step_lib.init_train_state(params, sft_tx, state_sharding)
  del params  # the state owns (and the step donates) the parameters now
  log = MetricsLog(workdir, start_step, enabled=is_main, history=restored.history if restored else None)
  reference_params = None
  if config.total_steps > config.sft.steps and start_step > config.sft.steps and config.grpo.loss.use_kl:
    reference_params = checkpointing.restore_reference(
        workdir, checkpointing.abstract_with_shardings(abstract_params, params_sharding))
  held_out_eval = HeldOutEval(
      eval_sets=task.eval_sets(config.eval.num_episodes), sampler=eval_sampler, graphdef=graphdef,
      tokenizer=tokenizer, embed_fn=embed_fn, run_rollout=run_rollout,
      rollout_config=RolloutConfig(agent=config.agent, memory=config.memory, num_samples=1, seed=config.seed),
      reward_fn=reward_fn, log=log, echo=is_main, sampler_params=sampler_params, env=env)
  metrics = DeferredMetrics(log, total_steps=config.total_steps, log_every=config.log_every,
                            max_nonfinite_streak=config.max_nonfinite_streak, echo=is_main)

  # ---- loop
  if start_step == 0:
    held_out_eval("start", 0, state.params)
  rollout_batch: grpo_stage.RolloutUpdates | None = None
  try:
    for step in range(start_step, config.total_steps):
      if drills.is_drill_step(config.sft, step):
        state, device_metrics, extras = drill_update(state, sft_step, batch_sharding, config, tokenizer, task, step)
      elif step < config.sft.steps:
        pairs_iter = sft_later_iter if sft_later_iter is not None and step >= config.sft.oracle_extra_notes_from \
            else sft_iter
        state, device_metrics, extras = sft_update(state, sft_step, batch_sharding, next(pairs_iter),
                                                   config.sft.num_microbatches)
      else:
        grpo_index = step - config.sft.steps
        if grpo_index == 0:
          metrics.flush()
          if config.sft.steps:
            held_out_eval("after_sft", step, state.params)
            params_io.export_params(workdir / "params_sft", graphdef, state.params, model_config, config.model)
          state, reference_params = grpo_stage.begin(state, grpo_tx, state_sharding, params_sharding,
                                                     config.grpo.loss.use_kl, workdir)
        rollout_index, update_index = divmod(grpo_index, config.grpo.updates_per_rollout)
        if update_index == 0:
          rollout_batch = grpo.collect(state.params, reference_params, next(grpo_iter).examples,
                                       seed=grpo_stage.rollout_seed(rng_key, rollout_index))
        state, device_metrics, extras = grpo.update(state, rollout_batch, update_index)
      done_step = step + 1
      metrics.push(done_step, device_metrics, extras)  # fetches step t's metrics now that step t + 1 is dispatched
      if done_step % config.checkpoint_every == 0 or done_step == config.total_steps:
        metrics.flush()  # every step up to a checkpoint is logged before the checkpoint exists
        positions = data_positions({"sft": sft_iter, "sft_later": sft_later_iter, "grpo": grpo_iter})
        checkpoints.save(done_step, state, positions, rng_key, log.history())
      if done_step == config.debug_kill_at_step:
        os.kill(os.getpid(), signal.SIGKILL)
    metrics.flush()
    checkpoints.wait()
    final = held_out_eval("final", config.total_steps, state.params)
    params_io.export_params(workdir / "params", graphdef, state.params, model_config, config.model)
  except NonFiniteLossError as e:
    checkpoints.close()
    raise NonFiniteLossError(f"{e}; the last good checkpoint is step {checkpoints.latest_step()} in "
                             f"{checkpoints.directory}") from None
  finally:
    log.close()
  checkpoints.close()
  distributed.barrier("end")  # no process leaves (and stops serving collectives) while another still writes
  lock.release()
  return final or {}
