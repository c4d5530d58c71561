"""Model parameters as an Orbax checkpoint, with the config saved beside them as JSON.

Layout of a parameter directory:
  qwen3_config.json     `Qwen3Config.to_dict()`; restore builds the model from it
  params/               Orbax StandardCheckpointer tree (the state's pure dict)
  tokenizer files       copied verbatim (see tokenizer_files.py)
"""
from __future__ import annotations

import json
import os
import pathlib

import jax
import orbax.checkpoint as ocp
from flax import nnx

from atommem_jax import configlib, storage
from atommem_jax import sharding as sharding_lib
from atommem_jax.checkpoint.tokenizer_files import copy_tokenizer_files
from atommem_jax.model.config import Qwen3Config
from atommem_jax.model.partitioning import abstract_model
from atommem_jax.model.qwen3 import Qwen3

CONFIG_FILE = "qwen3_config.json"
PARAMS_DIR = "params"

# Fields that change parameter shapes or meaning; the rest (activation dtype, remat) may differ on restore.
_ARCHITECTURE_FIELDS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                        "intermediate_size", "tie_word_embeddings", "param_dtype", "rope_theta", "rms_norm_eps")


def is_orbax_params_dir(path: str | os.PathLike) -> bool:
  path = storage.as_path(path)
  return (path / CONFIG_FILE).is_file() and (path / PARAMS_DIR).is_dir()


def save_params(directory: str | os.PathLike, model: Qwen3, config: Qwen3Config, *,
                tokenizer_src: str | pathlib.Path | None = None) -> None:
  """Saves the parameters (each host writes its shards) and the config; `directory` must not hold a checkpoint."""
  directory = storage.as_path(directory)
  if (directory / PARAMS_DIR).exists():
    raise FileExistsError(f"{directory / PARAMS_DIR} already exists; refusing to overwrite a checkpoint")
  directory.mkdir(parents=True, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(directory / PARAMS_DIR, nnx.state(model).to_pure_dict())
  checkpointer.wait_until_finished()
  if jax.process_index() == 0:
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
    copy_tokenizer_files(tokenizer_src, directory)


def load_config(directory: str | os.PathLike) -> Qwen3Config:
  path = storage.as_path(directory) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"no {CONFIG_FILE} in {directory}; not an Orbax parameter checkpoint")
  return Qwen3Config.from_dict(json.loads(path.read_text()))


def restore_params(directory: str | os.PathLike, *, mesh: jax.sharding.Mesh | None = None,
                   rules: sharding_lib.ShardingRules = sharding_lib.DEFAULT_RULES,
                   config: Qwen3Config | None = None) -> tuple[Qwen3Config, Qwen3]:
  """Restores `(config, model)`, placing each array with its sharding on `mesh` (default device without one).

  With `config`, the saved architecture must match it (activation dtype and remat are taken from `config`).
  """
  directory = storage.as_path(directory)
  saved = load_config(directory)
  if config is not None:
    diffs = {f: (getattr(saved, f), getattr(config, f)) for f in _ARCHITECTURE_FIELDS
             if getattr(saved, f) != getattr(config, f)}
    if diffs:
      raise configlib.ConfigError(
          f"checkpoint {directory} was saved with a different architecture; (saved, requested): {diffs}")
  config = config or saved
  graphdef, abstract_state = abstract_model(config, mesh, rules)
  if mesh is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract_state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract_state)
  target = abstract_state.to_pure_dict()
  checkpointer = ocp.StandardCheckpointer()
  stored = checkpointer.metadata(directory / PARAMS_DIR).item_metadata.tree
  _check_against(stored, target, directory)
  restored = checkpointer.restore(directory / PARAMS_DIR, target)
  nnx.replace_by_pure_dict(abstract_state, restored)
  return config, nnx.merge(graphdef, abstract_state)


def _check_against(stored, target, directory: os.PathLike, prefix: str = "") -> None:
  """One clear error for a parameter missing, extra, or of another shape/dtype than the config implies."""
  missing, extra = sorted(set(target) - set(stored)), sorted(set(stored) - set(target))
  if missing or extra:
    raise configlib.ConfigError(
        f"checkpoint {directory}: parameters under {prefix or '/'} differ from the config; missing {missing}, "
        f"unexpected {extra}")
  for name, want in target.items():
    if isinstance(want, dict):
      _check_against(stored[name], want, directory, f"{prefix}/{name}")
      continue
    have = stored[name]
    if tuple(have.shape) != tuple(want.shape) or have.dtype != want.dtype:
      raise configlib.ConfigError(
          f"checkpoint {directory}: parameter {prefix}/{name} is {have.dtype}{tuple(have.shape)}, the config "
          f"expects {want.dtype}{tuple(want.shape)}")
