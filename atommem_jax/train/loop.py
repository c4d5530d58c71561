"""The training run: SFT then GRPO on agent rollouts, resumable bit-for-bit from its Orbax checkpoints.

`train_and_evaluate(config, workdir)` is one readable main in sections: mesh, data, model + optimizer, update steps,
checkpoint restore, loop. Everything a step consumes is a function of (seed, step, restored state): the SFT batches
and rollout episodes come from grain iterators whose positions are checkpointed, and the sampling seed of rollout r
is derived from the run's key and r. So a run killed at any point and restarted ends with the same parameters and
metrics as an uninterrupted one (timing metrics aside).
"""
from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from atommem_jax import distributed, storage
from atommem_jax import sharding as sharding_lib
from atommem_jax.agent.config import RolloutConfig
from atommem_jax.agent.engines import host
from atommem_jax.agent.envs.long_context import Episode
from atommem_jax.agent.policy import SamplerPolicy
from atommem_jax.agent.trajectory import Trajectory
from atommem_jax.data import pipeline
from atommem_jax.memory.embedders import HashingEmbedder
from atommem_jax.model import param_shardings
from atommem_jax.sampling.sampler import Sampler
from atommem_jax.train import batching, checkpointing, grpo_rows, inputs, step as step_lib
from atommem_jax.train.config import TrainConfig
from atommem_jax.train.metrics_log import MetricsLog

# Wall-clock metrics differ between runs; everything else in metrics.jsonl is reproducible.
TIMING_KEYS = ("tokens_per_s", "step_time_s", "eta_s", "rollout_time_s")


class NonFiniteLossError(RuntimeError):
  """Too many consecutive updates were skipped for a non-finite loss; the last good checkpoint is kept."""


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


def _as_nnx_state(graphdef: nnx.GraphDef, params: step_lib.Params) -> nnx.State:
  return nnx.state(nnx.merge(graphdef, params))


def _rollout_seed(rng_key: jax.Array, rollout_index: int) -> int:
  # Turn t of a rollout samples with seed + t (SamplerPolicy); rollouts are spaced far apart.
  return int(jax.random.randint(jax.random.fold_in(rng_key, rollout_index), (), 0, 2**20)) * 1024


def rollout_shared(episodes: Sequence[Episode], policy: SamplerPolicy, *, tokenizer: Any, embed_fn: Any,
                   config: RolloutConfig) -> list[Trajectory]:
  """Every trajectory of `episodes`, in order, on every process; each process rolls out only its share, its rows
  seeded by their index in the whole list (`distributed.share`, `SamplerPolicy.row_offset`)."""
  mine = distributed.share(len(episodes))
  policy.row_offset = mine.start * config.num_samples
  logging.info("rollout: episodes [%d, %d) of %d on process %d", mine.start, mine.stop, len(episodes),
               jax.process_index())
  local = host.rollout([episodes[i] for i in mine], policy, tokenizer=tokenizer, embed_fn=embed_fn,
                       config=config) if mine else []
  return distributed.allgather(local)


def evaluate_em(eval_sets: Sequence[tuple[int, Sequence[Episode]]], policy: SamplerPolicy,
                tokenizer: Any, embed_fn: Any, rollout_config: RolloutConfig
                ) -> dict[int, dict[str, float]]:
  """Greedy episodes, every size in one rollout split over the processes: per size, reward, EM / F1 and memory-op
  rates (`grpo_rows.rollout_metrics`)."""
  episodes = [e for _, size_episodes in eval_sets for e in size_episodes]
  trajectories = rollout_shared(episodes, policy, tokenizer=tokenizer, embed_fn=embed_fn, config=rollout_config)
  metrics, start = {}, 0
  for num_docs, size_episodes in eval_sets:
    metrics[num_docs] = grpo_rows.rollout_metrics(trajectories[start:start + len(size_episodes)])
    start += len(size_episodes)
  return metrics


