"""Training curves of a run as PNG files.

  python -m atommem_jax.plot --workdir DIR [--out DIR/plots] [--smoothing 0.6] [--overwrite]

Reads `DIR/metrics.jsonl` (one JSON object per optimizer step, as the trainer writes it) and writes reward, EM, loss,
memory-op rate and storage curves, plus `training_dynamics.png`: Read / Create / Update / Delete frequency over
training steps (the paper's training-dynamics figure). Figures already in the output directory are replaced only with
`--overwrite`; a damaged metrics line is reported (file and line) and skipped.
"""
from __future__ import annotations

from typing import Sequence

from absl import app, flags
from etils import epath

from atommem_jax import cli
from atommem_jax.eval import plots

_WORKDIR = flags.DEFINE_string("workdir", None, "run directory holding metrics.jsonl", required=True)
_OUT = flags.DEFINE_string("out", None, "where the PNGs go (default: WORKDIR/plots)")
_SMOOTHING = flags.DEFINE_float("smoothing", 0.0, "exponential-moving-average weight in [0, 1)")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace figures an earlier plot wrote to the output directory")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  workdir = epath.Path(_WORKDIR.value)  # local, or any URI etils.epath reaches (gs://...)
  out_dir = epath.Path(_OUT.value) if _OUT.value else workdir / "plots"
  if out_dir.exists() and not out_dir.is_dir():
    raise cli.CliError(f"--out {out_dir} is a file, not a directory")
  existing = sorted(name for name in plots.TRAINING_FIGURES if (out_dir / name).exists())
  if existing and not _OVERWRITE.value:
    raise cli.CliError(f"{out_dir} already holds {', '.join(existing)}; pass --overwrite to replace them")
  for path in plots.write_training_plots(workdir / "metrics.jsonl", out_dir, smoothing=_SMOOTHING.value):
    print(path)


if __name__ == "__main__":
  cli.run(main)
