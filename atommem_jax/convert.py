"""`python -m atommem_jax.convert --src DIR --dst DIR`: HF safetensors <-> Orbax parameter checkpoint.

The direction follows what SRC holds (an Orbax parameter dir, or an HF dir with config.json + safetensors).
Output is written into a temporary sibling of DST and renamed at the end, so a failure leaves no partial DST; an
existing non-empty DST is refused.
"""
from __future__ import annotations

import pathlib
import shutil
import tempfile

import jax
import jax.numpy as jnp
from absl import app, flags
from flax import nnx

from atommem_jax import checkpoint, cli
from atommem_jax.model import Qwen3, Qwen3Config, abstract_model

_SRC = flags.DEFINE_string("src", None, "Source checkpoint directory (HF or Orbax parameters).")
_DST = flags.DEFINE_string("dst", None, "Destination directory; must not exist or be empty.")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Cast parameters (default: keep).")


def convert(src: str | pathlib.Path, dst: str | pathlib.Path, *, dtype: str | None = None) -> str:
  """Converts SRC into DST; returns the direction taken ("hf->orbax" or "orbax->hf")."""
  src, dst = pathlib.Path(src).absolute(), pathlib.Path(dst).absolute()
  if not src.is_dir():
    raise FileNotFoundError(f"--src {src} is not a directory")
  if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
    raise FileExistsError(f"--dst {dst} exists and is not an empty directory; refusing to overwrite it")
  dst.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
  try:
    if checkpoint.is_orbax_params_dir(src):
      direction = "orbax->hf"
      config, model = checkpoint.restore_params(src)
      if dtype:
        config, model = _cast(config, model, dtype)
      checkpoint.export_hf(model, config, staging, tokenizer_src=src)
    elif (src / "config.json").is_file():
      direction = "hf->orbax"
      config, model = checkpoint.load_hf(src, dtype=dtype)
      checkpoint.save_params(staging, model, config, tokenizer_src=src)
    else:
      raise FileNotFoundError(f"--src {src} holds neither an Orbax parameter checkpoint nor an HF config.json")
    if dst.exists():
      dst.rmdir()  # empty, checked above
    staging.rename(dst)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return direction


def _cast(config: Qwen3Config, model: Qwen3, dtype: str) -> tuple[Qwen3Config, Qwen3]:
  # The config is a static attribute of the graph, so the cast model is rebuilt from the new config.
  config = config.replace(dtype=dtype, param_dtype=dtype)
  graphdef, state = abstract_model(config)
  target = jnp.dtype(dtype)
  nnx.replace_by_pure_dict(state, jax.tree.map(lambda a: a.astype(target), nnx.state(model).to_pure_dict()))
  return config, nnx.merge(graphdef, state)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  direction = convert(_SRC.value, _DST.value, dtype=_DTYPE.value)
  print(f"{direction}: {_SRC.value} -> {_DST.value}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["src", "dst"])
  cli.run(main)
