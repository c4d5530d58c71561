"""What the launch scripts share: the entry-point command line, override checking, and a runner that can print.

A launch is a list of argv lists. `execute` either prints them shell-quoted (dry run) or runs them one after another,
stopping at the first failure with the command that failed, so a half-set-up pod is never mistaken for a ready one.
"""
from __future__ import annotations

import pathlib
import shlex
import subprocess
import sys
from typing import Mapping, Sequence, TextIO

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
ENTRY_MODULES = ("train", "evaluate")

# The multi-host contract: every worker runs the same command with this flag, and the entry points (train and
# evaluate) call `jax.distributed.initialize()` before touching any device; on TPU VMs it discovers the coordinator,
# process count and process id from the TPU metadata server.
DISTRIBUTED_FLAG = "--distributed"


def split_overrides(extra: Sequence[str]) -> list[str]:
  """Keeps `--config.key=value` overrides and refuses anything else, so a typo'd flag is not silently dropped."""
  bad = [arg for arg in extra if not arg.startswith("--config.")]
  if bad:
    raise SystemExit(f"unrecognised argument(s) {bad}; only --config.KEY=VALUE overrides pass through to the run")
  return list(extra)


def entry_command(python: str, module: str, config: str, workdir: str, overrides: Sequence[str] = (), *,
                  distributed: bool = False) -> list[str]:
  """`python -m atommem_jax.{train,evaluate} --config C --workdir W [--distributed] --config.k=v ...`."""
  if module not in ENTRY_MODULES:
    raise SystemExit(f"--module must be one of {ENTRY_MODULES}, got {module!r}")
  return [python, "-m", f"atommem_jax.{module}", "--config", config, "--workdir", workdir,
          *([DISTRIBUTED_FLAG] if distributed else []), *overrides]


def with_env(env: Mapping[str, str], argv: Sequence[str]) -> str:
  """A shell line `K=V ... argv` (quoted), for commands that travel as one string over ssh."""
  assignments = [f"{key}={shlex.quote(value)}" for key, value in env.items()]
  return " ".join([*assignments, shlex.join(argv)])


def render(argv: Sequence[str]) -> str:
  return shlex.join(argv)


def execute(commands: Sequence[Sequence[str]], *, dry_run: bool, out: TextIO | None = None) -> None:
  """Prints (dry run) or runs `commands` in order; a failing command stops the launch with its exit status."""
  out = out or sys.stdout
  for argv in commands:
    if dry_run:
      print(render(argv), file=out)
      continue
    print(f"+ {render(argv)}", file=sys.stderr, flush=True)
    try:
      returncode = subprocess.run(list(argv), check=False).returncode
    except FileNotFoundError as e:
      raise SystemExit(f"cannot run {argv[0]!r} (is it installed and on PATH?): {render(argv)}") from e
    if returncode != 0:
      raise SystemExit(f"command failed with exit status {returncode}: {render(argv)}")
