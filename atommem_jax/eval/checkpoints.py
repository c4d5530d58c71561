"""Finding and checking what an evaluation restores: the parameter checkpoint, its architecture, its tokenizer.

`checkpoint` may name an Orbax parameter dir (`checkpoint.save_params` or `python -m atommem_jax.convert` output:
`qwen3_config.json` + `params/`) or a trainer workdir / its `checkpoints/` dir, in which case the latest step is used.
"""
from __future__ import annotations

import pathlib
from typing import Any

import jax

from atommem_jax import checkpoint as checkpoint_lib
from atommem_jax import configlib
from atommem_jax.model.config import Qwen3Config


class EvalError(ValueError):
  """An evaluation input that cannot be used; the message names the file, key or value."""


def is_hf_dir(directory: pathlib.Path) -> bool:
  return (directory / "config.json").is_file() and any(directory.glob("model*.safetensors*"))


def resolve_checkpoint(path: str, *, allow_hf: bool = False) -> pathlib.Path:
  """The Orbax parameter dir `path` names (itself, or the latest step under a trainer workdir), or an HF dir."""
  directory = pathlib.Path(path).expanduser().absolute()
  if not directory.exists():
    raise EvalError(f"checkpoint {directory} does not exist")
  if checkpoint_lib.is_orbax_params_dir(directory) or (allow_hf and is_hf_dir(directory)):
    return directory
  raise EvalError(f"checkpoint {directory} holds no model parameters: expected an Orbax parameter dir "
                  f"({checkpoint_lib.orbax_params.CONFIG_FILE} + {checkpoint_lib.orbax_params.PARAMS_DIR}/), "
                  f"e.g. `python -m atommem_jax.convert` output")


def restore_model(directory: str | pathlib.Path, mesh: jax.sharding.Mesh, *, expected_model: str,
                  expected: Qwen3Config | None = None, allow_hf: bool = False):
  """`(config, model)` with every parameter placed on `mesh`; an architecture other than `expected` is refused."""
  directory = resolve_checkpoint(str(directory), allow_hf=allow_hf)
  if not checkpoint_lib.is_orbax_params_dir(directory):
    return checkpoint_lib.load_hf(directory, mesh=mesh)
  try:
    return checkpoint_lib.restore_params(directory, mesh=mesh, config=expected)
  except configlib.ConfigError as e:
    raise EvalError(f"{e} (expected_model={expected_model!r})" if expected_model else str(e)) from None


def load_tokenizer(spec: str, checkpoint_dir: pathlib.Path) -> Any:
  """"" = the tokenizer saved with the checkpoint, "tiny" = the packaged tiny tokenizer, else a directory."""
  from atommem_jax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top

  if spec == "tiny":
    return tokenizer_lib.load_tiny_tokenizer()
  directory = pathlib.Path(spec) if spec else checkpoint_dir
  if not (directory / "tokenizer.json").is_file() and not (directory / "tokenizer_config.json").is_file():
    where = f"tokenizer dir {directory}" if spec else f"checkpoint {directory}"
    raise EvalError(f"{where} holds no tokenizer files (tokenizer.json); set --config.tokenizer=DIR or 'tiny'")
  import transformers  # pylint: disable=g-import-not-at-top
  return transformers.AutoTokenizer.from_pretrained(str(directory))


def check_vocab(tokenizer: Any, model_config: Qwen3Config, checkpoint_dir: pathlib.Path) -> None:
  if len(tokenizer) > model_config.vocab_size:
    raise EvalError(f"the tokenizer has {len(tokenizer)} tokens but checkpoint {checkpoint_dir} has a vocabulary of "
                    f"{model_config.vocab_size}: they were not trained together")
  for name in ("eos_token_id", "pad_token_id"):
    if getattr(tokenizer, name) is None:
      raise EvalError(f"the tokenizer defines no {name.removesuffix('_id')} token; generation needs one")
