"""The main job killed with SIGKILL and rerun ends bit-identical to an uninterrupted run; config errors are clear.

Runs `python -m atommem_jax.train` as a subprocess on a shrunken embedded default (3 SFT steps: a recitation drill,
an oracle batch from the extra-note pairs, which start at step 1 here, a drill; then 2 GRPO steps on 8-document
episodes; a checkpoint every step). One run is killed
after step 2 (during SFT, its checkpoint possibly still being written) and again after step 4 (during GRPO), then
finishes; its parameters, metrics and held-out evaluations must equal the uninterrupted run's.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from atommem_jax import configlib
from atommem_jax.train import checkpointing, loop
from atommem_jax.train.config import TrainConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENT = str(ROOT / "experiments" / "grpo_hotpot.py")
OVERRIDES = [
    "--config.total_steps=5", "--config.checkpoint_every=1", "--config.keep_checkpoints=2",
    "--config.sft.steps=3", "--config.sft.drill_steps=0", "--config.sft.drill_every=2",
    "--config.sft.drill_batch_size=4",
    "--config.sft.batch_size=4", "--config.sft.oracle_episodes=4", "--config.sft.oracle_extra_notes_from=1",
    "--config.task.synthetic_worlds=8", "--config.task.num_eval_episodes=2", "--config.eval.num_episodes=1",
    "--config.eval.max_new_tokens=12",
    "--config.agent.max_steps=3", "--config.grpo.prompts_per_rollout=2", "--config.grpo.loss.num_generations=2",
    "--config.grpo.sampler.max_new_tokens=12", "--config.grpo.microbatch_rows=8",
]


def _train(workdir: pathlib.Path, *extra: str) -> subprocess.CompletedProcess:
  # The runs share a persistent compilation cache (beside the workdirs): the same programs, compiled once.
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
             JAX_COMPILATION_CACHE_DIR=str(workdir.parent / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return subprocess.run([sys.executable, "-m", "atommem_jax.train", f"--config={EXPERIMENT}:tiny",
                         f"--workdir={workdir}", *OVERRIDES, *extra], env=env, capture_output=True, text=True,
                        timeout=600, cwd=ROOT)


def _final_params(workdir: pathlib.Path):
  return ocp.StandardCheckpointer().restore(workdir / "params" / "params")


def _metrics(workdir: pathlib.Path) -> list[dict]:
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in row.items() if k not in loop.TIMING_KEYS} for row in rows]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp("resume")
  straight, killed = base / "straight", base / "killed"
  done = _train(straight)
  assert done.returncode == 0, done.stderr[-4000:]
  for kill_at in (2, 4):
    result = _train(killed, f"--config.debug_kill_at_step={kill_at}")
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr[-4000:])
  result = _train(killed)
  assert result.returncode == 0, result.stderr[-4000:]
  return straight, killed


def test_killed_and_resumed_run_is_bit_identical(runs):
  straight, killed = runs
  want, got = _final_params(straight), _final_params(killed)
  jax.tree.map(np.testing.assert_array_equal, got, want)
  assert _metrics(killed) == _metrics(straight)
  steps = [row["step"] for row in _metrics(killed)]
  assert steps == [1, 2, 3, 4, 5]  # every step logged exactly once
  assert [row["phase"] for row in _metrics(killed)] == ["recite", "sft", "recite", "grpo", "grpo"]
  for row in _metrics(straight):
    for key in ("loss", "reward_mean", "reward_std", "em", "kl", "clip_fraction", "entropy", "op_rate/create",
                "op_rate/update", "op_rate/delete", "op_rate/read", "op_rate/scratchpad", "storage_size_mean"):
      if row["phase"] == "grpo" or key in ("loss", "reward_mean"):
        assert key in row, (key, row)
  assert sorted(int(p.name) for p in (straight / "checkpoints").iterdir() if p.name.isdigit()) == [4, 5]
  later_pairs = "sft_pairs_extra_notes.jsonl"
  assert (killed / later_pairs).read_text() == (straight / later_pairs).read_text()
  # Held-out evaluations at SFT's size (4 documents) and GRPO's (8), each once, whatever the kills interrupted.
  evals = [json.loads(line) for line in (killed / "eval.jsonl").read_text().splitlines()]
  assert [(row["label"], row["num_docs"]) for row in evals] == [
      (label, num_docs) for label in ("start", "after_sft", "final") for num_docs in (4, 8)]
  assert evals == [json.loads(line) for line in (straight / "eval.jsonl").read_text().splitlines()]


def test_resume_with_incompatible_config_is_refused(runs):
  straight, _ = runs
  config = configlib.from_dict(TrainConfig, _config_dict(seed=1))
  checkpoints = checkpointing.RunCheckpoints(straight, config)
  with pytest.raises(checkpointing.CheckpointMismatchError, match=r"seed: 0 -> 1"):
    checkpoints.check_compatible(checkpoints.latest_step())
  # Keys that do not change what was trained may differ.
  same = configlib.from_dict(TrainConfig, _config_dict(total_steps=10))
  assert checkpointing.RunCheckpoints(straight, same).check_compatible(5)["step"] == 5


def _config_dict(**changes):
  config = configlib.load_config_file(EXPERIMENT).get_config("tiny")
  for override in OVERRIDES:
    key, value = override.removeprefix("--config.").split("=")
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = type(node[leaf])(value)
  for key, value in changes.items():
    config[key] = value
  return config


def test_unknown_config_key_is_an_error(tmp_path):
  result = _train(tmp_path / "run", "--config.sft.stepz=3")
  assert result.returncode != 0
  assert "stepz" in result.stderr
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_second_run_on_a_live_workdir_is_refused(tmp_path):
  workdir = tmp_path / "run"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  first = subprocess.Popen([sys.executable, "-m", "atommem_jax.train", f"--config={EXPERIMENT}:tiny",
                            f"--workdir={workdir}", *OVERRIDES], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  try:
    for _ in range(1200):
      if (workdir / "workdir.lock").exists() or first.poll() is not None:
        break
      time.sleep(0.1)
    assert first.poll() is None, "the first run ended before it could be doubled"
    second = _train(workdir)
    # Before: both ran to the end, every evaluation row twice in eval.jsonl.
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert second.returncode == 1 and len(lines) == 1, second.stderr[-3000:]
    assert lines[0].startswith(f"error: workdir {workdir} is in use by pid {first.pid} on host ")
    assert "atommem_jax.train" in lines[0]
  finally:
    first.kill()
    first.wait(timeout=60)
