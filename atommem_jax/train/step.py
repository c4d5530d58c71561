"""The sharded, jitted train step: SFT or GRPO loss, gradient accumulation, AdamW, a skipped non-finite update.

`train_step(state, batch, ...)` is a module-level pure function over pytrees; `make_train_step` jits it with explicit
in/out shardings from the one logical-axis table and donates the train state. Batches arrive as
`[micro-batches, rows, T]` host arrays (see `batching.split_microbatches`) and are placed with `shard_batch`, which
also works when several processes each hold the same global batch.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from atommem_jax import sharding as sharding_lib
from atommem_jax.train import batching, grpo, sft

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW with linear warm-up then cosine decay, after global-norm clipping."""

  learning_rate: float = 1e-6
  warmup_steps: int = 20
  decay_steps: int = 1000  # length of warm-up + cosine; the rate stays at its floor afterwards
  end_learning_rate_ratio: float = 0.1
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 0.01
  max_grad_norm: float = 1.0

  def __post_init__(self):
    if self.learning_rate < 0 or self.warmup_steps < 0 or self.max_grad_norm <= 0:
      raise ValueError(f"OptimizerConfig: learning_rate and warmup_steps must be >= 0, max_grad_norm > 0: {self}")
    if self.decay_steps <= self.warmup_steps:
      raise ValueError(f"OptimizerConfig.decay_steps ({self.decay_steps}) must exceed warmup_steps "
                       f"({self.warmup_steps})")


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """What one jitted update computes; hashable, so it is a static argument."""

  objective: Literal["sft", "grpo"]
  grpo: grpo.GRPOConfig = grpo.GRPOConfig()
  # GRPO trains the policy the sampler draws from: softmax(logits / temperature) (truncation aside), as verl does.
  temperature: float = 1.0


@flax.struct.dataclass
class TrainState:
  params: Params
  opt_state: Any
  step: jax.Array  # int32: optimizer steps taken (skipped updates included)
  nonfinite_streak: jax.Array  # int32: consecutive updates skipped for a non-finite loss or gradient
  skipped_updates: jax.Array  # int32: all skipped updates


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=config.warmup_steps,
      decay_steps=config.decay_steps, end_value=config.learning_rate * config.end_learning_rate_ratio)
  return optax.chain(
      optax.clip_by_global_norm(config.max_grad_norm),
      optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay))


def param_logical_axes(model: nnx.Module) -> Params:
  """The logical axes every parameter was annotated with, as a pure dict shaped like the params."""
  axes: dict[str, Any] = {}
  for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    node = axes
    for key in path[:-1]:
      node = node.setdefault(key, {})
    logical = variable.get_metadata().get("out_sharding")
    if logical is None:
      raise ValueError(f"parameter {'/'.join(map(str, path))} has no logical axes (out_sharding) annotation")
    node[path[-1]] = tuple(logical)
  return axes


def param_shardings(model: nnx.Module, mesh: Mesh,
                    rules: sharding_lib.ShardingRules = sharding_lib.DEFAULT_RULES) -> Params:
  return jax.tree.map(lambda axes: rules.named(mesh, axes), param_logical_axes(model),
                      is_leaf=lambda x: isinstance(x, tuple))


def init_params(model_config: Any, seed: int, mesh: Mesh) -> tuple[nnx.GraphDef, Params, Params]:
  """Randomly initialised Qwen3 params created directly in their shards: `(graphdef, params, shardings)`."""
  from atommem_jax.model.qwen3 import Qwen3

  abstract_model = nnx.eval_shape(lambda: Qwen3(model_config, rngs=nnx.Rngs(seed)))
  graphdef, _ = nnx.split(abstract_model)
  shardings = param_shardings(abstract_model, mesh)

  def create() -> Params:
    return nnx.to_pure_dict(nnx.state(Qwen3(model_config, rngs=nnx.Rngs(seed)), nnx.Param))

  return graphdef, jax.jit(create, out_shardings=shardings)(), shardings


