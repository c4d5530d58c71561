"""Per-step metrics to `metrics.jsonl` and TensorBoard, consistent with the checkpoint a run resumes from, fetched
one step late (`DeferredMetrics`).

Both JSON-lines files (`metrics.jsonl`: one row per step; `eval.jsonl`: one row per evaluation and size) are
`jsonl_log.ResumedLog`s: on resume from step s a damaged line is reported and set aside in `<file>.damaged`, a row
up to s that the file lost is put back from the checkpoint (`history()` is saved with every checkpoint), and the rows
past s that the interrupted run wrote stay until this run writes them again. TensorBoard events past s are purged.
So a resumed run's files hold each step exactly once and lose none.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Mapping

import jax

from atommem_jax import jsonl_log, storage

METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.jsonl"


def _jsonable(value: Any) -> Any:
  value = float(value) if hasattr(value, "__float__") and not isinstance(value, (int, bool)) else value
  if isinstance(value, float) and not math.isfinite(value):
    return None  # JSON has no NaN / inf
  return value


def _eval_key(row: Mapping[str, Any]) -> tuple[Any, Any]:
  return row.get("label"), row.get("num_docs")


class MetricsLog:
  """Appends one JSON object per step; only process 0 writes (every process keeps the rows, to agree on them).

  `history` is what a checkpoint saved (`history()` at that step), or None for a checkpoint that saved none.
  """

  def __init__(self, workdir: str | os.PathLike, resume_step: int, *, enabled: bool = True,
               history: Mapping[str, Any] | None = None):
    self.enabled = enabled
    history = history or {}
    workdir = storage.as_path(workdir)  # local, or any URI etils.epath reaches
    self.metrics = jsonl_log.ResumedLog(workdir / METRICS_FILE, lambda row: row["step"], resume_step,
                                        write=enabled, vouched=history.get("metrics"))
    self.evals = jsonl_log.ResumedLog(workdir / EVAL_FILE, _eval_key, resume_step, write=enabled,
                                      vouched=history.get("eval"))
    self.repairs = self.metrics.repairs + self.evals.repairs
    self._writer = None
    if enabled:
      self._writer = storage.summary_writer(workdir / "tensorboard", purge_step=resume_step + 1)

  def history(self) -> dict[str, list[dict[str, Any]]]:
    """Every row logged so far: what a checkpoint saves so that a resume can put back a row the files lost."""
    return {"metrics": self.metrics.rows, "eval": self.evals.rows}

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    row = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
    self.metrics.append([row])
    if not self.enabled:
      return
    for key, value in row.items():
      if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
        self._writer.add_scalar(key, value, step)

  def has_eval(self, label: str) -> bool:
    return any(row.get("label") == label for row in self.evals.rows)

  def write_eval(self, step: int, label: str, metrics: Mapping[int, Mapping[str, Any]]) -> None:
    """One row per size evaluated (`metrics` keyed by documents per episode), appended together."""
    rows = [{"step": step, "label": label, "num_docs": num_docs, **{k: _jsonable(v) for k, v in size.items()}}
            for num_docs, size in metrics.items()]
    self.evals.append(rows)
    if not self.enabled:
      return
    for row in rows:
      for key, value in row.items():
        if isinstance(value, float):
          self._writer.add_scalar(f"eval/{key}_{row['num_docs']}docs", value, step)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


class NonFiniteLossError(RuntimeError):
  """Too many consecutive updates were skipped for a non-finite loss; the last good checkpoint is kept."""


class DeferredMetrics:
  """Step t's metrics are fetched from the device only once step t + 1 is dispatched (`push`), so the host never
  waits for the device between steps; then they are logged with the wall-clock rates and printed."""

  def __init__(self, log: MetricsLog, *, total_steps: int, log_every: int, max_nonfinite_streak: int,
               echo: bool):
    self.log, self.total_steps, self.log_every = log, total_steps, log_every
    self.max_nonfinite_streak, self.echo = max_nonfinite_streak, echo
    self.pending: tuple[int, Any, dict[str, Any]] | None = None
    self.last_flush = time.time()

  def push(self, done_step: int, device_metrics: Any, extras: dict[str, Any]) -> None:
    self.flush()
    self.pending = (done_step, device_metrics, extras)

  def flush(self) -> None:
    """Logs the pending step; a streak of `max_nonfinite_streak` skipped updates raises `NonFiniteLossError`."""
    if self.pending is None:
      return
    done_step, device_metrics, extras = self.pending
    self.pending = None
    metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    metrics.update(extras)
    now = time.time()
    metrics["step_time_s"] = now - self.last_flush  # wall time since the previous step's metrics arrived
    self.last_flush = now
    metrics["tokens_per_s"] = metrics["num_tokens"] / max(metrics["step_time_s"], 1e-9)
    metrics["eta_s"] = metrics["step_time_s"] * (self.total_steps - done_step)
    self.log.write(done_step, metrics)
    if self.echo and (done_step % self.log_every == 0 or done_step == self.total_steps):
      reward = metrics.get("reward_mean")
      print(f"step {done_step}/{self.total_steps} [{metrics['phase']}] loss {metrics['loss']:.4f}"
            + (f" reward {reward:.3f} em {metrics['em']:.3f} kl {metrics['kl']:.4f}" if reward is not None else
               f" acc {metrics.get('token_accuracy', 0.0):.3f}")
            + f" | {metrics['tokens_per_s']:.0f} tok/s, ETA {metrics['eta_s'] / 60:.1f} min", flush=True)
    if metrics["nonfinite_streak"] >= self.max_nonfinite_streak:
      raise NonFiniteLossError(f"{int(metrics['nonfinite_streak'])} non-finite updates in a row at step "
                               f"{done_step}")
