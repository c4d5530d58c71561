"""The one loader: a checkpoint directory -> its model, its tokenizer, the embedder; used by train, evaluate,
generate and replay.

A checkpoint directory is any of
- an HF Qwen3 dir (`config.json` + safetensors);
- an Orbax parameter dir (`qwen3_config.json` + `params/`: `save_params`, `python -m atommem_jax.convert`, or a
  trainer's exported `RUN/params`, `RUN/params_sft`);
- a trainer workdir, its `checkpoints/` dir (the latest step), or one step dir `checkpoints/<step>`: only the
  `params` subtree of the saved train state is read, and the architecture and tokenizer are those of the
  checkpoint the run started from (its saved `model` config).
`resolve` reads which of these a path is, and the architecture it holds, without touching a weight, so every check
runs before anything is loaded.

Choices made once, here:
- Stop ids (`stop_ids`): the tokenizer's EOS plus every id `generation_config.json` lists beside the tokenizer, as
  transformers' `generate` does (Qwen3 ends a chat turn with `<|im_end|>` and a document with `<|endoftext|>`).
- Padding: a tokenizer without a pad token pads with its EOS (`load_tokenizer` sets it; padding is masked, so any
  id would do, and every consumer can read `tokenizer.pad_token_id`).
- The embedder reads the token ids of the tokenizer that wrote the memory's texts, so its instruction prefix and
  end token are encoded with that tokenizer (`Qwen3EmbedderConfig.for_tokenizer`), not with one stored beside the
  embedder's weights: the two must share a vocabulary, as Qwen3 and Qwen3-Embedding do.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Literal

import jax
import orbax.checkpoint as ocp
from flax import nnx

from atommem_jax import configlib
from atommem_jax.checkpoint.hf import CheckpointError, load_hf
from atommem_jax.checkpoint.model_init import ModelInitConfig
from atommem_jax.checkpoint.orbax_params import is_orbax_params_dir, load_config, restore_params
from atommem_jax.checkpoint.tokenizer_files import tokenizer_files
from atommem_jax.configlib import ConfigError
from atommem_jax.data.tokenizer import tiny_tokenizer_dir
from atommem_jax.memory import embedders
from atommem_jax.memory.transitions import EmbedFn
from atommem_jax.model import abstract_model, get_preset
from atommem_jax.model.config import Qwen3Config

HASHING = "hashing"  # the weight-free embedder's name, beside checkpoint directories
TINY_TOKENIZER = "tiny"  # the packaged tiny tokenizer's name, beside tokenizer directories

# Fields that do not change what the parameters mean; a checkpoint may differ from an expected preset in these.
_RUNTIME_FIELDS = ("dtype", "remat", "attention", "logits_chunk", "max_position_embeddings")


@dataclasses.dataclass(frozen=True)
class CheckpointDir:
  """What a checkpoint directory holds: the kind, the architecture, and where its tokenizer lives."""

  kind: Literal["orbax_params", "hf", "train_step"]
  path: pathlib.Path
  model_config: Qwen3Config
  tokenizer_dir: pathlib.Path


def resolve(path: str | pathlib.Path, *, field: str = "checkpoint") -> CheckpointDir:
  """The kind and architecture of the checkpoint at `path`; `field` names the config key in errors."""
  directory = pathlib.Path(path).expanduser().absolute()
  if not directory.exists():
    raise FileNotFoundError(f"{field} {directory} does not exist")
  if not directory.is_dir():
    raise CheckpointError(f"{field} {directory} is not a directory")
  if is_orbax_params_dir(directory):
    return CheckpointDir("orbax_params", directory, load_config(directory), directory)
  if (directory / "config.json").is_file() and any(directory.glob("model*.safetensors*")):
    return CheckpointDir("hf", directory, Qwen3Config.from_hf(directory), directory)
  step_dir = _trainer_step_dir(directory)
  if step_dir is not None:
    return _train_step(step_dir)
  raise CheckpointError(
      f"{field} {directory} holds no model parameters: it is neither an HF Qwen3 directory (config.json + "
      f"safetensors), an Orbax parameter directory (qwen3_config.json + params/, e.g. `python -m "
      f"atommem_jax.convert` output or RUN/params) nor a trainer workdir / checkpoints dir with step directories")


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


def _train_step(step_dir: pathlib.Path) -> CheckpointDir:
  meta_file = step_dir / "meta" / "metadata"
  try:
    model = json.loads(meta_file.read_text())["config"]["model"]
    preset, init_checkpoint, tokenizer = model["preset"], model["checkpoint"], model["tokenizer"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"trainer checkpoint {step_dir}: cannot read the run's model config from {meta_file} "
                          f"({e!r})") from None
  if init_checkpoint:
    start = resolve(init_checkpoint, field=f"the checkpoint trainer run {step_dir} started from")
    model_config, tokenizer_dir = start.model_config, start.tokenizer_dir
  else:
    model_config, tokenizer_dir = get_preset(preset), pathlib.Path(tiny_tokenizer_dir())
  # The run's dtypes, attention and remat (its parameters were saved in its `model.param_dtype`).
  try:
    model_config = configlib.from_dict(ModelInitConfig, model).runtime(model_config)
  except ConfigError as e:
    raise CheckpointError(f"trainer checkpoint {step_dir}: the run's model config in {meta_file}: {e}") from None
  return CheckpointDir("train_step", step_dir, model_config, pathlib.Path(tokenizer) if tokenizer else tokenizer_dir)


def check_architecture(checkpoint: CheckpointDir, expected_preset: str) -> None:
  """Refuses parameters whose architecture is not the preset `expected_preset` names ("" accepts any)."""
  if not expected_preset:
    return
  saved, wanted = checkpoint.model_config.to_dict(), get_preset(expected_preset).to_dict()
  diffs = {key: (saved[key], wanted[key]) for key in wanted if key not in _RUNTIME_FIELDS and saved[key] != wanted[key]}
  if diffs:
    raise CheckpointError(f"checkpoint {checkpoint.path} was saved with a different architecture than "
                          f"expected_model={expected_preset!r}; (saved, expected): {diffs}")


def load_model(checkpoint: CheckpointDir, mesh: jax.sharding.Mesh | None = None) -> Any:
  """The `model.Qwen3` with every parameter placed on `mesh` with its sharding from the logical-axis table (on the
  default device without a mesh), in the dtype it was saved in."""
  if checkpoint.kind == "hf":
    return load_hf(checkpoint.path, mesh=mesh)[1]
  if checkpoint.kind == "orbax_params":
    try:
      return restore_params(checkpoint.path, mesh=mesh, config=checkpoint.model_config)[1]
    except ConfigError as e:
      raise CheckpointError(str(e)) from None
  graphdef, abstract_state = abstract_model(checkpoint.model_config, mesh)
  if mesh is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract_state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract_state)
  target = {"params": abstract_state.to_pure_dict()}
  stored = ocp.StandardCheckpointer().metadata(checkpoint.path / "state").item_metadata.tree
  if "params" not in stored:
    raise CheckpointError(f"trainer checkpoint {checkpoint.path}: the saved state has no 'params' (keys "
                          f"{sorted(stored)})")
  _check_shapes(stored["params"], target["params"], checkpoint.path)
  restored = ocp.PyTreeCheckpointer().restore(
      checkpoint.path / "state", args=ocp.args.PyTreeRestore(
          item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
  nnx.replace_by_pure_dict(abstract_state, restored["params"])
  return nnx.merge(graphdef, abstract_state)


def _check_shapes(stored: Any, target: Any, where: pathlib.Path, prefix: str = "") -> None:
  missing, extra = sorted(set(target) - set(stored)), sorted(set(stored) - set(target))
  if missing or extra:
    raise CheckpointError(f"checkpoint {where}: parameters under {prefix or '/'} differ from the run's model "
                          f"config; missing {missing}, unexpected {extra}")
  for name, want in target.items():
    if isinstance(want, dict):
      _check_shapes(stored[name], want, where, f"{prefix}/{name}")
    elif tuple(stored[name].shape) != tuple(want.shape):
      raise CheckpointError(f"checkpoint {where}: parameter {prefix}/{name} has shape {tuple(stored[name].shape)}, "
                            f"the model config implies {tuple(want.shape)}")


def tokenizer_dir(spec: str, checkpoint: CheckpointDir | None) -> pathlib.Path:
  """`spec` "" = the checkpoint's tokenizer (the packaged tiny one without a checkpoint); "tiny" = the packaged
  tiny tokenizer; else a directory."""
  if spec == TINY_TOKENIZER or (not spec and checkpoint is None):
    return pathlib.Path(tiny_tokenizer_dir())
  return pathlib.Path(spec) if spec else checkpoint.tokenizer_dir


def load_tokenizer(spec: str, checkpoint: CheckpointDir | None, *, field: str = "tokenizer") -> Any:
  """The transformers tokenizer `tokenizer_dir(spec, checkpoint)` names; it must define an EOS token, which also
  pads when it defines no pad token."""
  directory = tokenizer_dir(spec, checkpoint)
  if spec or checkpoint is None:
    where = f"{field} {directory}"
  else:
    where = f"the tokenizer dir of checkpoint {checkpoint.path} ({directory})"
  if not directory.is_dir():
    raise FileNotFoundError(f"{where} is not a directory (tokenizers are read from local directories only)")
  if not any(p.name.startswith("tokenizer") or p.name in ("vocab.json", "merges.txt")
             for p in tokenizer_files(directory)):
    raise CheckpointError(f"{where} holds no tokenizer files (tokenizer.json / tokenizer_config.json / vocab.json); "
                          f"copy the tokenizer files next to the weights or set {field}=DIR")
  import transformers  # pylint: disable=g-import-not-at-top
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
  if tokenizer.eos_token_id is None:
    raise CheckpointError(f"{where}: the tokenizer defines no EOS token; generation needs one")
  if tokenizer.pad_token_id is None:
    tokenizer.pad_token = tokenizer.eos_token
  return tokenizer


def check_vocabulary(tokenizer: Any, model_config: Qwen3Config, what: str) -> None:
  """Every id the tokenizer writes must be a row of the model's embedding table."""
  if len(tokenizer) > model_config.vocab_size:
    raise CheckpointError(f"the tokenizer has {len(tokenizer)} tokens but {what} has a vocabulary of "
                          f"{model_config.vocab_size}")


