"""A run whose workdir is a `gs://` URI writes everything through etils.epath and resumes from there.

No network: in a subprocess, an fsspec filesystem registered for `gs://` (the one epath's fsspec backend asks for)
keeps bucket/path under a local directory; Orbax's array bytes reach the same directory (TensorStore's key-value
specs get the local path: its GCS driver needs the network), and Orbax's hierarchical-namespace query to the GCS API
answers "flat bucket". So every file a run writes (metrics, eval rows, TensorBoard, SFT pairs, checkpoints, the reference policy,
exports with config and tokenizer) goes through a URI the code must not make local or absolute; the run trains 2 SFT
steps, then resumes to a GRPO step in `gs://bucket/run`, and nothing may appear in the working directory.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "grpo_hotpot.py"
OVERRIDES = {
    "checkpoint_every": 1, "keep_checkpoints": 2, "sft.steps": 2, "sft.drill_steps": 0, "sft.drill_every": 2,
    "sft.drill_batch_size": 4, "sft.batch_size": 4, "sft.oracle_episodes": 4, "task.synthetic_worlds": 8,
    "task.num_eval_episodes": 1, "eval.num_episodes": 1, "eval.max_new_tokens": 8, "agent.max_steps": 2,
    "grpo.prompts_per_rollout": 1, "grpo.loss.num_generations": 2, "grpo.sampler.max_new_tokens": 8,
    "grpo.microbatch_rows": 8,
}
WORKDIR = "gs://bucket/run"

# Two tiny trainings; `test_storage.py` checks the run's own writers on a gs:// filesystem by default.
pytestmark = pytest.mark.slow


def test_gs_workdir_run_writes_there_and_resumes(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  result = subprocess.run([sys.executable, __file__, str(tmp_path / "bucket_root")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]
  files = json.loads(result.stdout.strip().splitlines()[-1])
  listing, metrics, evals = files["listing"], files["metrics"], files["eval"]
  assert [row["step"] for row in metrics] == [1, 2, 3]  # resumed at 2: every step once
  assert [row["phase"] for row in metrics] == ["recite", "sft", "grpo"]
  assert {row["label"] for row in evals} == {"start", "after_sft", "final"}
  for name in ("metrics.jsonl", "eval.jsonl", "sft_pairs.jsonl", "params/qwen3_config.json",
               "params/tokenizer.json", "params_sft/qwen3_config.json", "checkpoints/3/meta/metadata",
               "reference/_CHECKPOINT_METADATA"):
    assert f"{WORKDIR}/{name}" in listing, name
  assert any(path.startswith(f"{WORKDIR}/tensorboard/events.out.tfevents") for path in listing)
  assert files["restored_layers"] > 0
  assert sorted(os.listdir(tmp_path)) == ["bucket_root"]  # no `gs:` directory made in the working directory


def _serve_gs_from(root: str):
  import fsspec
  from fsspec.implementations.local import LocalFileSystem
  from orbax.checkpoint._src.path import gcs_utils
  from orbax.checkpoint._src.serialization import tensorstore_utils as ts_utils

  class GsOnDisk(LocalFileSystem):
    protocol = ("gs", "gcs")

    @classmethod
    def _strip_protocol(cls, path):
      path = str(path)
      for prefix in ("gs://", "gcs://"):
        if path.startswith(prefix):
          path = os.path.join(root, path[len(prefix):])
      return LocalFileSystem._strip_protocol(path)

    def glob(self, path, **kwargs):  # epath puts "gs://" before each match: bucket/path, as GCS answers
      return [os.path.relpath(p, root) for p in super().glob(path, **kwargs)]

  for name in GsOnDisk.protocol:
    fsspec.register_implementation(name, GsOnDisk, clobber=True)
  on_disk = lambda path: os.path.join(root, str(path)[len("gs://"):]) if str(path).startswith("gs://") else path
  build_kvstore_tspec = ts_utils.build_kvstore_tspec
  ts_utils.build_kvstore_tspec = lambda directory, *args, **kwargs: build_kvstore_tspec(on_disk(directory), *args,
                                                                                         **kwargs)
  gcs_utils.is_hierarchical_namespace_enabled = lambda path: False


def _config(total_steps: int):
  from atommem_jax import configlib
  from atommem_jax.train.config import TrainConfig
  config = configlib.load_config_file(str(EXPERIMENT)).get_config("tiny")
  config.total_steps = total_steps
  for key, value in OVERRIDES.items():
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return configlib.from_dict(TrainConfig, config)


if __name__ == "__main__":
  _serve_gs_from(sys.argv[1])
  from etils import epath
  from atommem_jax.checkpoint import orbax_params
  from atommem_jax.train import loop
  loop.train_and_evaluate(_config(2), WORKDIR)
  loop.train_and_evaluate(_config(3), WORKDIR)  # resumes from step 2's checkpoint
  _, model = orbax_params.restore_params(f"{WORKDIR}/params")
  read = lambda name: [json.loads(line) for line in epath.Path(f"{WORKDIR}/{name}").read_text().splitlines()]
  listing = [os.path.relpath(os.path.join(d, f), sys.argv[1]) for d, _, fs in os.walk(sys.argv[1]) for f in fs]
  print(json.dumps({"listing": sorted("gs://" + p for p in listing),
                    "metrics": read("metrics.jsonl"), "eval": read("eval.jsonl"),
                    "restored_layers": int(model.config.num_layers)}))
