"""The programs a training run compiles, built from its `TrainConfig` on abstract (shape-only) sharded inputs.

- `train_step`: the GRPO update as the loop runs it: reference log-probabilities (and pi_old when the config
  recomputes it), the policy loss, gradients accumulated over micro-batches, the optimizer update; the train state
  donated, every output sharding explicit. Micro-batches hold `grpo.microbatch_rows` rows of the longest length
  bucket.
- `prefill` / `decode`: the sampler's jitted functions at the largest prompt bucket, for one wave of rows
  (`grpo.sampler.wave_rows`, or the whole first turn of a rollout without waves).

Each program also reports the bytes that stay resident on every chip while it runs without being its argument: the
optimizer state and the reference parameters during sampling.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from atommem_jax import sharding as sharding_lib
from atommem_jax.bench.forward import flops_per_token
from atommem_jax.model import KVCache, Qwen3, Qwen3Config, abstract_model, param_shardings
from atommem_jax.sampling import batching as sampling_batching
from atommem_jax.sampling import sampler as sampler_lib
from atommem_jax.train import batching, step as step_lib
from atommem_jax.train.config import TrainConfig

# Micro-batches per compiled update: the accumulation runs as a loop, so two show its memory as well as more would.
MICROBATCHES = 2


@dataclasses.dataclass(frozen=True)
class Program:
  """A jitted function and abstract arguments to lower it with, under `mesh`."""

  name: str
  jitted: Callable
  args: tuple
  resident_bytes_per_chip: int  # live on every chip during the program, not among its arguments
  flops: float  # analytic model FLOPs of one call, all chips together
  shape: str  # what one call processes, for the report


def per_chip_bytes(tree: Any) -> int:
  """Bytes one chip holds of a tree of sharded `ShapeDtypeStruct`s (the largest shard of each leaf)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shard = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    dtype = leaf.dtype
    itemsize = 8 if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) else jnp.dtype(dtype).itemsize
    total += math.prod(shard) * itemsize
  return total


