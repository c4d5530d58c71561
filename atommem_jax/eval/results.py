"""Episode results -> per-(variant, dataset, N) summary rows -> results.json and the markdown tables of results.md.

Scores are question-level means (an episode that bundles several questions contributes each of them), as the paper
reports them: SQuAD EM / F1 / sub-EM on the boxed answer and the boxed-EM reward. Memory behaviour is per episode:
accepted ops of each type, refused or malformed ops (`invalid`), agent steps, and the storage size at the end.
Web episodes add the tool calls that ran, per tool name (`tools/NAME` per episode), and, with a judge configured,
its pass rate over questions (`judge`).
Wall time per episode and per agent step are kept apart (`timing_rows`, results.json "timing"), so the summary of a
run is the same on every machine.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable, Mapping, Sequence

from etils import epath

from atommem_jax import atomic_files, op_table, storage
from atommem_jax.metrics import scores as scores_lib

SCORE_KEYS = ("em", "f1", "sub_em", "boxed_em")
# Accepted ops of each protocol kind, in the paper's vocabulary; refused or malformed ops are counted as `invalid`.
OP_KEYS = tuple(spec.name for spec in op_table.OPS) + (op_table.INVALID_NAME,)
OP_LABELS = {**{spec.name: spec.metric for spec in op_table.OPS}, op_table.INVALID_NAME: op_table.INVALID_NAME}


@dataclasses.dataclass(frozen=True)
class EpisodeResult:
  """One greedy episode: what was asked, what the agent answered, and how it used its memory."""

  variant: str
  dataset: str
  num_docs: int
  example_id: str
  questions: tuple[str, ...]
  answers: tuple[tuple[str, ...], ...]
  predictions: tuple[str, ...]  # the final-answer text per question ("" when never answered)
  op_counts: Mapping[str, int]  # keys: OP_KEYS
  steps: int
  storage_size: int  # entries in storage when the episode ended
  done: bool  # the environment ended the episode (last question answered or given up, or the step cap)
  seconds: float = 0.0  # wall time of the episode's rollout batch, divided by the episodes in it
  tool_calls: Mapping[str, int] | None = None  # web episodes: the calls that ran, per tool name; None elsewhere
  judge_scores: tuple[float, ...] | None = None  # per question, when an LLM judge graded the answers

  def __post_init__(self):
    if len(self.predictions) != len(self.questions) or len(self.answers) != len(self.questions):
      raise ValueError(f"episode {self.example_id!r}: {len(self.questions)} questions, {len(self.answers)} answer "
                       f"lists, {len(self.predictions)} predictions")
    unknown = sorted(set(self.op_counts) - set(OP_KEYS))
    if unknown:
      raise ValueError(f"episode {self.example_id!r}: unknown op kinds {unknown}; known: {OP_KEYS}")

  def question_scores(self) -> list[scores_lib.AnswerScores]:
    return [scores_lib.score_answer(p, a) for p, a in zip(self.predictions, self.answers)]


def summarize(episodes: Sequence[EpisodeResult]) -> list[dict[str, Any]]:
  """One row per (variant, dataset, num_docs), in first-seen order of the groups."""
  groups: dict[tuple[str, str, int], list[EpisodeResult]] = {}
  for episode in episodes:
    groups.setdefault((episode.variant, episode.dataset, episode.num_docs), []).append(episode)
  rows = []
  for (variant, dataset, num_docs), group in groups.items():
    question_scores = [s for episode in group for s in episode.question_scores()]
    mean = scores_lib.mean_scores(question_scores)
    n = len(group)
    row: dict[str, Any] = {"variant": variant, "dataset": dataset, "num_docs": num_docs, "episodes": n,
                           "questions": len(question_scores)}
    row.update({key: getattr(mean, key) for key in SCORE_KEYS})
    row.update({f"ops/{key}": sum(e.op_counts.get(key, 0) for e in group) / n for key in OP_KEYS})
    row["steps_per_episode"] = sum(e.steps for e in group) / n
    row["storage_size"] = sum(e.storage_size for e in group) / n
    row["answered_fraction"] = sum(p != "" for e in group for p in e.predictions) / len(question_scores)
    row["done_fraction"] = sum(e.done for e in group) / n
    if any(e.tool_calls is not None for e in group):
      names = sorted({name for e in group for name in (e.tool_calls or {})})
      row.update({f"tools/{name}": sum((e.tool_calls or {}).get(name, 0) for e in group) / n for name in names})
      row["tools/all"] = sum(sum((e.tool_calls or {}).values()) for e in group) / n
    if all(e.judge_scores is not None for e in group):
      judged = [score for e in group for score in e.judge_scores]
      row["judge"] = sum(judged) / max(1, len(judged))
    rows.append(row)
  return rows


def timing_rows(episodes: Sequence[EpisodeResult]) -> list[dict[str, Any]]:
  """Per (variant, dataset, num_docs): wall seconds per episode and per agent step (turn), in first-seen order."""
  groups: dict[tuple[str, str, int], list[EpisodeResult]] = {}
  for episode in episodes:
    groups.setdefault((episode.variant, episode.dataset, episode.num_docs), []).append(episode)
  return [{"variant": variant, "dataset": dataset, "num_docs": num_docs, "episodes": len(group),
           "seconds_per_episode": sum(e.seconds for e in group) / len(group),
           "seconds_per_step": sum(e.seconds for e in group) / max(1, sum(e.steps for e in group))}
          for (variant, dataset, num_docs), group in groups.items()]


def time_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """Seconds per episode (and per agent step), variants as rows and dataset@N as columns."""
  columns = list(dict.fromkeys((row["dataset"], row["num_docs"]) for row in rows))
  cells = {(row["variant"], row["dataset"], row["num_docs"]): row for row in rows}
  lines = ["| variant | " + " | ".join(_column(d, n) for d, n in columns) + " |", "|---|" + "---:|" * len(columns)]
  for variant in dict.fromkeys(row["variant"] for row in rows):
    values = [cells.get((variant, d, n)) for d, n in columns]
    lines.append(f"| {variant} | " + " | ".join(
        "–" if v is None else f"{v['seconds_per_episode']:.1f} ({v['seconds_per_step']:.3f})" for v in values) + " |")
  return "\n".join(lines)


def _column(dataset: str, num_docs: int) -> str:
  return f"{dataset} @{num_docs}" if num_docs else dataset  # web datasets have no document count


def _cell(value: float, percent: bool) -> str:
  return f"{100 * value:.1f}" if percent else f"{value:.2f}"


def score_table(rows: Sequence[Mapping[str, Any]], metric: str) -> str:
  """Variants as rows, dataset@N as columns: the paper's layout, so baselines and ablations sit side by side."""
  variants = list(dict.fromkeys(row["variant"] for row in rows))
  columns = list(dict.fromkeys((row["dataset"], row["num_docs"]) for row in rows))
  cells = {(row["variant"], row["dataset"], row["num_docs"]): row[metric] for row in rows}
  lines = ["| variant | " + " | ".join(_column(d, n) for d, n in columns) + " |",
           "|---|" + "---:|" * len(columns)]
  for variant in variants:
    values = [cells.get((variant, d, n)) for d, n in columns]
    lines.append(f"| {variant} | " + " | ".join("–" if v is None else _cell(v, True) for v in values) + " |")
  return "\n".join(lines)


