"""Finding and checking what an evaluation restores: the parameters, their architecture, their tokenizer.

`checkpoint` may name
- an Orbax parameter dir (`checkpoint.save_params` / `python -m atommem_jax.convert` output, or a trainer's exported
  `RUN/params`, `RUN/params_sft`): `qwen3_config.json` + `params/`;
- a trainer workdir, its `checkpoints/` dir (the latest step is used), or one step dir `checkpoints/<step>`: only the
  `params` subtree of the saved train state is read (partial restore; optimizer state stays on disk), and the
  architecture and tokenizer are those the run's saved config names;
- for the embedder only, also an HF dir (`config.json` + safetensors).
Reading which of these a path is, and the architecture it holds, touches no weights, so every check runs before the
restore and before any output exists.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Literal

import jax
import orbax.checkpoint as ocp
from flax import nnx

from atommem_jax import checkpoint as checkpoint_lib
from atommem_jax import configlib
from atommem_jax.data import tokenizer as tokenizer_lib
from atommem_jax.model import abstract_model, get_preset
from atommem_jax.model.config import Qwen3Config
from atommem_jax.train.config import ModelInitConfig

# Fields that do not change what the parameters mean; a checkpoint may differ from `expected_model` in these.
_RUNTIME_FIELDS = ("dtype", "remat", "attention", "logits_chunk", "max_position_embeddings")


class EvalError(ValueError):
  """An evaluation input that cannot be used; the message names the file, key or value."""


@dataclasses.dataclass(frozen=True)
class ModelSource:
  """Where the parameters are, what architecture they have, and where their tokenizer lives."""

  kind: Literal["orbax_params", "train_step", "hf"]
  path: pathlib.Path
  model_config: Qwen3Config
  tokenizer_dir: pathlib.Path


def _is_hf_dir(directory: pathlib.Path) -> bool:
  return (directory / "config.json").is_file() and any(directory.glob("model*.safetensors*"))


def _step_dirs(checkpoints_dir: pathlib.Path) -> list[pathlib.Path]:
  return sorted((p for p in checkpoints_dir.iterdir() if p.name.isdigit() and (p / "state").is_dir()),
                key=lambda p: int(p.name))


def _trainer_step_dir(directory: pathlib.Path) -> pathlib.Path | None:
  """The step dir a trainer path names: itself, the latest under `checkpoints/`, or under `WORKDIR/checkpoints/`."""
  if (directory / "state").is_dir() and (directory / "meta").is_dir():
    return directory
  for checkpoints_dir in (directory, directory / "checkpoints"):
    if checkpoints_dir.is_dir():
      steps = _step_dirs(checkpoints_dir)
      if steps:
        return steps[-1]
  return None


def _train_step_source(step_dir: pathlib.Path) -> ModelSource:
  meta_file = step_dir / "meta" / "metadata"
  try:
    model = json.loads(meta_file.read_text())["config"]["model"]
    preset, init_checkpoint, tokenizer = model["preset"], model["checkpoint"], model["tokenizer"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise EvalError(f"trainer checkpoint {step_dir}: cannot read the run's model config from {meta_file} ({e!r})")
  if not init_checkpoint:
    model_config = get_preset(preset)
  elif checkpoint_lib.is_orbax_params_dir(init_checkpoint):
    model_config = checkpoint_lib.load_config(init_checkpoint)
  else:
    model_config = Qwen3Config.from_hf(init_checkpoint)
  # The run's dtypes, attention and remat (its parameters were saved in its `model.param_dtype`).
  model_config = configlib.from_dict(ModelInitConfig, model).runtime(model_config)
  tokenizer_dir = pathlib.Path(tokenizer or init_checkpoint or tokenizer_lib.tiny_tokenizer_dir())
  return ModelSource("train_step", step_dir, model_config, tokenizer_dir)


def resolve_checkpoint(path: str, *, allow_hf: bool = False) -> ModelSource:
  directory = pathlib.Path(path).expanduser().absolute()
  if not directory.exists():
    raise EvalError(f"checkpoint {directory} does not exist")
  if checkpoint_lib.is_orbax_params_dir(directory):
    return ModelSource("orbax_params", directory, checkpoint_lib.load_config(directory), directory)
  if allow_hf and _is_hf_dir(directory):
    return ModelSource("hf", directory, Qwen3Config.from_hf(directory), directory)
  step_dir = _trainer_step_dir(directory)
  if step_dir is not None:
    return _train_step_source(step_dir)
  raise EvalError(f"checkpoint {directory} holds no model parameters: expected an Orbax parameter dir "
                  f"(qwen3_config.json + params/, e.g. `python -m atommem_jax.convert` output or RUN/params) or a "
                  f"trainer workdir / checkpoints dir with step directories")


def check_architecture(source: ModelSource, expected_model: str) -> None:
  """Refuses parameters whose architecture is not the preset `expected_model` names ("" accepts any)."""
  if not expected_model:
    return
  expected = get_preset(expected_model)
  saved, wanted = source.model_config.to_dict(), expected.to_dict()
  diffs = {key: (saved[key], wanted[key]) for key in wanted if key not in _RUNTIME_FIELDS and saved[key] != wanted[key]}
  if diffs:
    raise EvalError(f"checkpoint {source.path} was saved with a different architecture than expected_model="
                    f"{expected_model!r}; (saved, expected): {diffs}")


def restore_model(source: ModelSource, mesh: jax.sharding.Mesh) -> Any:
  """The model with every parameter placed on `mesh` with its sharding from the logical-axis table."""
  if source.kind == "hf":
    return checkpoint_lib.load_hf(source.path, mesh=mesh)[1]
  if source.kind == "orbax_params":
    try:
      return checkpoint_lib.restore_params(source.path, mesh=mesh, config=source.model_config)[1]
    except configlib.ConfigError as e:
      raise EvalError(str(e)) from None
  graphdef, abstract_state = abstract_model(source.model_config, mesh)
  target = {"params": abstract_state.to_pure_dict()}
  stored = ocp.StandardCheckpointer().metadata(source.path / "state").item_metadata.tree
  if "params" not in stored:
    raise EvalError(f"trainer checkpoint {source.path}: the saved state has no 'params' (keys {sorted(stored)})")
  _check_shapes(stored["params"], target["params"], source.path)
  restored = ocp.PyTreeCheckpointer().restore(
      source.path / "state", args=ocp.args.PyTreeRestore(
          item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
  nnx.replace_by_pure_dict(abstract_state, restored["params"])
  return nnx.merge(graphdef, abstract_state)


def _check_shapes(stored: Any, target: Any, where: pathlib.Path, prefix: str = "") -> None:
  missing, extra = sorted(set(target) - set(stored)), sorted(set(stored) - set(target))
  if missing or extra:
    raise EvalError(f"checkpoint {where}: parameters under {prefix or '/'} differ from the run's model config; "
                    f"missing {missing}, unexpected {extra}")
  for name, want in target.items():
    if isinstance(want, dict):
      _check_shapes(stored[name], want, where, f"{prefix}/{name}")
    elif tuple(stored[name].shape) != tuple(want.shape):
      raise EvalError(f"checkpoint {where}: parameter {prefix}/{name} has shape {tuple(stored[name].shape)}, the "
                      f"model config implies {tuple(want.shape)}")


def load_tokenizer(spec: str, source: ModelSource) -> Any:
  """"" = the tokenizer that goes with the checkpoint, "tiny" = the packaged tiny tokenizer, else a directory."""
  if spec == "tiny":
    return tokenizer_lib.load_tiny_tokenizer()
  directory = pathlib.Path(spec) if spec else source.tokenizer_dir
  if not (directory / "tokenizer.json").is_file() and not (directory / "tokenizer_config.json").is_file():
    where = f"tokenizer dir {directory}" if spec else f"the tokenizer dir of checkpoint {source.path} ({directory})"
    raise EvalError(f"{where} holds no tokenizer files (tokenizer.json); set --config.tokenizer=DIR or 'tiny'")
  import transformers  # pylint: disable=g-import-not-at-top
  return transformers.AutoTokenizer.from_pretrained(str(directory))


def check_tokenizer(tokenizer: Any, source: ModelSource) -> None:
  if len(tokenizer) > source.model_config.vocab_size:
    raise EvalError(f"the tokenizer has {len(tokenizer)} tokens but checkpoint {source.path} has a vocabulary of "
                    f"{source.model_config.vocab_size}: they were not trained together")
  for name in ("eos_token_id", "pad_token_id"):
    if getattr(tokenizer, name) is None:
      raise EvalError(f"the tokenizer defines no {name.removesuffix('_id')} token; generation needs one")