def _with_shardings(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _abstract_params(model_config: Qwen3Config, mesh: Mesh) -> tuple[nnx.GraphDef, Any, Any]:
  """`(graphdef, params, shardings)` as `train.step.init_params` makes them, shapes only."""
  abstract = nnx.eval_shape(lambda: Qwen3(model_config, rngs=nnx.Rngs(0)))
  graphdef, _ = nnx.split(abstract)
  shardings = step_lib.param_shardings(abstract, mesh)
  params = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
  return graphdef, _with_shardings(params, shardings), shardings


def train_step(config: TrainConfig, model_config: Qwen3Config, mesh: Mesh) -> Program:
  graphdef, params, params_sharding = _abstract_params(model_config, mesh)
  tx = step_lib.make_optimizer(config.grpo.optimizer)
  state_sharding = step_lib.state_shardings(tx, params_sharding, params, mesh)
  zero = jnp.zeros((), jnp.int32)
  state = _with_shardings(jax.eval_shape(lambda p: step_lib.TrainState(
      params=p, opt_state=tx.init(p), step=zero, nonfinite_streak=zero, skipped_updates=zero), params),
      state_sharding)
  rows, length = config.grpo.microbatch_rows, max(config.grpo.length_buckets)
  shape = (MICROBATCHES, rows, length)
  dtypes = batching.TrainBatch(tokens_NxT=jnp.int32, positions_NxT=jnp.int32, mask_NxT=jnp.bool_,
                               loss_mask_NxT=jnp.bool_, old_logprobs_NxT=jnp.float32, ref_logprobs_NxT=jnp.float32,
                               advantage_N=jnp.float32)
  batch_sharding = step_lib.batch_shardings(mesh)
  batch = jax.tree.map(lambda dtype, s: jax.ShapeDtypeStruct(shape if len(s.spec) == 3 else shape[:2], dtype,
                                                             sharding=s), dtypes, batch_sharding,
                       is_leaf=lambda x: not isinstance(x, batching.TrainBatch))
  temperature = config.grpo.sampler.temperature
  step_config = step_lib.StepConfig("grpo", config.grpo.loss, temperature=temperature)
  loss = config.grpo.loss
  logprobs = lambda p, b: step_lib.sequence_logprobs(p, b, graphdef=graphdef, temperature=temperature)

  def update(state, reference_params, batch):
    if loss.use_kl:
      batch = batch.replace(ref_logprobs_NxT=logprobs(reference_params, batch))
    if loss.recompute_old_logprobs:
      batch = batch.replace(old_logprobs_NxT=logprobs(state.params, batch))
    return step_lib.train_step(state, batch, graphdef=graphdef, tx=tx, config=step_config)

  replicated = NamedSharding(mesh, PartitionSpec())
  jitted = jax.jit(update, in_shardings=(state_sharding, params_sharding, batch_sharding),
                   out_shardings=(state_sharding, replicated), donate_argnums=(0,))
  tokens = math.prod(shape)
  per_token = flops_per_token(model_config, length)
  forwards = 3 + (1 if loss.use_kl else 0) + (1 if loss.recompute_old_logprobs else 0)  # fwd + bwd = 3 forwards
  return Program("train_step", jitted, (state, params, batch), 0, forwards * per_token["total"] * tokens,
                 f"{MICROBATCHES} x {rows} rows x {length} tokens")


def sampler_programs(config: TrainConfig, model_config: Qwen3Config, mesh: Mesh) -> list[Program]:
  graphdef, params = abstract_model(model_config, mesh)
  params_sharding = param_shardings(params, mesh)
  sampler_config = config.grpo.sampler
  prefill_fn, decode_fn = sampler_lib.jitted_functions(graphdef, sampler_config, 1, mesh=mesh,
                                                       params_sharding=params_sharding)
  rules = sharding_lib.DEFAULT_RULES
  spec = rules.spec(("batch",))[0]
  shards = math.prod(mesh.shape[a] for a in ((spec,) if isinstance(spec, str) else spec or ()))
  # A rollout's turn generates one row per live trajectory, at most prompts x G, in waves of wave_rows.
  rows = config.grpo.prompts_per_rollout * config.grpo.loss.num_generations
  if sampler_config.wave_rows:
    rows = min(rows, sampler_config.wave_rows)
  batch = sampling_batching.batch_bucket(rows, sampler_config.batch_buckets, shards)
  length = max(sampler_config.prompt_buckets)
  named = lambda *axes: rules.named(mesh, axes)
  tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32, sharding=named("batch", None))
  mask = jax.ShapeDtypeStruct((batch, length), jnp.bool_, sharding=named("batch", None))
  with jax.set_mesh(mesh):
    cache = jax.eval_shape(prefill_fn, params, tokens, mask)
  cache = _with_shardings(cache, KVCache.shardings(mesh, rules))
  row = lambda dtype: jax.ShapeDtypeStruct((batch,), dtype, sharding=named("batch"))
  replicated = named()
  stops = 2 * len(sampler_config.stop_strings)
  decode_args = (params, cache, row(jnp.int32), row(jnp.int32), row(jnp.bool_), row(jnp.int32),
                 jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype, sharding=replicated),
                 jax.ShapeDtypeStruct((max(1, len(sampler_config.eos_ids)),), jnp.int32, sharding=replicated),
                 jax.ShapeDtypeStruct((stops, 8 if stops else 1), jnp.int32, sharding=replicated))

  # Resident while sampling: the optimizer state (the parameters are the sampler's argument) and the reference.
  _, train_params, train_sharding = _abstract_params(model_config, mesh)
  tx = step_lib.make_optimizer(config.grpo.optimizer)
  opt_state = _with_shardings(jax.eval_shape(tx.init, train_params),
                              step_lib.state_shardings(tx, train_sharding, train_params, mesh).opt_state)
  resident = per_chip_bytes(opt_state) + (per_chip_bytes(train_params) if config.grpo.loss.use_kl else 0)

  new = sampler_config.max_new_tokens
  prefill_flops = flops_per_token(model_config, length)["total"] * batch * (length - 1)
  # Each decode step: every matmul parameter once per row, attention over the prompt and half the new tokens on
  # average.
  c = model_config
  attention = 2 * 2 * c.num_layers * c.num_heads * c.head_dim * (length + new / 2)
  decode_flops = (flops_per_token(c, 0)["params"] + attention) * batch * new
  return [Program("prefill", prefill_fn, (params, tokens, mask), resident, prefill_flops,
                  f"{batch} rows x {length} prompt tokens"),
          Program("decode", decode_fn, decode_args, resident, decode_flops,
                  f"{batch} rows x {new} new tokens over {length + new} cache slots")]


def lower(program: Program, mesh: Mesh):
  with jax.set_mesh(mesh):
    return program.jitted.lower(*program.args)

