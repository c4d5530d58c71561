"""Evaluate a checkpoint: greedy episodes over datasets x document counts x variants, with tables.

  python -m atommem_jax.evaluate --config experiments/eval_hotpot.py:tiny --config.checkpoint=DIR --workdir OUT

Writes OUT/trajectories.jsonl, OUT/results.json and OUT/results.md (see `atommem_jax.eval.runner`); results already
in OUT are replaced only with `--overwrite`, and OUT is locked while the evaluation runs (`workdir_lock`). Multi-host
runs (every host runs the same command) add `--distributed`, so `jax.distributed.initialize()` joins the hosts before
any device is touched; process 0 writes the files. Bad input is one line on stderr, exit status 1 (`cli`).
"""
from __future__ import annotations

from typing import Sequence

from absl import app, flags
from ml_collections import config_flags

from atommem_jax import cli, storage

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment file[:arg] with get_config(arg)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory", required=True)
_PROGRESS = flags.DEFINE_bool("progress", True, "show a progress bar per (variant, dataset, N)")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "join a multi-process run with jax.distributed.initialize() "
                                 "(coordinator and process ids from the environment)")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace the results of an earlier evaluation in --workdir")

# What an evaluation writes into its workdir.
OUTPUT_FILES = ("trajectories.jsonl", "results.json", "results.md", "em_vs_documents.png")

flags.mark_flags_as_required(["config"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _DISTRIBUTED.value:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize()

  from atommem_jax import workdir_lock  # pylint: disable=g-import-not-at-top
  from atommem_jax.eval import config as eval_config  # pylint: disable=g-import-not-at-top
  from atommem_jax.eval import runner  # pylint: disable=g-import-not-at-top

  workdir = storage.as_path(_WORKDIR.value)  # local or any filesystem etils.epath reaches (gs://...)
  if workdir.exists() and not workdir.is_dir():
    raise cli.CliError(f"--workdir {workdir} is a file, not a directory")
  existing = [name for name in OUTPUT_FILES if (workdir / name).exists()]
  if existing and not _OVERWRITE.value:
    raise cli.CliError(f"--workdir {workdir} already holds {', '.join(existing)}; pass --overwrite to replace them, "
                       f"or choose another --workdir")
  config = eval_config.eval_config_from_dict(_CONFIG.value)
  lock = workdir_lock.acquire_for_job(workdir)
  try:
    paths = runner.evaluate(config, workdir, progress=_PROGRESS.value)
  finally:
    lock.release()
  for path in paths.values():
    print(path)
  if "results.md" in paths:
    print(paths["results.md"].read_text())


if __name__ == "__main__":
  cli.run(main)
