"""`python -m atommem_jax.train --config experiments/grpo_hotpot.py[:ARG] --workdir DIR [--config.key=value ...]`.

The config file's `get_config(arg)` returns an ml_collections ConfigDict; it is locked (an override naming an
unknown key is an error) and becomes a frozen `TrainConfig` at this boundary. Rerunning the same command resumes
from the workdir's latest checkpoint that restores. Bad input (a missing experiment file, an unknown key, a workdir
another run holds: "... is in use by ...") is one line on stderr and exit status 1 (`atommem_jax.cli`).
"""
from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from atommem_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment file (path[:arg]) defining get_config(arg).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints/, metrics.jsonl, tensorboard/.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Join a multi-process run with jax.distributed.initialize(): "
                                 "JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and "
                                 "JAX_PROCESS_ID from the environment.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _DISTRIBUTED.value:
    from atommem_jax import distributed  # pylint: disable=g-import-not-at-top
    distributed.initialize_from_env()
  from atommem_jax import configlib  # pylint: disable=g-import-not-at-top
  from atommem_jax.checkpoint import CheckpointError  # pylint: disable=g-import-not-at-top
  from atommem_jax.train import loop  # pylint: disable=g-import-not-at-top
  from atommem_jax.train.config import TrainConfig  # pylint: disable=g-import-not-at-top
  try:
    config = configlib.from_dict(TrainConfig, _CONFIG.value)
    loop.train_and_evaluate(config, _WORKDIR.value)
  except (configlib.ConfigError, CheckpointError, FileNotFoundError) as e:  # a bad input: a config key, a checkpoint
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  cli.run(main)
