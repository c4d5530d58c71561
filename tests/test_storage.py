"""Workdir files on a non-local filesystem: `gs://` served by fsspec's in-memory filesystem through etils.epath.

Metrics (appends become whole-file rewrites), eval rows, TensorBoard events, the resume cut, JSONL writes and reads,
plots and an export's tokenizer files all land in the bucket, and nothing is made local or absolute.
"""
import json

import pytest

from atommem_jax import atomic_files, storage
from atommem_jax.checkpoint.tokenizer_files import copy_tokenizer_files
from atommem_jax.data.tokenizer import tiny_tokenizer_dir
from atommem_jax.eval import plots
from atommem_jax.train.metrics_log import MetricsLog


@pytest.fixture
def bucket(gs_bucket, monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  yield gs_bucket
  assert not list(tmp_path.iterdir())  # nothing written locally (no `gs:` directory)


def test_as_path_keeps_uris_and_makes_local_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert str(storage.as_path("gs://bucket/run")) == "gs://bucket/run"
  assert str(storage.as_path("gs://bucket/run") / "checkpoints") == "gs://bucket/run/checkpoints"
  assert str(storage.as_path("run")) == str(tmp_path / "run")


def test_metrics_eval_and_tensorboard_in_a_bucket_and_resume(bucket):
  log = MetricsLog(bucket, 0)
  for step in (1, 2, 3):
    log.write(step, {"loss": 1.0 / step, "phase": "sft"})
  log.write_eval(3, "final", {4: {"em": 0.5}})
  log.close()
  rows = [json.loads(line) for line in (bucket / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 0.5), (3, 1.0 / 3)]
  assert json.loads((bucket / "eval.jsonl").read_text())["em"] == 0.5
  events = list((bucket / "tensorboard").iterdir())
  assert len(events) == 1 and events[0].name.startswith("events.out.tfevents") and events[0].read_bytes()
  # A run resumed from step 2's checkpoint replaces what the interrupted run logged after it as it re-derives it;
  # a damaged line is set aside beside the file (an object rewritten whole: object stores cannot append).
  (bucket / "metrics.jsonl").write_text((bucket / "metrics.jsonl").read_text() + '{"step": 4, "lo\n')
  log = MetricsLog(bucket, 2)
  assert len(log.repairs) == 1 and "line 4" in log.repairs[0]
  log.write(3, {"loss": 9.0, "phase": "sft"})
  rows = [json.loads(line) for line in (bucket / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 0.5), (3, 9.0)]
  assert json.loads((bucket / "eval.jsonl").read_text())["em"] == 0.5  # not re-derived yet: kept
  log.write_eval(3, "final", {4: {"em": 0.75}})
  log.close()
  assert [json.loads(line)["em"] for line in (bucket / "eval.jsonl").read_text().splitlines()] == [0.75]
  damaged = [json.loads(line) for line in (bucket / "metrics.jsonl.damaged").read_text().splitlines()]
  assert [(d["line"], d["text"]) for d in damaged] == [(4, '{"step": 4, "lo')]


def test_jsonl_plots_and_tokenizer_files_in_a_bucket(bucket):
  atomic_files.write_jsonl(bucket / "rows.jsonl", [{"step": 1, "loss": 2.0, "em": 0.1}, {"step": 2, "loss": 1.0,
                                                                                         "em": 0.2}])
  assert [row for _, row in atomic_files.read_jsonl(bucket / "rows.jsonl")][1]["loss"] == 1.0
  with pytest.raises(ValueError, match="gs://test-bucket/run/missing.jsonl: file does not exist"):
    list(atomic_files.read_jsonl(bucket / "missing.jsonl"))
  written = plots.write_training_plots(bucket / "rows.jsonl", bucket / "plots")
  assert written and all(str(p).startswith("gs://test-bucket/run/plots/") for p in written)
  assert all(p.read_bytes().startswith(plots.PNG_SIGNATURE) for p in written)
  copied = copy_tokenizer_files(tiny_tokenizer_dir(), bucket / "params")
  assert copied and all((bucket / "params" / name).exists() for name in copied)
