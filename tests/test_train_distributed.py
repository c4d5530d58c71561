"""A whole tiny run (SFT steps, then GRPO steps, held-out evaluations) on 2 CPU processes joined by `--distributed`
gives the metrics, evaluations and parameters of the same config on 1 process.

Both runs use the same global mesh (fsdp 2): one process with 2 simulated devices, or two processes with one each,
started with JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID and sharing one workdir. The two processes
roll out disjoint shares of every rollout and evaluation; only process 0 writes metrics and TensorBoard.
"""
import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from atommem_jax.checkpoint import orbax_params
from atommem_jax.train import loop

# Three tiny trainings (minutes on a busy host); `test_distributed.py` runs the pieces on 2 processes by default.
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENT = str(ROOT / "experiments" / "grpo_hotpot.py")
OVERRIDES = [
    "--config.total_steps=4", "--config.checkpoint_every=2", "--config.mesh.fsdp=2",
    "--config.sft.steps=2", "--config.sft.drill_steps=0", "--config.sft.drill_every=2",
    "--config.sft.drill_batch_size=4", "--config.sft.batch_size=4", "--config.sft.oracle_episodes=4",
    "--config.task.synthetic_worlds=8", "--config.task.num_eval_episodes=2", "--config.eval.num_episodes=1",
    "--config.eval.max_new_tokens=12",
    "--config.agent.max_steps=3", "--config.grpo.prompts_per_rollout=2", "--config.grpo.loss.num_generations=2",
    "--config.grpo.sampler.max_new_tokens=12", "--config.grpo.microbatch_rows=8",
]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _command(workdir: pathlib.Path, *extra: str) -> list[str]:
  return [sys.executable, "-m", "atommem_jax.train", f"--config={EXPERIMENT}:tiny", f"--workdir={workdir}",
          "--alsologtostderr", *OVERRIDES, *extra]


def _env(devices: int, **extra: str) -> dict[str, str]:
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
              PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp("distributed")
  single, multi = base / "single", base / "multi"
  done = subprocess.run(_command(single), env=_env(2), capture_output=True, text=True, timeout=900, cwd=ROOT)
  assert done.returncode == 0, done.stderr[-4000:]
  port = _free_port()
  workers = [subprocess.Popen(_command(multi, "--distributed"), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=_env(1, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                                       JAX_PROCESS_ID=str(i)))
             for i in range(2)]
  logs = []
  for worker in workers:
    _, stderr = worker.communicate(timeout=900)
    assert worker.returncode == 0, stderr[-4000:]
    logs.append(stderr)
  return single, multi, logs


def _rows(path: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_rows_close(got: list[dict], want: list[dict]) -> None:
  assert len(got) == len(want)
  for g, w in zip(got, want):
    g, w = ({k: v for k, v in row.items() if k not in loop.TIMING_KEYS} for row in (g, w))
    assert g.keys() == w.keys()
    for key in w:
      if isinstance(w[key], float):
        np.testing.assert_allclose(g[key], w[key], rtol=0, atol=1e-4, err_msg=key)
      else:
        assert g[key] == w[key], key


def test_two_processes_give_the_single_process_metrics(runs):
  single, multi, _ = runs
  want, got = _rows(single / "metrics.jsonl"), _rows(multi / "metrics.jsonl")
  assert [row["step"] for row in got] == [1, 2, 3, 4]  # written once, not once per process
  assert [row["phase"] for row in got] == ["recite", "sft", "grpo", "grpo"]
  for key in ("loss", "reward_mean", "kl"):
    assert key in got[-1]
  _assert_rows_close(got, want)
  _assert_rows_close(_rows(multi / "eval.jsonl"), _rows(single / "eval.jsonl"))
  assert len(list((multi / "tensorboard").iterdir())) == 1  # one event file: process 0's


def test_two_processes_give_the_single_process_parameters(runs):
  single, multi, _ = runs
  (_, want), (_, got) = (orbax_params.restore_params(workdir / "params") for workdir in (single, multi))
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=0, atol=1e-4), nnx.state(got), nnx.state(want))
  assert (multi / "params" / "qwen3_config.json").is_file()


def test_processes_roll_out_disjoint_shares(runs):
  _, _, logs = runs
  pattern = re.compile(r"rollout: episodes \[(\d+), (\d+)\) of (\d+) on process (\d+)")
  shares = [[tuple(map(int, m)) for m in pattern.findall(log)] for log in logs]
  # Evaluations (start, after SFT, final: 2 episodes) and the 2 GRPO rollouts (2 prompts): one episode each.
  assert [s[3] for s in shares[0]] == [0] * 5 and [s[3] for s in shares[1]] == [1] * 5
  assert all(s[:3] == (0, 1, 2) for s in shares[0]) and all(s[:3] == (1, 2, 2) for s in shares[1]), shares