def train_and_evaluate(config: TrainConfig, workdir: str | os.PathLike) -> dict[str, Any]:
  """Runs (or resumes) the run `config` describes in `workdir` (a local directory, or any URI etils.epath reaches:
  `gs://bucket/run`); returns the final evaluation metrics, keyed by documents per episode."""
  workdir = storage.as_path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  is_main = distributed.is_main()

  # ---- mesh (the sampler's is this process's part of it: rollouts run per process)
  mesh = sharding_lib.make_mesh(config.mesh)
  sampler_mesh = distributed.local_mesh(mesh)

  # ---- data: tokenizer, episodes (eval held out), SFT pairs, grain iterators
  tokenizer = inputs.load_tokenizer(config.model)
  task = inputs.build_task(config.task)
  embed_fn = HashingEmbedder(dim=config.memory.embed_dim)
  eval_sets = task.eval_sets(config.eval.num_episodes)
  sft_iter = grpo_iter = None
  if any(not inputs.is_drill_step(config.sft, s) for s in range(config.sft.steps)):  # drills need no pairs
    # Process 0 writes the cached pairs; the others read them once written.
    pairs = inputs.sft_pairs(config, task, tokenizer, embed_fn, workdir) if is_main else None
    distributed.barrier("sft_pairs")
    pairs = pairs or inputs.sft_pairs(config, task, tokenizer, embed_fn, workdir)
    sft_iter = iter(pipeline.sft_dataset(
        pairs, pipeline.PipelineConfig(batch_size=config.sft.batch_size, seed=config.seed, num_threads=0,
                                       prefetch_buffer_size=0),
        pipeline.SftConfig(max_prompt_tokens=config.sft.max_prompt_tokens,
                           max_completion_tokens=config.sft.max_completion_tokens, on_overlong="drop"), tokenizer))
  if config.total_steps > config.sft.steps:
    grpo_iter = iter(pipeline.rollout_dataset(
        task.rollout_examples, pipeline.PipelineConfig(batch_size=config.grpo.prompts_per_rollout, seed=config.seed + 1,
                                                       num_threads=0, prefetch_buffer_size=0)))

  # ---- model + optimizer
  model_config, graphdef, params, params_sharding = inputs.init_model(config.model, config.seed, mesh)
  if len(tokenizer) > model_config.vocab_size:
    raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, more than the model's vocabulary "
                     f"({model_config.vocab_size})")
  sft_tx = step_lib.make_optimizer(config.sft.optimizer)
  grpo_tx = step_lib.make_optimizer(config.grpo.optimizer)
  abstract_params = jax.eval_shape(lambda: params)
  state_sharding = step_lib.state_shardings(sft_tx, params_sharding, abstract_params, mesh)
  batch_sharding = step_lib.batch_shardings(mesh)
  sampler_config = dataclasses.replace(config.grpo.sampler, eos_ids=(tokenizer.eos_token_id,),
                                       pad_id=tokenizer.pad_token_id)
  sampler_sharding = param_shardings(_as_nnx_state(graphdef, params), sampler_mesh)
  sampler_params = lambda p: distributed.localize(_as_nnx_state(graphdef, p), mesh, sampler_sharding)
  sampler = Sampler(nnx.merge(graphdef, sampler_params(params)), sampler_config, tokenizer=tokenizer,
                    mesh=sampler_mesh)
  eval_sampler = Sampler(nnx.merge(graphdef, sampler_params(params)), dataclasses.replace(
      sampler_config, greedy=True, max_new_tokens=config.eval.max_new_tokens), tokenizer=tokenizer,
                         mesh=sampler_mesh)
  rollout_config = RolloutConfig(agent=config.agent, memory=config.memory,
                                 num_samples=config.grpo.loss.num_generations, seed=config.seed)
  eval_rollout_config = RolloutConfig(agent=config.agent, memory=config.memory, num_samples=1, seed=config.seed)

  # ---- update steps
  sft_step = step_lib.make_train_step(graphdef, sft_tx, step_lib.StepConfig("sft"), state_sharding, mesh)
  temperature = config.grpo.sampler.temperature
  grpo_step = step_lib.make_train_step(graphdef, grpo_tx,
                                       step_lib.StepConfig("grpo", config.grpo.loss, temperature=temperature),
                                       state_sharding, mesh)
  logprobs_fn = step_lib.make_logprobs_fn(graphdef, params_sharding, mesh, temperature=temperature)

  # ---- checkpoint restore
  checkpoints = checkpointing.RunCheckpoints(workdir, config)
  rng_key = jax.random.key(config.seed)
  start_step = checkpoints.latest_step() or 0
  if start_step:
    abstract_state = checkpointing.abstract_with_shardings(
        jax.eval_shape(lambda: step_lib.init_train_state(params, sft_tx, state_sharding)), state_sharding)
    state, data_state, rng_key = checkpoints.restore(start_step, abstract_state)
    if sft_iter is not None and "sft" in data_state:
      pipeline.restore_iterator_state(sft_iter, data_state["sft"])
    if grpo_iter is not None and "grpo" in data_state:
      pipeline.restore_iterator_state(grpo_iter, data_state["grpo"])
    logging.info("resumed from %s at step %d", checkpoints.directory, start_step)
  else:
    state = step_lib.init_train_state(params, sft_tx, state_sharding)
  del params  # the state owns (and the step donates) the parameters now
  log = MetricsLog(workdir, start_step, enabled=is_main)
  reference_params = None
  if config.total_steps > config.sft.steps and start_step > config.sft.steps and config.grpo.loss.use_kl:
    reference_params = checkpointing.restore_reference(
        workdir, checkpointing.abstract_with_shardings(abstract_params, params_sharding))

  def run_eval(label: str, at_step: int) -> dict[int, dict[str, float]] | None:
    if not eval_sets or log.has_eval(label):
      return None
    eval_sampler.params = sampler_params(state.params)
    policy = SamplerPolicy(eval_sampler, seed=config.seed)
    metrics = evaluate_em(eval_sets, policy, tokenizer, embed_fn, eval_rollout_config)
    log.write_eval(at_step, label, metrics)
    if is_main:
      for (num_docs, episodes), size in zip(eval_sets, metrics.values()):
        print(f"[eval] {label} (step {at_step}): EM {size['em']:.3f}  F1 {size['f1']:.3f}  "
              f"reward {size['reward_mean']:.3f} on {len(episodes)} held-out {num_docs}-document episodes", flush=True)
    return metrics

  def data_positions() -> dict[str, Any]:
    out = {}
    if sft_iter is not None:
      out["sft"] = pipeline.iterator_state(sft_iter)
    if grpo_iter is not None:
      out["grpo"] = pipeline.iterator_state(grpo_iter)
    return out

  # ---- loop
  if start_step == 0:
    run_eval("start", 0)
  pending: tuple[int, dict[str, Any], dict[str, Any]] | None = None
  minibatches: list[batching.TrainBatch] = []
  rollout_extras: dict[str, Any] = {}
  last_flush = time.time()

  def flush_pending() -> None:
    nonlocal pending, last_flush
    if pending is None:
      return
    done_step, device_metrics, extras = pending
    pending = None
    metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    metrics.update(extras)
    now = time.time()
    metrics["step_time_s"] = now - last_flush  # wall time since the previous step's metrics arrived
    last_flush = now
    metrics["tokens_per_s"] = metrics["num_tokens"] / max(metrics["step_time_s"], 1e-9)
    metrics["eta_s"] = metrics["step_time_s"] * (config.total_steps - done_step)
    log.write(done_step, metrics)
    if is_main and (done_step % config.log_every == 0 or done_step == config.total_steps):
      reward = metrics.get("reward_mean")
      print(f"step {done_step}/{config.total_steps} [{metrics['phase']}] loss {metrics['loss']:.4f}"
            + (f" reward {reward:.3f} em {metrics['em']:.3f} kl {metrics['kl']:.4f}" if reward is not None else
               f" acc {metrics.get('token_accuracy', 0.0):.3f}")
            + f" | {metrics['tokens_per_s']:.0f} tok/s, ETA {metrics['eta_s'] / 60:.1f} min", flush=True)
    if metrics["nonfinite_streak"] >= config.max_nonfinite_streak:
      checkpoints.close()
      raise NonFiniteLossError(f"{int(metrics['nonfinite_streak'])} non-finite updates in a row at step {done_step}; "
                               f"the last good checkpoint is step {checkpoints.latest_step()} in "
                               f"{checkpoints.directory}")

  try:
    for step in range(start_step, config.total_steps):
      extras: dict[str, Any] = {}
      if inputs.is_drill_step(config.sft, step):
        host_batch = inputs.drill_batch(config.sft, tokenizer, task.train_examples, config.seed, step)
        state, device_metrics = sft_step(state, step_lib.shard_batch(batching.split_microbatches(host_batch, 1),
                                                                     batch_sharding))
        extras.update(phase=config.sft.drill, reward_mean=None, num_tokens=float(host_batch.mask_NxT.sum()))
      elif step < config.sft.steps:
        raw = next(sft_iter)
        batch = step_lib.shard_batch(_sft_batch(raw, config.sft.num_microbatches), batch_sharding)
        state, device_metrics = sft_step(state, batch)
        extras.update(phase="sft", reward_mean=None, num_tokens=float(raw["completion_mask_BxC"].sum() +
                                                                      raw["prompt_mask_BxP"].sum()))
      else:
        grpo_index = step - config.sft.steps
        if grpo_index == 0:
          flush_pending()
          if config.sft.steps:
            run_eval("after_sft", step)
            inputs.export_params(workdir / "params_sft", graphdef, state.params, model_config, config.model)
          # A fresh optimizer for the new objective; the policy at this point is the frozen KL reference.
          state = step_lib.init_train_state(state.params, grpo_tx, state_sharding).replace(step=state.step)
          if config.grpo.loss.use_kl:
            checkpointing.save_reference(workdir, state.params)
            # A copy: the train step donates (and so deletes) the state's buffers.
            reference_params = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=params_sharding)(
                state.params)
        update_index = grpo_index % config.grpo.updates_per_rollout
        if update_index == 0:
          rollout_index = grpo_index // config.grpo.updates_per_rollout
          examples = next(grpo_iter).examples
          sampler.params = sampler_params(state.params)
          policy = SamplerPolicy(sampler, seed=_rollout_seed(rng_key, rollout_index))
          t_rollout = time.time()
          trajectories = rollout_shared([Episode.from_example(e) for e in examples], policy,
                                        tokenizer=tokenizer, embed_fn=embed_fn, config=rollout_config)
          rollout_extras = grpo_rows.rollout_metrics(trajectories)
          rollout_extras["rollout_time_s"] = time.time() - t_rollout
          rows, _ = grpo_rows.turn_rows(trajectories, config.grpo.loss)
          host_batches, pack_stats = grpo_rows.minibatches(
              rows, config.grpo.updates_per_rollout, buckets=config.grpo.length_buckets,
              pad_id=tokenizer.pad_token_id, microbatch_rows=config.grpo.microbatch_rows)
          rollout_extras.update(truncated_rows=float(pack_stats["truncated_rows"]), turn_rows=float(len(rows)))
          num_tokens = [float(b.mask_NxT.sum()) for b in host_batches]
          minibatches = [step_lib.shard_batch(b, batch_sharding) for b in host_batches]
          if config.grpo.loss.recompute_old_logprobs:
            minibatches = [b.replace(old_logprobs_NxT=logprobs_fn(state.params, b)) for b in minibatches]
          if reference_params is not None:
            minibatches = [b.replace(ref_logprobs_NxT=logprobs_fn(reference_params, b)) for b in minibatches]
        batch = minibatches[update_index]
        state, device_metrics = grpo_step(state, batch)
        extras.update(rollout_extras, phase="grpo", num_tokens=num_tokens[update_index])
      done_step = step + 1
      flush_pending()  # step t's metrics are fetched only now that step t + 1 is dispatched
      pending = (done_step, device_metrics, extras)
      if done_step % config.checkpoint_every == 0 or done_step == config.total_steps:
        flush_pending()  # every step up to a checkpoint is logged before the checkpoint exists
        checkpoints.save(done_step, state, data_positions(), rng_key)
      if done_step == config.debug_kill_at_step:
        os.kill(os.getpid(), signal.SIGKILL)
    flush_pending()
    checkpoints.wait()
    final = run_eval("final", config.total_steps)
    inputs.export_params(workdir / "params", graphdef, state.params, model_config, config.model)
  finally:
    log.close()
  checkpoints.close()
  distributed.barrier("end")  # no process leaves (and stops serving collectives) while another still writes
  return final or {}
