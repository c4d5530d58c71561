"""Chaos: the main job killed with SIGKILL at 5 random points (some while a checkpoint is being written), with a random
metrics line damaged and the newest checkpoint truncated once, ends bit-identical to an uninterrupted run and reports
what it repaired.

The schedule comes from a seeded RNG (`CHAOS_SEED`, default 0; the kill moments themselves depend on timing). Two
kinds of kill: `--config.debug_kill_at_step=k` (SIGKILL right after checkpoint k is handed to the async writer, so
during its write), and an outside SIGKILL a random moment after the run has logged a random number of steps.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from test_train_resume import EXPERIMENT, OVERRIDES, ROOT, _final_params, _metrics, _train

TOTAL_STEPS = 5  # OVERRIDES' total_steps


def _env(workdir):
  return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu",
              PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
              JAX_COMPILATION_CACHE_DIR=str(workdir.parent / "jax_cache"),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def _lines(workdir):
  path = workdir / "metrics.jsonl"
  return path.read_bytes().split(b"\n")[:-1] if path.exists() else []


def _newest_checkpoint(workdir):
  steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()] if (
      workdir / "checkpoints").is_dir() else []
  return max(steps, default=0)


def _kill_after_logged(workdir, rows, delay):
  """Starts a run and SIGKILLs it `delay` seconds after metrics.jsonl holds `rows` rows; its stderr."""
  process = subprocess.Popen([sys.executable, "-m", "atommem_jax.train", f"--config={EXPERIMENT}:tiny",
                              f"--workdir={workdir}", *OVERRIDES], env=_env(workdir), cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 600
  while process.poll() is None and len(_lines(workdir)) < rows and time.time() < deadline:
    time.sleep(0.05)
  time.sleep(delay)
  process.send_signal(signal.SIGKILL)
  return process.communicate(timeout=60)[1].decode(errors="replace")


@pytest.mark.slow
def test_five_kills_a_damaged_line_and_a_truncated_checkpoint_change_nothing(tmp_path):
  rng = random.Random(int(os.environ.get("CHAOS_SEED", "0")))
  straight, chaos = tmp_path / "straight", tmp_path / "chaos"
  done = _train(straight)
  assert done.returncode == 0, done.stderr[-4000:]

  damage_after, truncate_after = rng.sample(range(4), 2)  # after which kills (0-3) the files are damaged
  logs, cut_text, truncated = [], None, None
  for kill in range(5):
    resume = _newest_checkpoint(chaos)
    if rng.random() < 0.5:
      at_step = rng.randint(resume + 1, TOTAL_STEPS)
      result = _train(chaos, f"--config.debug_kill_at_step={at_step}")
      assert result.returncode == -signal.SIGKILL, result.stderr[-4000:]
      logs.append(result.stderr)
      print(f"kill {kill}: from checkpoint {resume}, SIGKILL while checkpoint {at_step} is written")
    else:
      rows, delay = rng.randint(resume, TOTAL_STEPS - 1), rng.uniform(0.0, 0.5)
      logs.append(_kill_after_logged(chaos, rows, delay))
      print(f"kill {kill}: from checkpoint {resume}, SIGKILL {delay:.2f} s after {rows} rows were logged "
            f"(then {len(_lines(chaos))} rows, newest checkpoint {_newest_checkpoint(chaos)})")
    lines = _lines(chaos)
    if kill >= damage_after and cut_text is None and lines:  # (later, if nothing was logged yet)
      index = rng.randrange(len(lines))
      cut_text = lines[index][:len(lines[index]) // 2]
      lines[index] = cut_text
      (chaos / "metrics.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
      print(f"  metrics.jsonl line {index + 1} cut to {len(cut_text)} bytes")
    if kill >= truncate_after and truncated is None and _newest_checkpoint(chaos):
      newest = chaos / "checkpoints" / str(_newest_checkpoint(chaos))
      files = sorted((p for p in newest.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
      files[-1].write_bytes(files[-1].read_bytes()[:files[-1].stat().st_size // 2])
      truncated = newest.name
      print(f"  {files[-1].relative_to(chaos)} truncated")
  assert cut_text is not None and truncated is not None
  final = _train(chaos)
  assert final.returncode == 0, final.stderr[-4000:]
  logs.append(final.stderr)

  # The same run, every step and evaluation once.
  jax.tree.map(np.testing.assert_array_equal, _final_params(chaos), _final_params(straight))
  assert _metrics(chaos) == _metrics(straight)
  assert (chaos / "eval.jsonl").read_text() == (straight / "eval.jsonl").read_text()
  # What was repaired was reported, and nothing damaged was thrown away.
  report = "\n".join(logs)
  print("\n".join(line for line in report.splitlines() if "set aside" in line or "restore" in line
                  or "stale lock" in line))
  assert "metrics.jsonl: line " in report and "set aside in" in report, report[-4000:]
  aside = [json.loads(line) for line in (chaos / "metrics.jsonl.damaged").read_text().splitlines()]
  assert cut_text.decode() in [record["text"] for record in aside]
  assert f"checkpoint {truncated} (" in report and "does not restore" in report, report[-4000:]
  assert list((chaos / "checkpoints").glob(f"{truncated}.unrestorable*"))
  assert not (chaos / "workdir.lock").exists()
