"""Per-step metrics to `metrics.jsonl` and TensorBoard, consistent with the checkpoint a run resumes from.

On resume from step s, rows with `step > s` (written after the checkpoint by the interrupted run) are dropped, and
TensorBoard events past s are purged, so a resumed run's files hold each step exactly once.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

from etils import epath

from atommem_jax import atomic_files, storage

METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.jsonl"


def _read_rows(path: epath.Path) -> list[dict[str, Any]]:
  if not path.exists():
    return []
  rows = []
  with path.open(encoding="utf-8") as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        break  # a line cut by a kill: it and anything after it are dropped
  return rows


def _rewrite(path: epath.Path, rows: list[dict[str, Any]]) -> None:
  atomic_files.write_jsonl(path, rows)


def _jsonable(value: Any) -> Any:
  value = float(value) if hasattr(value, "__float__") and not isinstance(value, (int, bool)) else value
  if isinstance(value, float) and not math.isfinite(value):
    return None  # JSON has no NaN / inf
  return value


class MetricsLog:
  """Appends one JSON object per step; only process 0 writes. On an object store (no appends) the file is rewritten
  whole at each step."""

  def __init__(self, workdir: str | os.PathLike, resume_step: int, *, enabled: bool = True):
    self.enabled = enabled
    workdir = storage.as_path(workdir)
    self.path = workdir / METRICS_FILE
    self.eval_path = workdir / EVAL_FILE
    self.eval_rows = [r for r in _read_rows(self.eval_path) if r["step"] <= resume_step]
    self.rows: list[dict[str, Any]] = []
    self._file = None
    self._writer = None
    if not enabled:
      return
    self.rows = [r for r in _read_rows(self.path) if r["step"] <= resume_step]
    _rewrite(self.path, self.rows)
    _rewrite(self.eval_path, self.eval_rows)
    if storage.is_local(self.path):
      self._file = self.path.open("a", encoding="utf-8")
    self._writer = storage.summary_writer(workdir / "tensorboard", purge_step=resume_step + 1)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
    self.rows.append(row)
    if self._file is None:
      _rewrite(self.path, self.rows)
    else:
      self._file.write(json.dumps(row) + "\n")
      self._file.flush()
    for key, value in row.items():
      if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
        self._writer.add_scalar(key, value, step)

  def has_eval(self, label: str) -> bool:
    return any(r["label"] == label for r in self.eval_rows)

  def write_eval(self, step: int, label: str, metrics: Mapping[int, Mapping[str, Any]]) -> None:
    """One row per size evaluated (`metrics` keyed by documents per episode), appended together."""
    rows = [{"step": step, "label": label, "num_docs": num_docs, **{k: _jsonable(v) for k, v in size.items()}}
            for num_docs, size in metrics.items()]
    self.eval_rows += rows
    if not self.enabled:
      return
    if storage.is_local(self.eval_path):
      with self.eval_path.open("a", encoding="utf-8") as f:
        f.write("".join(json.dumps(row) + "\n" for row in rows))
    else:
      _rewrite(self.eval_path, self.eval_rows)
    for row in rows:
      for key, value in row.items():
        if isinstance(value, float):
          self._writer.add_scalar(f"eval/{key}_{row['num_docs']}docs", value, step)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    if self._writer is not None:
      self._writer.close()
