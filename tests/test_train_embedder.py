"""`python -m atommem_jax.train ... --config.embedder=DIR` trains with a Qwen3 checkpoint directory as the memory's
embedder (a random tiny Qwen3 saved by transformers, as wide as the tiny default's memory), and an embedder of
another width is one clear error before anything runs."""
import json
import os
import pathlib
import subprocess
import sys

from atommem_jax import configlib
from atommem_jax.data.tokenizer import load_tiny_tokenizer
from atommem_jax.memory.embedders import HashingEmbedder
from atommem_jax.train import oracle_pairs, task_split
from atommem_jax.train.config import TrainConfig
from hf_fixtures import make_tiny_hf_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENT = str(ROOT / "experiments" / "grpo_hotpot.py")
# One SFT step on the oracle's pairs, then two GRPO steps; tiny everything.
OVERRIDES = {
    "total_steps": 3, "checkpoint_every": 3, "sft.steps": 1, "sft.drill_steps": 0, "sft.drill_every": 0,
    "sft.batch_size": 4, "sft.oracle_episodes": 4, "task.synthetic_worlds": 8, "task.num_eval_episodes": 2,
    "eval.num_episodes": 0, "agent.max_steps": 3, "grpo.prompts_per_rollout": 2,
    "grpo.loss.num_generations": 2, "grpo.sampler.max_new_tokens": 12, "grpo.microbatch_rows": 8,
}


def _train(workdir: pathlib.Path, embedder: pathlib.Path) -> subprocess.CompletedProcess:
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  overrides = [f"--config.{key}={value}" for key, value in OVERRIDES.items()]
  return subprocess.run([sys.executable, "-m", "atommem_jax.train", f"--config={EXPERIMENT}:tiny",
                         f"--workdir={workdir}", f"--config.embedder={embedder}", *overrides], env=env,
                        capture_output=True, text=True, timeout=900, cwd=ROOT)


def _config() -> TrainConfig:
  config = configlib.load_config_file(EXPERIMENT).get_config("tiny")
  for key, value in OVERRIDES.items():
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return configlib.from_dict(TrainConfig, config)


def test_training_with_a_qwen3_checkpoint_as_the_embedder(tmp_path):
  embedder = tmp_path / "qwen3_embedding"
  make_tiny_hf_checkpoint(embedder, vocab_size=2048, hidden_size=_config().memory.embed_dim)
  result = _train(tmp_path / "run", embedder)
  assert result.returncode == 0, result.stderr[-4000:]
  rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [row["phase"] for row in rows] == ["sft", "grpo", "grpo"]
  assert all(row["loss"] is not None and row["update_skipped"] == 0.0 for row in rows)
  assert (tmp_path / "run" / "params").is_dir()
  # The oracle's demonstrations show what retrieval returned: with the hashing embedder they read otherwise.
  config = _config()
  hashing = oracle_pairs.sft_pairs(config, task_split.split_task(config.task), load_tiny_tokenizer(),
                                   HashingEmbedder(config.memory.embed_dim), tmp_path / "hashing")
  trained_on = (tmp_path / "run" / oracle_pairs.SFT_PAIRS_FILE).read_text().splitlines()
  assert len(trained_on) == len(hashing)
  assert [json.loads(line)["prompt"] for line in trained_on] != [p.prompt for p in hashing]


def test_an_embedder_of_another_width_is_one_clear_error(tmp_path):
  embedder = tmp_path / "wide"
  make_tiny_hf_checkpoint(embedder, vocab_size=2048, hidden_size=96, head_dim=24)
  result = _train(tmp_path / "run", embedder)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: embedder {embedder} has width 96, but memory.embed_dim is 64; set memory.embed_dim=96 or use an "
      f"embedder of width 64")
  assert not (tmp_path / "run" / "checkpoints").exists()
