"""Replays a hand-written transcript through the real environment and memory, and prints what happened as JSON.

  python -m atommem_jax.replay --transcript FILE.json

The transcript format and the printed object are described in `atommem_jax.agent.replay`.
"""
from __future__ import annotations

import json
import sys
from typing import Sequence

from absl import app, flags

from atommem_jax import configlib
from atommem_jax.agent.replay import replay

flags.DEFINE_string("transcript", None, "The transcript JSON file to replay.")
FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  del argv
  path = FLAGS.transcript
  if not path:
    sys.exit("--transcript FILE.json is required")
  try:
    with open(path, encoding="utf-8") as f:
      transcript = json.load(f)
  except OSError as err:
    sys.exit(f"{path}: cannot read the transcript ({err.strerror})")
  except json.JSONDecodeError as err:
    sys.exit(f"{path}: not valid JSON ({err})")
  try:
    result = replay(transcript, where=path)
  except (ValueError, configlib.ConfigError) as err:
    sys.exit(str(err))
  print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
  app.run(main)