def state_shardings(tx: optax.GradientTransformation, params_shardings: Params, abstract_params: Params,
                    mesh: Mesh) -> TrainState:
  """Optimizer moments follow their parameter's sharding; counters and scalars are replicated."""
  replicated = NamedSharding(mesh, PartitionSpec())
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  opt_shardings = optax.tree_map_params(tx, lambda _, s: s, abstract_opt, params_shardings,
                                        transform_non_params=lambda _: replicated)
  return TrainState(params=params_shardings, opt_state=opt_shardings, step=replicated,
                    nonfinite_streak=replicated, skipped_updates=replicated)


def init_train_state(params: Params, tx: optax.GradientTransformation, shardings: TrainState) -> TrainState:
  """A fresh optimizer around `params`, placed as `shardings` says."""
  def init(params):
    zero = jnp.zeros((), jnp.int32)
    return TrainState(params=params, opt_state=tx.init(params), step=zero, nonfinite_streak=zero,
                      skipped_updates=zero)
  return jax.jit(init, in_shardings=(shardings.params,), out_shardings=shardings)(params)


def batch_shardings(mesh: Mesh, rules: sharding_lib.ShardingRules = sharding_lib.DEFAULT_RULES) -> batching.TrainBatch:
  """[micro-batches, rows, ...]: rows split over the batch axes, the rest replicated."""
  rows_T = rules.named(mesh, (None, "batch", "length"))
  rows = rules.named(mesh, (None, "batch"))
  return batching.TrainBatch(tokens_NxT=rows_T, positions_NxT=rows_T, mask_NxT=rows_T, loss_mask_NxT=rows_T,
                             old_logprobs_NxT=rows_T, ref_logprobs_NxT=rows_T, advantage_N=rows)


