"""The run's Orbax checkpoints: train state, data-iterator positions, RNG, step and config, saved together.

Layout: `WORKDIR/checkpoints/<step>/{state, data, meta}` written by one async `CheckpointManager` (an interrupted
save leaves only a temporary directory, never a step that restore would pick). `meta` holds the config the run was
started with; a resuming run whose config differs in anything but `config.RESUMABLE_KEYS` is refused with the keys
named. The frozen GRPO reference policy lives beside them in `WORKDIR/reference/`.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from atommem_jax import configlib, storage
from atommem_jax.train.config import RESUMABLE_KEYS, TrainConfig

FORMAT_VERSION = 1


class CheckpointMismatchError(ValueError):
  """A checkpoint written by a run whose config is incompatible with this one."""


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def config_differences(saved: dict[str, Any], current: TrainConfig) -> list[str]:
  """`key: saved -> current` for every key that differs and is not allowed to change on resume."""
  now = _flatten(configlib.to_dict(current))
  before = _flatten(saved)
  diffs = []
  for key in sorted(set(now) | set(before)):
    if key in RESUMABLE_KEYS:
      continue
    if before.get(key, "<absent>") != now.get(key, "<absent>"):
      diffs.append(f"{key}: {before.get(key, '<absent>')!r} -> {now.get(key, '<absent>')!r}")
  return diffs


class RunCheckpoints:
  """Save / restore of the whole run state under `workdir/checkpoints`."""

  def __init__(self, workdir: str | os.PathLike, config: TrainConfig):
    self.directory = storage.as_path(workdir) / "checkpoints"
    self.config = config
    options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True,
                                           enable_async_checkpointing=True, cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data: dict[str, Any], rng_key: jax.Array) -> None:
    meta = {"format_version": FORMAT_VERSION, "step": step, "config": configlib.to_dict(self.config),
            "rng_key": np.asarray(jax.random.key_data(rng_key)).tolist()}
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    data=ocp.args.JsonSave(data), meta=ocp.args.JsonSave(meta)),
                      force=True)

  def check_compatible(self, step: int) -> dict[str, Any]:
    """The saved meta of `step`, after refusing a checkpoint from an incompatible config."""
    meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if meta.get("format_version") != FORMAT_VERSION:
      raise CheckpointMismatchError(f"{self.directory / str(step)}: checkpoint format {meta.get('format_version')} "
                                    f"is not {FORMAT_VERSION}")
    diffs = config_differences(meta["config"], self.config)
    if diffs:
      raise CheckpointMismatchError(
          f"{self.directory / str(step)} was written by a run with a different config; refusing to resume from "
          f"it (use a new --workdir, or restore these keys): " + "; ".join(diffs))
    return meta

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any], jax.Array]:
    meta = self.check_compatible(step)
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                                  data=ocp.args.JsonRestore()))
    rng_key = jax.random.wrap_key_data(np.asarray(meta["rng_key"], np.uint32))
    return restored["state"], restored["data"], rng_key

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def save_reference(workdir: str | os.PathLike, params: Any) -> None:
  """The frozen reference policy for the KL term (overwritten: it is a pure function of the run so far)."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(storage.as_path(workdir) / "reference", params, force=True)
  checkpointer.wait_until_finished()


def restore_reference(workdir: str | os.PathLike, abstract_params: Any) -> Any:
  path = storage.as_path(workdir) / "reference"
  if not path.exists():
    raise FileNotFoundError(f"{path}: the GRPO reference policy is missing; it is written when GRPO starts")
  return ocp.StandardCheckpointer().restore(path, abstract_params)


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
