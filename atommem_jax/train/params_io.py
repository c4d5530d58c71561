"""A run's parameters in and out: the model it starts from, and the parameter dirs it exports for evaluation.

The start is a preset initialised at random from the seed, or any checkpoint `checkpoint.loader` reads; the exports
(`params_sft/`, `params/`) are Orbax parameter dirs in the `checkpoint.save_params` layout, tokenizer included.
"""
from __future__ import annotations


import jax
from etils import epath
from flax import nnx
from jax.sharding import Mesh

from atommem_jax import checkpoint as checkpoint_lib
from atommem_jax import distributed
from atommem_jax.checkpoint import loader
from atommem_jax.model import Qwen3Config, abstract_model, get_preset
from atommem_jax.train import step as step_lib
from atommem_jax.train.config import ModelInitConfig


def start_checkpoint(config: ModelInitConfig) -> loader.CheckpointDir | None:
  """The checkpoint the run starts from (its architecture and tokenizer), or None for a random init."""
  return loader.resolve(config.checkpoint, field="model.checkpoint") if config.checkpoint else None


def init_model(config: ModelInitConfig, seed: int, mesh: Mesh
               ) -> tuple[Qwen3Config, nnx.GraphDef, step_lib.Params, step_lib.Params]:
  """`(model config, graphdef, params, params shardings)`, the params placed on `mesh`."""
  start = start_checkpoint(config)
  if start is None:
    model_config = config.runtime(get_preset(config.preset))
    graphdef, params, shardings = step_lib.init_params(model_config, seed, mesh)
    return model_config, graphdef, params, shardings
  model = loader.load_model(start, mesh)
  model_config = config.runtime(model.config)
  graphdef, _ = abstract_model(model_config)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  if model_config.param_dtype != model.config.param_dtype:
    params = jax.tree.map(lambda x: x.astype(model_config.param_dtype), params)
  return model_config, graphdef, params, step_lib.param_shardings(model, mesh)


def export_params(directory: epath.Path, graphdef: nnx.GraphDef, params: step_lib.Params,
                  model_config: Qwen3Config, config: ModelInitConfig) -> None:
  """An Orbax parameter dir (`checkpoint.save_params` layout, tokenizer included) that evaluation restores."""
  if distributed.is_main() and directory.exists():
    directory.rmtree()  # a pure function of the run: an earlier (possibly interrupted) export is replaced
  distributed.barrier(f"export {directory.name}")  # every process writes its shards into the fresh directory
  checkpoint_lib.save_params(directory, nnx.merge(graphdef, params), model_config,
                             tokenizer_src=loader.tokenizer_dir(config.tokenizer, start_checkpoint(config)))