def memory_table(rows: Sequence[Mapping[str, Any]]) -> str:
  keys = [f"ops/{key}" for key in OP_KEYS]
  header = ["variant", "dataset", "docs", *(OP_LABELS[k.split("/")[1]] for k in keys), "steps", "storage",
            "answered"]
  lines = ["| " + " | ".join(header) + " |", "|---|---|---:|" + "---:|" * (len(header) - 3)]
  for row in rows:
    values = [_cell(row[k], False) for k in (*keys, "steps_per_episode", "storage_size")]
    lines.append(f"| {row['variant']} | {row['dataset']} | {row['num_docs']} | " + " | ".join(values) +
                 f" | {_cell(row['answered_fraction'], True)}% |")
  return "\n".join(lines)


def tool_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """Tool calls that ran per episode, by tool name, and agent steps, for the rows with tools (web datasets)."""
  rows = [row for row in rows if "tools/all" in row]
  names = sorted({key.split("/", 1)[1] for row in rows for key in row if key.startswith("tools/")} - {"all"})
  header = ["variant", "dataset", *names, "all calls", "steps"]
  lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
  for row in rows:
    values = [_cell(row.get(f"tools/{name}", 0.0), False) for name in names]
    lines.append(f"| {row['variant']} | {row['dataset']} | " + " | ".join(
        values + [_cell(row["tools/all"], False), _cell(row["steps_per_episode"], False)]) + " |")
  return "\n".join(lines)