def shard_batch(batch: batching.TrainBatch, shardings: batching.TrainBatch) -> batching.TrainBatch:
  """Global host arrays -> global jax.Arrays: every process holds the same global batch and hands
  `jax.make_array_from_process_local_data` only the block its own devices hold."""
  def place(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    x = np.asarray(x)
    indices = sharding.addressable_devices_indices_map(x.shape).values()
    block = tuple(slice(min(index[d].indices(size)[0] for index in indices),
                        max(index[d].indices(size)[1] for index in indices)) for d, size in enumerate(x.shape))
    return jax.make_array_from_process_local_data(sharding, np.asarray(x[block]), x.shape)
  return jax.tree.map(place, batch, shardings)


def _token_stats(params: Params, graphdef: nnx.GraphDef, micro: batching.TrainBatch, **kwargs
                 ) -> batching.TokenStats:
  """Next-token statistics of a micro-batch; the LM head runs in chunks of `logits_chunk` positions."""
  model = nnx.merge(graphdef, params)
  h_NxTxD = model.hidden_states(micro.tokens_NxT, micro.positions_NxT, micro.mask_NxT)
  return batching.next_token_stats(model.logits, h_NxTxD, micro.tokens_NxT, chunk=model.config.logits_chunk,
                                   **kwargs)


def _microbatch_loss(params: Params, graphdef: nnx.GraphDef, micro: batching.TrainBatch, num_tokens: jax.Array,
                     num_rows: jax.Array, config: StepConfig) -> tuple[jax.Array, dict[str, jax.Array]]:
  if config.objective == "sft":
    return sft.sft_loss_from_stats(_token_stats(params, graphdef, micro, accuracy=True), micro.loss_mask_NxT,
                                   num_tokens)
  stats = _token_stats(params, graphdef, micro, temperature=config.temperature, entropy=True)
  loss, metrics = grpo.grpo_loss(stats.logprobs_NxT, micro.old_logprobs_NxT, micro.ref_logprobs_NxT,
                                 micro.advantage_N, micro.loss_mask_NxT, stats.entropy_NxT, config.grpo,
                                 num_tokens=num_tokens, num_rows=num_rows)
  if "kl" not in metrics:
    metrics["kl"] = jnp.zeros((), jnp.float32)
  return loss, metrics


def train_step(state: TrainState, batch: batching.TrainBatch, *, graphdef: nnx.GraphDef,
               tx: optax.GradientTransformation, config: StepConfig) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer update from a `[M, n, T]` batch, gradients summed over the M micro-batches.

  Every micro-batch loss is normalised by the token / row counts of the whole batch, so the accumulated gradient
  equals the full-batch gradient. A non-finite loss or gradient leaves params and optimizer state untouched.
  """
  tokens_MxN = batch.loss_mask_NxT.sum(axis=-1)
  num_tokens = tokens_MxN.sum().astype(jnp.float32)
  num_rows = (tokens_MxN > 0).sum().astype(jnp.float32)
  grad_fn = jax.value_and_grad(_microbatch_loss, has_aux=True)

  def accumulate(carry, micro):
    grads_sum, metrics_sum = carry
    (_, metrics), grads = grad_fn(state.params, graphdef, micro, num_tokens, num_rows, config)
    return (jax.tree.map(jnp.add, grads_sum, grads), jax.tree.map(jnp.add, metrics_sum, metrics)), None

  first = jax.tree.map(lambda x: x[0], batch)
  metrics_shape = jax.eval_shape(lambda: grad_fn(state.params, graphdef, first, num_tokens, num_rows, config)[0][1])
  zeros = (jax.tree.map(jnp.zeros_like, state.params), jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                                                    metrics_shape))
  (grads, metrics), _ = jax.lax.scan(accumulate, zeros, batch)

  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
  updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(finite, new, old))
  streak = jnp.where(finite, 0, state.nonfinite_streak + 1)
  new_state = TrainState(params=keep(new_params, state.params), opt_state=keep(new_opt_state, state.opt_state),
                         step=state.step + 1, nonfinite_streak=streak,
                         skipped_updates=state.skipped_updates + (~finite).astype(jnp.int32))
  metrics = dict(metrics, grad_norm=grad_norm, update_skipped=(~finite).astype(jnp.float32),
                 num_loss_tokens=num_tokens, nonfinite_streak=streak, skipped_updates=new_state.skipped_updates)
  return new_state, metrics


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, config: StepConfig,
                    state_sharding: TrainState, mesh: Mesh):
  """`state, metrics = step_fn(state, batch)`: jitted with explicit shardings, the state donated."""
  replicated = NamedSharding(mesh, PartitionSpec())
  jitted = jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx, config=config),
                   in_shardings=(state_sharding, batch_shardings(mesh)),
                   out_shardings=(state_sharding, replicated), donate_argnums=(0,))
  return _under_mesh(jitted, mesh)


def _under_mesh(fn, mesh: Mesh):
  # The model pins activations with `sharding.constrain`, which reads the mesh set at trace time.
  @functools.wraps(fn)
  def wrapped(*args):
    with jax.set_mesh(mesh):
      return fn(*args)
  return wrapped


def sequence_logprobs(params: Params, batch: batching.TrainBatch, *, graphdef: nnx.GraphDef,
                      temperature: float = 1.0) -> jax.Array:
  """Per-token log-probabilities `[M, n, T]` of a batch under `params` at `temperature` (pi_old recomputed, or the
  reference)."""
  def one(_, micro):
    return None, _token_stats(params, graphdef, micro, temperature=temperature).logprobs_NxT

  return jax.lax.scan(one, None, batch)[1]


def make_logprobs_fn(graphdef: nnx.GraphDef, params_sharding: Params, mesh: Mesh, temperature: float = 1.0):
  jitted = jax.jit(functools.partial(sequence_logprobs, graphdef=graphdef, temperature=temperature),
                   in_shardings=(params_sharding, batch_shardings(mesh)),
                   out_shardings=sharding_lib.DEFAULT_RULES.named(mesh, (None, "batch", "length")))
  return _under_mesh(jitted, mesh)
