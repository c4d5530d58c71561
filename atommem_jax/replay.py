"""Replays a hand-written transcript through the real environment and memory, and prints what happened as JSON.

  python -m atommem_jax.replay --transcript FILE.json

The transcript format and the printed object are described in `atommem_jax.agent.replay`.
"""
from __future__ import annotations

import json
from typing import Sequence

from absl import flags

from atommem_jax import atomic_files, cli
from atommem_jax.agent.replay import replay

flags.DEFINE_string("transcript", None, "The transcript JSON file to replay.")
FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  del argv
  path = FLAGS.transcript
  if not path:
    raise cli.CliError("--transcript FILE.json is required")
  # Unreadable, not UTF-8, not JSON, a lone surrogate, a bad key or value: one line naming it (`cli.run`).
  result = replay(atomic_files.read_json(path), where=path)
  print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
  cli.run(main)
