"""The reward is injected into training (`train_and_evaluate(..., reward_fn=)`), tunix-style: the GRPO rollouts and
the held-out evaluations are scored by the given function, not by the one the config names.

The run is a subprocess with one device (the tiny default's mesh): no SFT, one GRPO step on 2 episodes x 2 samples,
one held-out episode at the start and at the end.
"""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    from atommem_jax import configlib
    from atommem_jax.train import loop
    from atommem_jax.train.config import TrainConfig

    config = configlib.load_config_file(sys.argv[1]).get_config("tiny")
    config.total_steps, config.checkpoint_every, config.sft.steps = 1, 1, 0
    config.sft.drill_steps, config.sft.drill_every = 0, 0
    config.task.synthetic_worlds, config.task.num_eval_episodes, config.eval.num_episodes = 8, 1, 1
    config.eval.max_new_tokens, config.agent.max_steps = 12, 3
    config.grpo.prompts_per_rollout, config.grpo.loss.num_generations = 2, 2
    config.grpo.sampler.max_new_tokens, config.grpo.microbatch_rows = 12, 8
    scored = []

    def turns_reward(trajectory):
      # Never the boxed EM of an untrained model (0 everywhere): 1 + the number of turns, so the group varies.
      scored.append(1.0 + len(trajectory.turns))
      return scored[-1]

    loop.train_and_evaluate(configlib.from_dict(TrainConfig, config), sys.argv[2], reward_fn=turns_reward)
    json.dump(scored, open(sys.argv[3], "w"))
""")


def test_an_injected_reward_scores_the_rollouts_and_the_evaluations(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  scored_file = tmp_path / "scored.json"
  result = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "experiments" / "grpo_hotpot.py"),
                           str(tmp_path / "run"), str(scored_file)],
                          env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-4000:]
  scored = json.loads(scored_file.read_text())
  evals = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
  start = [e["reward_mean"] for e in evals if e["label"] == "start"]  # one episode per held-out size
  final = [e["reward_mean"] for e in evals if e["label"] == "final"]
  sizes = len(start)
  # In call order: the start evaluation, the rollout (2 episodes x 2 samples), the final evaluation.
  assert sizes >= 1 and len(scored) == 2 * sizes + 4 and all(s >= 2.0 for s in scored)
  assert start == scored[:sizes] and final == scored[sizes + 4:]
  (row,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert row["phase"] == "grpo"
  assert abs(row["reward_mean"] - sum(scored[sizes:sizes + 4]) / 4) < 1e-6
