"""A damaged newest checkpoint is reported (step, path, what is wrong), moved aside (never deleted), and the run state
comes from the newest checkpoint that restores; logged rows travel with every checkpoint."""
import json

import jax
import numpy as np
import pytest

from atommem_jax import configlib
from atommem_jax.train import checkpointing
from atommem_jax.train.config import TrainConfig


def _state(step):
  # Random weights: the array data, not the metadata, is the largest file of a step (what truncation hits).
  return {"w": np.random.default_rng(step).normal(size=(64, 64)).astype(np.float32),
          "b": np.arange(8, dtype=np.float32) + step}


ABSTRACT = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(0))


def _history(step):
  return {"metrics": [{"step": s, "loss": 1.0 / s} for s in range(1, step + 1)], "eval": []}


def _checkpoints(workdir, keep=3, **changes):
  config = configlib.from_dict(TrainConfig, {"keep_checkpoints": keep, **changes})
  return checkpointing.RunCheckpoints(workdir, config)


def _saved(workdir, steps, keep=3):
  checkpoints = _checkpoints(workdir, keep)
  for step in steps:
    checkpoints.save(step, _state(step), {"position": step}, jax.random.key(step), _history(step))
  checkpoints.close()
  return workdir / "checkpoints"


def _truncate_largest(directory):
  files = sorted((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  files[-1].write_bytes(files[-1].read_bytes()[:files[-1].stat().st_size // 2])
  return files[-1]


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
  directory = _saved(tmp_path, [2, 4])
  _truncate_largest(directory / "4" / "state")
  checkpoints = _checkpoints(tmp_path)
  with pytest.raises(ValueError):  # the damage is real: step 4 alone does not restore
    checkpoints.restore(4, ABSTRACT)
  restored = checkpoints.restore_newest(ABSTRACT)
  assert restored.step == 2 and restored.data == {"position": 2} and restored.history == _history(2)
  np.testing.assert_array_equal(restored.state["w"], _state(2)["w"])
  np.testing.assert_array_equal(jax.random.key_data(restored.rng_key), jax.random.key_data(jax.random.key(2)))
  report = checkpoints.repairs[0]
  assert report.startswith(f"checkpoint 4 ({directory / '4'}) does not restore: ")
  assert "/4/state/" in report and "moved to" in report  # names the damaged database and where it went
  assert (directory / "4.unrestorable" / "state").is_dir() and not (directory / "4").exists()
  assert checkpoints.latest_step() == 2
  # The run goes on: steps 3 and 4 are written again; the damaged copy is never collected or deleted.
  for step in (3, 4, 5, 6):
    checkpoints.save(step, _state(step), {"position": step}, jax.random.key(step), _history(step))
  checkpoints.close()
  assert sorted(p.name for p in directory.iterdir()) == ["4", "4.unrestorable", "5", "6"]


def test_damaged_metadata_and_missing_items_fall_back_too(tmp_path):
  directory = _saved(tmp_path, [1, 2, 3])
  (directory / "3" / "meta" / "metadata").write_text('{"format_version": 1, "st')
  for path in (directory / "2" / "state").rglob("*"):
    if path.is_file() and path.name.endswith(".ocdbt"):
      path.unlink()
  checkpoints = _checkpoints(tmp_path)
  restored = checkpoints.restore_newest(ABSTRACT)
  assert restored.step == 1
  assert [r.split(" (")[0] for r in checkpoints.repairs[:2]] == ["checkpoint 3", "checkpoint 2"]
  assert "meta/metadata is not valid JSON (Unterminated string" in checkpoints.repairs[0]
  assert sorted(p.name for p in directory.iterdir()) == ["1", "2.unrestorable", "3.unrestorable"]


def test_when_nothing_restores_the_run_starts_over(tmp_path):
  directory = _saved(tmp_path, [1])
  _truncate_largest(directory / "1" / "state")
  checkpoints = _checkpoints(tmp_path)
  assert checkpoints.restore_newest(ABSTRACT) is None
  assert checkpoints.repairs[-1] == "no checkpoint restores; starting from step 0"
  assert (directory / "1.unrestorable").is_dir()


def test_a_checkpoint_of_another_config_is_refused_not_set_aside(tmp_path):
  directory = _saved(tmp_path, [2])
  with pytest.raises(checkpointing.CheckpointMismatchError, match="seed: 0 -> 1"):
    _checkpoints(tmp_path, seed=1).restore_newest(ABSTRACT)
  assert (directory / "2").is_dir()


def test_a_checkpoint_without_history_restores_with_none(tmp_path):
  checkpoints = _checkpoints(tmp_path)
  checkpoints.save(1, _state(1), {}, jax.random.key(1))
  checkpoints.close()
  restored = _checkpoints(tmp_path).restore_newest(ABSTRACT)
  assert restored.step == 1 and restored.history is None
  assert json.loads((tmp_path / "checkpoints" / "1" / "meta" / "metadata").read_text())["step"] == 1
