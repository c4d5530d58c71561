"""Parameter shardings from the logical-axis table, and models created directly sharded on a mesh.

Every parameter carries its logical axes as NNX `out_sharding` metadata (e.g. `("vocab", "embed")`); the functions
here turn them into `NamedSharding`s through `sharding.ShardingRules`, so trainers and samplers can give jitted steps
explicit in/out shardings.
"""
from __future__ import annotations

from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from atommem_jax import sharding as sharding_lib
from atommem_jax.model.config import Qwen3Config
from atommem_jax.model.qwen3 import Qwen3


def _state_of(model_or_state: nnx.Module | nnx.State) -> nnx.State:
  return nnx.state(model_or_state) if isinstance(model_or_state, nnx.Module) else model_or_state


def param_shardings(model_or_state: nnx.Module | nnx.State, mesh: Mesh,
                    rules: sharding_lib.ShardingRules = sharding_lib.DEFAULT_RULES) -> nnx.State:
  """A state-shaped tree of `NamedSharding`s (one per parameter) for `jax.jit` in/out shardings."""

  def to_sharding(variable: nnx.Variable) -> NamedSharding:
    axes = variable.get_metadata().get("out_sharding")
    if axes is None:
      return NamedSharding(mesh, jax.sharding.PartitionSpec())
    return rules.named(mesh, axes)

  return jax.tree.map(to_sharding, _state_of(model_or_state), is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_params(model_or_state: nnx.Module | nnx.State, mesh: Mesh,
                 rules: sharding_lib.ShardingRules = sharding_lib.DEFAULT_RULES) -> Any:
  """Places every parameter on `mesh` with its sharding; returns a new model (given a model) or state."""
  state = _state_of(model_or_state)
  sharded = jax.device_put(state, param_shardings(state, mesh, rules))
  if isinstance(model_or_state, nnx.Module):
    return nnx.merge(nnx.graphdef(model_or_state), sharded)
  return sharded


def abstract_model(config: Qwen3Config, mesh: Mesh | None = None,
                   rules: sharding_lib.ShardingRules = sharding_lib.DEFAULT_RULES
                   ) -> tuple[nnx.GraphDef, nnx.State]:
  """The graph definition and a state of `ShapeDtypeStruct`s (carrying shardings when a mesh is given)."""
  abstract = nnx.eval_shape(lambda: Qwen3(config, rngs=nnx.Rngs(0), rules=rules))
  graphdef, state = nnx.split(abstract)
  if mesh is not None:
    shardings = param_shardings(state, mesh, rules)
    state = jax.tree.map(lambda v, s: v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s)), state,
                         shardings, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return graphdef, state


def init_sharded(config: Qwen3Config, mesh: Mesh, *, seed: int = 0,
                 rules: sharding_lib.ShardingRules = sharding_lib.DEFAULT_RULES) -> Qwen3:
  """A randomly initialised model whose parameters are created sharded (no full copy on one device)."""
  graphdef, abstract_state = abstract_model(config, mesh, rules)
  shardings = param_shardings(abstract_state, mesh, rules)

  def init():
    return nnx.state(Qwen3(config, rngs=nnx.Rngs(seed), rules=rules))

  init = jax.jit(init, out_shardings=shardings)
  return nnx.merge(graphdef, init())