def markdown_report(rows: Sequence[Mapping[str, Any]], *, checkpoint: str, figures: Sequence[str] = (),
                    timing: Sequence[Mapping[str, Any]] = ()) -> str:
  parts = [f"# Evaluation\n\nCheckpoint: `{checkpoint}`. Greedy decoding; scores in % over questions.\n"]
  for metric, title in (("em", "Exact match (EM)"), ("f1", "F1"), ("sub_em", "Sub-EM"), ("boxed_em", "Boxed EM")):
    parts.append(f"## {title}\n\n{score_table(rows, metric)}\n")
  judged = [row for row in rows if "judge" in row]
  if judged:
    parts.append(f"## LLM judge (pass rate)\n\n{score_table(judged, 'judge')}\n")
  if any("tools/all" in row for row in rows):
    parts.append(f"## Tool calls per episode\n\nCalls that ran (after the step accepted them), by tool, and agent "
                 f"steps.\n\n{tool_table(rows)}\n")
  parts.append("## Memory operations per episode\n\nAccepted ops of each kind (invalid: refused or malformed), agent "
               "steps, storage entries at the end, and the share of questions that got an answer.\n\n"
               f"{memory_table(rows)}\n")
  if timing:
    parts.append("## Time per episode\n\nWall seconds per episode (per agent step in parentheses), each rollout "
                 f"batch's time shared by its episodes.\n\n{time_table(timing)}\n")
  parts += [f"![{figure}]({figure})\n" for figure in figures]
  return "\n".join(parts)


def write_results(out_dir: str | os.PathLike[str], summary: Sequence[Mapping[str, Any]],
                  trajectories: Iterable[Mapping[str, Any]], *, checkpoint: str,
                  config: Mapping[str, Any], figures: Sequence[str] = (),
                  timing: Sequence[Mapping[str, Any]] = ()) -> dict[str, epath.Path]:
  """Writes trajectories.jsonl, results.json and results.md, each atomically (temporary name, then rename).

  `figures` are image files already in `out_dir` that results.md links to; `timing` the rows of `timing_rows`.
  """
  out_dir = storage.as_path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = {name: out_dir / name for name in ("trajectories.jsonl", "results.json", "results.md")}
  atomic_files.write_text(paths["trajectories.jsonl"],
                "".join(json.dumps(t, ensure_ascii=False, sort_keys=True) + "\n" for t in trajectories))
  atomic_files.write_text(paths["results.json"], json.dumps(
      {"checkpoint": checkpoint, "config": config, "summary": list(summary), "timing": list(timing)}, indent=2,
      sort_keys=True) + "\n")
  atomic_files.write_text(paths["results.md"], markdown_report(summary, checkpoint=checkpoint, figures=figures,
                                                               timing=timing))
  return paths
