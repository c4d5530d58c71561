"""Evaluate a checkpoint: greedy episodes over datasets x document counts x variants, with tables.

  python -m atommem_jax.evaluate --config experiments/eval_hotpot.py:tiny --config.checkpoint=DIR --workdir OUT

Writes OUT/trajectories.jsonl, OUT/results.json and OUT/results.md (see `atommem_jax.eval.runner`). Multi-host runs
(every host runs the same command) add `--distributed`, so `jax.distributed.initialize()` joins the hosts before any
device is touched; process 0 writes the files.
"""
from __future__ import annotations

from typing import Sequence

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment file[:arg] with get_config(arg)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory", required=True)
_PROGRESS = flags.DEFINE_bool("progress", True, "show a progress bar per (variant, dataset, N)")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "join a multi-process run with jax.distributed.initialize() "
                                 "(coordinator and process ids from the environment)")

flags.mark_flags_as_required(["config"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _DISTRIBUTED.value:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize()

  from atommem_jax import configlib  # pylint: disable=g-import-not-at-top
  from atommem_jax.checkpoint import CheckpointError  # pylint: disable=g-import-not-at-top
  from atommem_jax.data.records import DataFormatError  # pylint: disable=g-import-not-at-top
  from atommem_jax.eval import config as eval_config  # pylint: disable=g-import-not-at-top
  from atommem_jax.eval import runner  # pylint: disable=g-import-not-at-top

  try:
    config = eval_config.eval_config_from_dict(_CONFIG.value)
    paths = runner.evaluate(config, _WORKDIR.value, progress=_PROGRESS.value)
  except (configlib.ConfigError, runner.EvalError, CheckpointError, DataFormatError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  for path in paths.values():
    print(path)
  if "results.md" in paths:
    print(paths["results.md"].read_text())


if __name__ == "__main__":
  app.run(main)
