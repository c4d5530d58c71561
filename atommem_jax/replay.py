"""Replays a hand-written transcript through the real environment and memory, and prints what happened as JSON.

  python -m atommem_jax.replay --transcript FILE.json [--mcp_url URL | --mcp_command CMD]

`--mcp_url` (streamable HTTP, e.g. `http://127.0.0.1:8000/mcp`) or `--mcp_command` (a stdio server's command line)
names the tool server of a web transcript. The transcript format and the printed object are described in
`atommem_jax.agent.replay`.
"""
from __future__ import annotations

import json
from typing import Sequence

from absl import flags

from atommem_jax import atomic_files, cli
from atommem_jax.agent.replay import replay
from atommem_jax.tools.mcp_client import ToolServerError

flags.DEFINE_string("transcript", None, "The transcript JSON file to replay.")
flags.DEFINE_string("mcp_url", "", "A web transcript's MCP tool server over streamable HTTP (http://HOST:PORT/mcp).")
flags.DEFINE_string("mcp_command", "", "A web transcript's MCP tool server as a stdio command line.")
FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  del argv
  path = FLAGS.transcript
  if not path:
    raise cli.CliError("--transcript FILE.json is required")
  # Unreadable, not UTF-8, not JSON, a lone surrogate, a bad key or value: one line naming it (`cli.run`).
  try:
    result = replay(atomic_files.read_json(path), where=path, mcp_url=FLAGS.mcp_url, mcp_command=FLAGS.mcp_command)
  except ToolServerError as err:  # an unreachable tool server: one line too
    raise cli.CliError(str(err)) from None
  print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
  cli.run(main)
