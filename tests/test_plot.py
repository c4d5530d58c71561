"""Plots: PNGs written from a metrics.jsonl the test writes; a missing, empty or malformed file is a clear error."""
import json
import math
import pathlib
import subprocess
import sys

import pytest
from matplotlib import image as mpimg

from atommem_jax.eval import plots

REPO = pathlib.Path(__file__).resolve().parent.parent


def write_metrics(path: pathlib.Path, steps: int = 30, sft_steps: int = 5) -> pathlib.Path:
  """Rows shaped like the trainer's: SFT steps (loss only, reward null), then GRPO steps with rollout metrics."""
  with path.open("w") as f:
    for step in range(1, sft_steps + 1):
      f.write(json.dumps({"step": step, "phase": "sft", "loss": 2.0 - 0.1 * step, "reward_mean": None}) + "\n")
    for step in range(sft_steps + 1, steps + 1):
      t = step / steps
      f.write(json.dumps({
          "step": step, "phase": "grpo", "loss": 1.0 - 0.5 * t, "reward_mean": 0.2 + 0.6 * t, "reward_std": 0.1,
          "em": 0.1 + 0.7 * t, "op_rate/create": 1.0 - 0.3 * t, "op_rate/update": 0.1 + 0.4 * t,
          "op_rate/delete": 0.05 * t, "op_rate/read": 0.5 + 0.2 * math.sin(step), "op_rate/scratchpad": 1.0,
          "op_rate/answer": 0.2, "invalid_op_rate": 0.1 * (1 - t), "storage_size_mean": 3.0 + t,
      }) + "\n")
  with path.with_name("eval.jsonl").open("w") as f:
    for step, label, em in ((0, "start", 0.0), (sft_steps, "after_sft", 0.4), (steps, "final", 0.6)):
      for num_docs in (4, 8):  # one row per size the run evaluates
        f.write(json.dumps({"step": step, "label": label, "num_docs": num_docs, "em": em / (num_docs // 4),
                            "reward_mean": em}) + "\n")
  return path


def assert_png(path: pathlib.Path) -> None:
  assert path.read_bytes()[:8] == plots.PNG_SIGNATURE
  pixels = mpimg.imread(path)
  assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
  assert pixels.std() > 0.01  # something was drawn, not a blank canvas


def test_cli_writes_every_curve_and_the_training_dynamics_figure(tmp_path):
  write_metrics(tmp_path / "metrics.jsonl")
  evaluations = plots.read_metrics(tmp_path / "eval.jsonl")  # a step's rows at 4 and 8 documents both kept
  assert [(row["step"], row["num_docs"]) for row in evaluations] == [(s, n) for s in (0, 5, 30) for n in (4, 8)]
  result = subprocess.run([sys.executable, "-m", "atommem_jax.plot", "--workdir", str(tmp_path), "--smoothing", "0.5"],
                          capture_output=True, text=True, cwd=REPO, check=True)
  names = {"reward.png", "em.png", "loss.png", "storage.png", "op_rates.png", "training_dynamics.png"}
  assert {pathlib.Path(line).name for line in result.stdout.split()} == names
  assert {p.name for p in (tmp_path / "plots").iterdir()} == names  # no temporary files left behind
  for name in names:
    assert_png(tmp_path / "plots" / name)


def test_a_web_run_also_gets_its_tool_calls_per_turn(tmp_path):
  rows = [json.loads(line) for line in write_metrics(tmp_path / "metrics.jsonl").read_text().splitlines()]
  for row in rows[5:]:
    row.update({"tool_rate/search": 0.4, "tool_rate/fetch_url": 0.3, "tool_rate/all": 0.7})
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
  written = plots.write_training_plots(tmp_path / "metrics.jsonl", tmp_path / "plots")
  assert "tool_rates.png" in {p.name for p in written}
  assert_png(tmp_path / "plots" / "tool_rates.png")


def test_cli_missing_and_empty_metrics_are_clear_errors(tmp_path):
  for content in (None, "", "\n\n"):
    metrics = tmp_path / "metrics.jsonl"
    if content is not None:
      metrics.write_text(content)
    result = subprocess.run([sys.executable, "-m", "atommem_jax.plot", "--workdir", str(tmp_path)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0
    expected = f"{metrics}: file does not exist" if content is None else f"metrics file {metrics} is empty"
    assert f"error: {expected}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "plots").exists()


def test_malformed_row_names_file_and_line_and_costs_no_other_row(tmp_path, caplog):
  metrics = write_metrics(tmp_path / "metrics.jsonl", steps=3, sft_steps=0)
  lines = metrics.read_text().splitlines(keepends=True)
  metrics.write_text(lines[0] + '{"step": 2, "loss": 0.1\n' + "".join(lines[2:]))
  # A damaged line is reported and skipped (it used to stop the plot altogether).
  assert [row["step"] for row in plots.read_metrics(metrics)] == [1, 3]
  assert "metrics.jsonl: line 2: not valid JSON" in caplog.text
  metrics.write_text('{"loss": 0.1}\n')
  with pytest.raises(plots.MetricsError, match=r"metrics.jsonl holds no valid row: .*line 1: no integer 'step'"):
    plots.read_metrics(metrics)


def test_nothing_plottable_is_an_error_and_bad_smoothing_writes_nothing(tmp_path):
  metrics = tmp_path / "metrics.jsonl"
  metrics.write_text('{"step": 1, "unrelated": 3}\n')
  with pytest.raises(plots.MetricsError, match="no plottable metric"):
    plots.write_training_plots(metrics, tmp_path / "out")
  write_metrics(metrics, steps=3)
  with pytest.raises(ValueError, match="smoothing weight"):
    plots.write_training_plots(metrics, tmp_path / "out2", smoothing=1.0)
  assert not (tmp_path / "out2").exists()


def test_resumed_run_duplicate_steps_keep_last_row_in_step_order(tmp_path):
  metrics = tmp_path / "metrics.jsonl"
  metrics.write_text("\n".join(json.dumps(r) for r in (
      {"step": 2, "loss": 9.0}, {"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0}, {"step": 3, "loss": float("nan")},
  )) + "\n")
  rows = plots.read_metrics(metrics)
  assert [r["step"] for r in rows] == [1, 2, 3]
  assert plots.series(rows, "loss") == ([1, 2], [1.0, 2.0])  # non-finite values are not drawn


def test_smoothing_is_debiased_ema():
  assert plots.smooth([1.0, 1.0, 1.0], 0.9) == pytest.approx([1.0, 1.0, 1.0])
  assert plots.smooth([0.0, 2.0], 0.5) == pytest.approx([0.0, (0.5 * 0.0 * 0.5 + 0.5 * 2.0) / 0.75])
  assert plots.smooth([3.0, 5.0], 0.0) == [3.0, 5.0]


def test_sft_only_run_plots_loss_and_held_out_points(tmp_path):
  # Before GRPO starts there are no rollout metrics, only losses and the trainer's evaluations.
  metrics = write_metrics(tmp_path / "metrics.jsonl", steps=5, sft_steps=5)
  names = {path.name for path in plots.write_training_plots(metrics, tmp_path / "plots")}
  assert names == {"loss.png", "reward.png", "em.png"}
  for name in names:
    assert_png(tmp_path / "plots" / name)


def test_phase_boundaries_follow_the_phase_key(tmp_path):
  rows = plots.read_metrics(write_metrics(tmp_path / "metrics.jsonl", steps=8, sft_steps=3))
  assert plots.phase_starts(rows) == [(1, "sft"), (4, "grpo")]
  assert plots.series(rows, "reward_mean")[0] == [4, 5, 6, 7, 8]  # null SFT rewards are not drawn
  interleaved = [{"step": s, "phase": p} for s, p in enumerate(["recite", "recite", "sft", "recite", "sft", "grpo"], 1)]
  assert plots.phase_starts(interleaved) == [(1, "sft"), (6, "grpo")]  # drill steps are part of SFT


def test_em_vs_documents_plot(tmp_path):
  rows = [{"variant": v, "dataset": "synthetic", "num_docs": n, "em": e}
          for v, scale in (("atommem", 1.0), ("memagent", 0.7)) for n, e in ((8, 0.9), (16, 0.8), (32, 0.6))
          for e in (e * scale,)]
  assert_png(plots.plot_em_vs_documents(rows, tmp_path))
  with pytest.raises(plots.MetricsError, match="no evaluation rows"):
    plots.plot_em_vs_documents([], tmp_path)
