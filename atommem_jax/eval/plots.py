"""Figures from a run's `metrics.jsonl` and from evaluation results, as PNG files (matplotlib, no display needed).

Training curves: reward, EM, loss, every `op_rate/*` key (and `tool_rate/*` in web runs), mean storage size; and
the paper's training-dynamics figure: the frequency of Read, Create, Update and Delete over optimizer steps.
Evaluation: EM against the number of documents, one line per (method, dataset).

Figures are built on `matplotlib.figure.Figure` directly (never pyplot), so there is no global figure state and no GUI
backend; each PNG is written to a temporary name and renamed, so a failed plot leaves no half-written file.
"""
from __future__ import annotations

import dataclasses
import io
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import matplotlib
from absl import logging

matplotlib.use("Agg")
from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

from etils import epath  # pylint: disable=g-import-not-at-top

from atommem_jax import jsonl_log, op_table, storage  # pylint: disable=g-import-not-at-top

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OP_RATE_PREFIX = "op_rate/"
TOOL_RATE_PREFIX = "tool_rate/"  # environments with tools: the calls that ran per turn, by tool name
EVAL_FILE = "eval.jsonl"  # the trainer's held-out evaluations, one row per evaluation (step, label, em, ...)
# The paper's training-dynamics figure: atomic storage operations in this order, with these names.
DYNAMICS_OPS = tuple((spec.metric, spec.figure_label) for spec in op_table.OPS if spec.figure_label)


class MetricsError(ValueError):
  """A metrics file that is missing, empty, malformed, or holds nothing to plot."""


@dataclasses.dataclass(frozen=True)
class CurveSpec:
  """One PNG: the metric keys drawn as lines on shared axes."""

  filename: str
  title: str
  ylabel: str
  keys: tuple[str, ...]
  band_key: str | None = None  # drawn as +-1 band around keys[0] (e.g. reward std)


TRAINING_CURVES = (
    CurveSpec("reward.png", "Reward (boxed EM, mean over the batch)", "reward", ("reward_mean",), "reward_std"),
    CurveSpec("em.png", "Exact match (training rollouts; markers: held-out greedy)", "EM", ("em",)),
    CurveSpec("loss.png", "Loss", "loss", ("loss",)),
    CurveSpec("storage.png", "Storage size (entries at episode end, mean over trajectories)", "entries",
              ("storage_size_mean",)),
)


# Every file `write_training_plots` may write.
TRAINING_FIGURES = tuple(spec.filename for spec in TRAINING_CURVES) + ("op_rates.png", "training_dynamics.png")


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """Rows of a JSONL metrics file, sorted by `step`; a step logged twice keeps its last row (evaluation rows: per
  `num_docs`, one row per size). A damaged line is reported (file and line) and skipped, never the rows after it."""
  if not epath.Path(path).is_file():
    raise MetricsError(f"{path}: file does not exist")
  lines, damaged, _ = jsonl_log.read(path, jsonl_log.has_step)
  for line in damaged:
    logging.warning("%s; skipped", line.describe())
  by_key: dict[tuple[int, int], dict[str, Any]] = {}
  for line in lines:
    by_key[(line.row["step"], line.row.get("num_docs") or 0)] = line.row
  if not by_key and damaged:
    raise MetricsError(f"metrics file {path} holds no valid row: {damaged[0].describe()}"
                       + (f" (and {len(damaged) - 1} more damaged lines)" if len(damaged) > 1 else ""))
  if not by_key:
    raise MetricsError(f"metrics file {path} is empty: no optimizer step has been logged yet")
  return [by_key[key] for key in sorted(by_key)]


def series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
  """(steps, values) of one metric over the rows that hold a finite number for it."""
  steps, values = [], []
  for row in rows:
    value = row.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
      steps.append(row["step"])
      values.append(float(value))
  return steps, values


def smooth(values: Sequence[float], weight: float) -> list[float]:
  """TensorBoard-style exponential moving average, debiased so the first points are not pulled towards 0."""
  if not 0.0 <= weight < 1.0:
    raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
  out, average = [], 0.0
  for i, value in enumerate(values, start=1):
    average = weight * average + (1.0 - weight) * value
    out.append(average / (1.0 - weight**i) if weight else value)
  return out