def stop_ids(tokenizer: Any, directory: pathlib.Path) -> tuple[int, ...]:
  """The tokenizer's EOS, then every other id `directory/generation_config.json` lists as an end of generation."""
  ids = [int(tokenizer.eos_token_id)]
  generation_config = pathlib.Path(directory) / "generation_config.json"
  if generation_config.is_file():
    listed = json.loads(generation_config.read_text()).get("eos_token_id")
    for token in listed if isinstance(listed, list) else [] if listed is None else [listed]:
      if int(token) not in ids:
        ids.append(int(token))
  return tuple(ids)


def load_embedder(spec: str, *, embed_dim: int, tokenizer: Any, mesh: jax.sharding.Mesh | None = None,
                  field: str = "embedder", width_field: str = "memory.embed_dim") -> EmbedFn:
  """The memory's `embed_fn`: "hashing" (weight-free, `embed_dim` wide) or a Qwen3(-Embedding) checkpoint dir,
  loaded onto `mesh`, whose hidden size must be `embed_dim` and whose vocabulary must cover `tokenizer`'s ids."""
  if spec == HASHING:
    return embedders.HashingEmbedder(embed_dim)
  if not spec:
    raise ConfigError(f"{field} is empty: give {HASHING!r} (weight-free) or a Qwen3-Embedding checkpoint directory")
  checkpoint = resolve(spec, field=field)
  width = checkpoint.model_config.hidden_size
  if width != embed_dim:
    raise ConfigError(f"{field} {spec} has width {width}, but {width_field} is {embed_dim}; set {width_field}={width} "
                      f"or use an embedder of width {embed_dim}")
  check_vocabulary(tokenizer, checkpoint.model_config, f"{field} {spec}")
  try:
    recipe = embedders.Qwen3EmbedderConfig.for_tokenizer(tokenizer)
  except ValueError as e:
    raise CheckpointError(f"{field} {spec}: {e}") from None
  return embedders.Qwen3Embedder(load_model(checkpoint, mesh), recipe)
