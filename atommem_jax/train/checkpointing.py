"""The run's Orbax checkpoints: train state, data-iterator positions, RNG, step, config and logged rows, together.

Layout: `WORKDIR/checkpoints/<step>/{state, data, meta, history}` written by one async `CheckpointManager` (an
interrupted save leaves only a temporary directory, never a step that restore would pick). `meta` holds the config
the run was started with; a resuming run whose config differs in anything but `config.RESUMABLE_KEYS` is refused
with the keys named. `history` holds the metrics and evaluation rows logged up to the step, so a resume can put back
a row the JSON-lines files lost (absent in checkpoints written before it existed). The frozen GRPO reference policy
lives beside them in `WORKDIR/reference/`.

A checkpoint that does not restore (a truncated or missing file, unreadable metadata) is reported with its step,
path and what is wrong, moved aside to `checkpoints/<step>.unrestorable` (never deleted: move it back by hand to
retry it), and the run resumes from the newest one that restores, or from the start if none does.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from atommem_jax import configlib, storage
from atommem_jax.train.config import RESUMABLE_KEYS, TrainConfig

FORMAT_VERSION = 1
UNRESTORABLE_SUFFIX = ".unrestorable"


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


@dataclasses.dataclass(frozen=True)
class Restored:
  """What a run resumes from: the step, its train state, data positions, RNG key and logged rows (None if the
  checkpoint predates saving them)."""

  step: int
  state: Any
  data: dict[str, Any]
  rng_key: jax.Array
  history: dict[str, Any] | None


class RunCheckpoints:
  """Save / restore of the whole run state under `workdir/checkpoints`."""

  def __init__(self, workdir: str | os.PathLike, config: TrainConfig):
    self.directory = storage.as_path(workdir) / "checkpoints"
    self.config = config
    self.repairs: list[str] = []
    options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True,
                                           enable_async_checkpointing=True, cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data", "meta", "history"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data: dict[str, Any], rng_key: jax.Array,
           history: dict[str, Any] | None = None) -> None:
    meta = {"format_version": FORMAT_VERSION, "step": step, "config": configlib.to_dict(self.config),
            "rng_key": np.asarray(jax.random.key_data(rng_key)).tolist()}
    items = dict(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data), meta=ocp.args.JsonSave(meta))
    if history is not None:
      items["history"] = ocp.args.JsonSave(history)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

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
    restored = self.restore_step(step, abstract_state)
    return restored.state, restored.data, restored.rng_key

  def restore_step(self, step: int, abstract_state: Any) -> Restored:
    meta = self.check_compatible(step)
    items = dict(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
    if (self.directory / str(step) / "history").is_dir():
      items["history"] = ocp.args.JsonRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    rng_key = jax.random.wrap_key_data(np.asarray(meta["rng_key"], np.uint32))
    return Restored(step, restored["state"], restored["data"], rng_key, restored.get("history"))

  def restore_newest(self, abstract_state: Any) -> Restored | None:
    """The newest checkpoint that restores; each newer one that does not is reported (`repairs` too) and moved
    aside (module docstring). None when no checkpoint restores (or there is none). A checkpoint of an incompatible
    config is not damage: its `CheckpointMismatchError` propagates."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored, problem = self.restore_step(step, abstract_state), None
      except CheckpointMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except  # TensorStore, JSON and OS errors alike mean damage
        restored, problem = None, _what_is_wrong(self.directory / str(step), e)
      problem = _agreed_problem(problem)
      if problem is None:
        if self.repairs:
          self.repairs.append(f"resumed from checkpoint {step} ({self.directory / str(step)})")
          logging.warning("%s", self.repairs[-1])
        return restored
      moved = self._set_aside(step)
      self.repairs.append(f"checkpoint {step} ({self.directory / str(step)}) does not restore: {problem[:500]}; "
                          f"moved to {moved}")
      logging.warning("%s", self.repairs[-1])
    if self.repairs:
      self.repairs.append("no checkpoint restores; starting from step 0")
      logging.warning("%s", self.repairs[-1])
    return None

  def _set_aside(self, step: int) -> epath.Path:
    """Renames `checkpoints/<step>` out of the manager's sight (a name that is no step); never deletes it."""
    source = self.directory / str(step)
    target = source.with_name(f"{step}{UNRESTORABLE_SUFFIX}")
    count = 1
    while target.exists():
      count += 1
      target = source.with_name(f"{step}{UNRESTORABLE_SUFFIX}.{count}")
    if jax.process_index() == 0:
      source.rename(target)
    _sync(f"checkpoint_set_aside_{step}")
    self.manager.reload()
    return target

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


# Orbax's JSON files in a step directory; a JSON error does not say which one it came from.
_JSON_FILES = ("_CHECKPOINT_METADATA", "_METADATA", "metadata", "_sharding")


def _what_is_wrong(step_dir: epath.Path, error: BaseException | None) -> str:
  """The damaged file and its fault when a JSON file is, else the restore error (TensorStore's names the database
  and array it could not read)."""
  found = [root / name for root, _, files in step_dir.walk() for name in files if name in _JSON_FILES]
  for path in sorted(found, key=os.fspath):  # epath's walk: rglob is refused for object stores
    if path.is_file():
      try:
        json.loads(path.read_bytes())
      except ValueError as e:
        return f"{path.relative_to(step_dir)} is not valid JSON ({e})"
  chain = []
  while error is not None and len(chain) < 10:
    chain.append(" ".join(str(error).split()))
    error = error.__cause__ or error.__context__
  # Orbax wraps TensorStore's error ("OUT_OF_RANGE: Error reading ... in OCDBT database at ...") in its own.
  message = next((m for m in chain if re.match(r"[A-Z_]{4,}: ", m)), next((m for m in chain if m), ""))
  message = re.sub(r"\s*\[tensorstore_spec=.*", "", message)  # a page of JSON
  return message or "unknown error"


def _agreed_problem(problem: str | None) -> str | None:
  """Every process resumes from the same step: a checkpoint that fails on one process fails on all."""
  if jax.process_count() == 1:
    return problem
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  failed = multihost_utils.process_allgather(np.int32(problem is not None))
  if problem is None and np.any(failed):
    return "it does not restore on another process (see that process's log)"
  return problem


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


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