def save_png(fig: Figure, path: epath.Path) -> epath.Path:
  if not storage.is_local(path):  # an object store: one write, the object appears whole or not at all
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    path.write_bytes(buffer.getvalue())
    return path
  tmp = path.with_name(f".{path.name}.tmp")
  try:
    fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)
  return path


def _line_figure(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Any]:
  fig = Figure(figsize=(6.4, 4.0))
  ax = fig.add_subplot()
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  return fig, ax


# SFT drill steps (`sft.drill`) interleave with the oracle's steps; they are marked as part of SFT.
SFT_DRILL_PHASES = ("copy", "recite")


def phase_starts(rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]]:
  """(first step, phase) wherever the `phase` key (e.g. sft -> grpo) changes; drill steps count as sft."""
  starts, previous = [], None
  for row in rows:
    phase = row.get("phase")
    phase = "sft" if phase in SFT_DRILL_PHASES else phase
    if phase is not None and phase != previous:
      starts.append((row["step"], str(phase)))
      previous = phase
  return starts


def _mark_phases(ax: Any, rows: Sequence[Mapping[str, Any]]) -> None:
  starts = phase_starts(rows)
  if len(starts) < 2:
    return
  for step, phase in starts[1:]:
    ax.axvline(step - 0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.annotate(phase, (step - 0.5, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                textcoords="offset points", fontsize="small", color="grey")


def plot_curve(rows: Sequence[Mapping[str, Any]], spec: CurveSpec, out_dir: epath.Path,
               smoothing: float = 0.0, points: Sequence[Mapping[str, Any]] = (),
               points_label: str = "") -> epath.Path | None:
  """Writes `spec` as a PNG, or returns None when no row holds any of its keys.

  `points` (e.g. held-out evaluations) are drawn as markers for the first key, unsmoothed, one series per
  `num_docs` when the rows carry several.
  """
  drawn = [(key, *series(rows, key)) for key in spec.keys]
  drawn = [(key, steps, values) for key, steps, values in drawn if steps]
  sizes = sorted({p.get("num_docs") for p in points}, key=lambda n: (n is None, n))
  point_sets = [(n, *series([p for p in points if p.get("num_docs") == n], spec.keys[0])) for n in sizes]
  point_sets = [(n, steps, values) for n, steps, values in point_sets if steps]
  if not drawn and not point_sets:
    return None
  fig, ax = _line_figure(spec.title, "step", spec.ylabel)
  _mark_phases(ax, rows)
  for i, (n, steps, values) in enumerate(point_sets):
    marker = "*Ds^v"[i % 5]
    label = points_label or f"{spec.keys[0]} (eval)"
    ax.plot(steps, values, "k" + marker, markersize=9 if marker == "*" else 6,
            label=label + (f", {n} docs" if len(point_sets) > 1 else ""))
  for key, steps, values in drawn:
    ax.plot(steps, smooth(values, smoothing), label=key, linewidth=1.5)
  if spec.band_key and drawn:  # an SFT-only run has evaluation points but no rollout curve to put a band on
    key, steps, values = drawn[0]
    band_steps, band = series(rows, spec.band_key)
    if band_steps == steps:
      values, band = smooth(values, smoothing), smooth(band, smoothing)
      ax.fill_between(steps, [v - b for v, b in zip(values, band)], [v + b for v, b in zip(values, band)],
                      alpha=0.2, label=f"± {spec.band_key}")
  ax.legend(loc="best", fontsize="small")
  return save_png(fig, out_dir / spec.filename)


def plot_op_rates(rows: Sequence[Mapping[str, Any]], out_dir: epath.Path, smoothing: float = 0.0):
  keys = sorted({key for row in rows for key in row if key.startswith(OP_RATE_PREFIX)})
  keys += ["invalid_op_rate"] if any("invalid_op_rate" in row for row in rows) else []
  spec = CurveSpec("op_rates.png", "Memory operations per turn", "ops per turn", tuple(keys))
  return plot_curve(rows, spec, out_dir, smoothing) if keys else None


def plot_tool_rates(rows: Sequence[Mapping[str, Any]], out_dir: epath.Path, smoothing: float = 0.0):
  keys = sorted({key for row in rows for key in row if key.startswith(TOOL_RATE_PREFIX)})
  spec = CurveSpec("tool_rates.png", "Tool calls per turn", "calls per turn", tuple(keys))
  return plot_curve(rows, spec, out_dir, smoothing) if keys else None


def plot_training_dynamics(rows: Sequence[Mapping[str, Any]], out_dir: epath.Path,
                           smoothing: float = 0.0) -> epath.Path | None:
  """The paper's figure: how often the policy Reads, Creates, Updates and Deletes as training goes on."""
  drawn = [(label, *series(rows, OP_RATE_PREFIX + op)) for op, label in DYNAMICS_OPS]
  if not any(steps for _, steps, _ in drawn):
    return None
  fig, ax = _line_figure("Training dynamics: memory-operation frequency", "training step", "frequency (per turn)")
  _mark_phases(ax, rows)
  for (label, steps, values), marker in zip(drawn, "osD^"):
    if steps:
      ax.plot(steps, smooth(values, smoothing), label=label, marker=marker, markevery=max(1, len(steps) // 12),
              markersize=4, linewidth=1.5)
  ax.legend(loc="best")
  return save_png(fig, out_dir / "training_dynamics.png")


def write_training_plots(metrics_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                         smoothing: float = 0.0, eval_path: str | os.PathLike[str] | None = None
                         ) -> list[epath.Path]:
  """Every training figure the metrics support; an error if the file holds nothing plottable.

  `eval_path` (default: `eval.jsonl` beside the metrics, if present) holds the run's held-out greedy evaluations,
  drawn as markers on the reward and EM curves.
  """
  rows = read_metrics(metrics_path)
  smooth([], smoothing)  # validates the weight before anything is written
  eval_path = epath.Path(metrics_path).with_name(EVAL_FILE) if eval_path is None else epath.Path(eval_path)
  evaluations = read_metrics(eval_path) if eval_path.is_file() and eval_path.read_text().strip() else []
  out_dir = epath.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  written = [plot_curve(rows, spec, out_dir, smoothing, points=evaluations, points_label="held-out (greedy)")
             if spec.filename in ("reward.png", "em.png") else plot_curve(rows, spec, out_dir, smoothing)
             for spec in TRAINING_CURVES]
  written += [plot_op_rates(rows, out_dir, smoothing), plot_tool_rates(rows, out_dir, smoothing),
              plot_training_dynamics(rows, out_dir, smoothing)]
  written = [path for path in written if path is not None]
  if not written:
    known = sorted({key for row in rows for key in row})
    raise MetricsError(f"{metrics_path}: no plottable metric (looked for reward_mean, em, loss, op_rate/*); "
                       f"the rows hold {known}")
  return written


def plot_em_vs_documents(summary_rows: Iterable[Mapping[str, Any]], out_dir: str | os.PathLike[str],
                         metric: str = "em") -> epath.Path:
  """`metric` against the number of documents, one line per (variant, dataset); rows as in results.json."""
  lines: dict[tuple[str, str], list[tuple[int, float]]] = {}
  for row in summary_rows:
    lines.setdefault((row["variant"], row["dataset"]), []).append((int(row["num_docs"]), float(row[metric])))
  if not lines:
    raise MetricsError("no evaluation rows to plot")
  fig, ax = _line_figure(f"{metric.upper()} vs number of documents", "documents in context", metric.upper())
  ax.set_xscale("log", base=2)
  for (variant, dataset), points in sorted(lines.items()):
    points.sort()
    ax.plot([n for n, _ in points], [v for _, v in points], marker="o", label=f"{variant} / {dataset}")
  ax.legend(loc="best", fontsize="small")
  out_dir = epath.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  return save_png(fig, out_dir / f"{metric}_vs_documents.png")
