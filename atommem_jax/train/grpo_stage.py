"""The GRPO stage, one rollout at a time: collect rollouts -> turn rows -> advantages -> micro-batches -> updates.

`GRPOStage.collect` plays one batch of episodes with the current policy (G samples each), scores each trajectory with
the stage's injected `reward_fn` (tunix-style: exact match, F1 or a judge plug in without touching an engine or an
environment), turns every turn of every trajectory into a training row carrying its trajectory's group advantage, and packs the rows into the
`updates_per_rollout` mini-batches (each `[micro-batches, rows, T]`) with the old and reference log-probabilities
filled in; `GRPOStage.update` takes one optimizer step on one of them. `begin` starts the stage: a fresh optimizer
for the new objective, and the frozen reference policy for the KL term.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from atommem_jax.agent.config import RolloutConfig
from atommem_jax.agent.envs.long_context import Episode
from atommem_jax.agent.policy import SamplerPolicy
from atommem_jax.agent.rewards import RewardFn
from atommem_jax.agent.trajectory import Trajectory
from atommem_jax.data.long_context import LongContextExample
from atommem_jax.rollout_engine import RolloutFn
from atommem_jax.sampling.sampler import Sampler
from atommem_jax.train import batching, checkpointing, grpo_rows, step as step_lib
from atommem_jax.train.config import GRPOStageConfig


@dataclasses.dataclass(frozen=True)
class RolloutUpdates:
  """One rollout's training data: the mini-batch of each of its updates, their token counts, its metrics."""

  minibatches: list[batching.TrainBatch]  # placed on the mesh
  num_tokens: list[float]
  metrics: dict[str, Any]  # logged with every update the rollout feeds


@dataclasses.dataclass(frozen=True)
class GRPOStage:
  """What every GRPO rollout and update of a run uses; built once."""

  config: GRPOStageConfig
  graphdef: nnx.GraphDef
  sampler: Sampler  # the policy's sampler; its parameters are set to the current ones before each rollout
  tokenizer: Any
  embed_fn: Any
  run_rollout: RolloutFn
  rollout_config: RolloutConfig
  reward_fn: RewardFn  # trajectory -> reward, injected (the config's `agent.reward` unless the caller gives one)
  train_step: Callable[..., tuple[step_lib.TrainState, dict[str, jax.Array]]]
  logprobs_fn: Callable[..., jax.Array]
  batch_sharding: batching.TrainBatch
  # The training parameters as the sampler holds them (a multi-process run: this process's full copy,
  # `distributed.localize`); None: the same arrays as an NNX state.
  sampler_params: Callable[[step_lib.Params], Any] | None = None
  env: Any = None  # the run's environment object (the web one, shared by every rollout); None: the engine makes it

  def collect(self, params: step_lib.Params, reference_params: step_lib.Params | None,
              examples: Sequence[LongContextExample], seed: int) -> RolloutUpdates:
    """Rollouts of `examples` under `params` (sampling with `seed`), as the mini-batches of the next updates."""
    started = time.time()
    trajectories = self.collect_rollouts(params, examples, seed)
    metrics = grpo_rows.rollout_metrics(trajectories, grpo_rows.tool_names(self.env))
    metrics["rollout_time_s"] = time.time() - started
    rows, _ = grpo_rows.turn_rows(trajectories, self.config.loss)  # each row carries its group's advantage
    host_batches, pack_stats = grpo_rows.minibatches(
        rows, self.config.updates_per_rollout, buckets=self.config.length_buckets,
        pad_id=self.tokenizer.pad_token_id, microbatch_rows=self.config.microbatch_rows)
    metrics.update(truncated_rows=float(pack_stats["truncated_rows"]), turn_rows=float(len(rows)))
    minibatches = [step_lib.shard_batch(b, self.batch_sharding) for b in host_batches]
    return RolloutUpdates(minibatches=self.with_logprobs(minibatches, params, reference_params),
                        num_tokens=[float(b.mask_NxT.sum()) for b in host_batches], metrics=metrics)

  def collect_rollouts(self, params: step_lib.Params, examples: Sequence[LongContextExample],
                       seed: int) -> list[Trajectory]:
    self.sampler.params = (self.sampler_params(params) if self.sampler_params is not None
                           else nnx.state(nnx.merge(self.graphdef, params)))
    policy = SamplerPolicy(self.sampler, seed=seed)
    episodes = self.env.episodes(examples) if self.env is not None else [Episode.from_example(e) for e in examples]
    return self.run_rollout(episodes, policy, tokenizer=self.tokenizer, embed_fn=self.embed_fn,
                            config=self.rollout_config, env=self.env, reward_fn=self.reward_fn)

  def with_logprobs(self, minibatches: list[batching.TrainBatch], params: step_lib.Params,
                    reference_params: step_lib.Params | None) -> list[batching.TrainBatch]:
    """pi_old recomputed by the train step's forward pass (`loss.recompute_old_logprobs`; otherwise the sampler's),
    and the reference policy's log-probabilities for the KL term."""
    if self.config.loss.recompute_old_logprobs:
      minibatches = [b.replace(old_logprobs_NxT=self.logprobs_fn(params, b)) for b in minibatches]
    if reference_params is not None:
      minibatches = [b.replace(ref_logprobs_NxT=self.logprobs_fn(reference_params, b)) for b in minibatches]
    return minibatches

  def update(self, state: step_lib.TrainState, batch: RolloutUpdates, index: int
             ) -> tuple[step_lib.TrainState, dict[str, jax.Array], dict[str, Any]]:
    """The `index`-th update on `batch`: `(state, device metrics, host metrics)`."""
    state, device_metrics = self.train_step(state, batch.minibatches[index])
    return state, device_metrics, dict(batch.metrics, phase="grpo", num_tokens=batch.num_tokens[index])


def begin(state: step_lib.TrainState, tx: Any, state_sharding: step_lib.TrainState, params_sharding: Any,
          use_kl: bool, workdir: pathlib.Path) -> tuple[step_lib.TrainState, step_lib.Params | None]:
  """A fresh optimizer for the new objective around the current policy, which is also the frozen KL reference
  (saved beside the checkpoints, so a resumed run finds it): `(state, reference params or None)`."""
  state = step_lib.init_train_state(state.params, tx, state_sharding).replace(step=state.step)
  if not use_kl:
    return state, None
  checkpointing.save_reference(workdir, state.params)
  # A copy: the train step donates (and so deletes) the state's buffers.
  return state, jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=params_sharding)(state.params)


def rollout_seed(rng_key: jax.Array, rollout_index: int) -> int:
  # Turn t of a rollout samples with seed + t (SamplerPolicy); rollouts are spaced far apart.
  return int(jax.random.randint(jax.random.fold_in(rng_key, rollout_index), (), 0, 2**20)) * 1024
