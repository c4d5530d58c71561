"""One GPU node: install the code with `.[gpu]` (jax[cuda12]), then run train or evaluate on its GPUs.

  python -m launch.gpu_node setup [--host user@node] [--venv .venv-gpu] [--dry_run]
  python -m launch.gpu_node run --module evaluate --config experiments/eval_hotpot.py:tiny \
      --workdir runs/eval1 [--config.checkpoint=DIR ...] [--gpus 0,1] [--host user@node] [--dry_run]

Without `--host` the commands run here; with it the checkout is rsynced to `~/atommem_jax` on the host (the working
tree, uncommitted edits included, minus .git and virtualenvs) and the commands run there over ssh. One process drives
all local GPUs, so no distributed initialisation is needed on a single node.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from launch import commands

REMOTE_DIR = "atommem_jax"  # relative to the remote home directory
RSYNC_EXCLUDES = (".git", ".venv*", "__pycache__", "*.egg-info")


def _install_steps(python: str, venv: str, repo: str) -> list[list[str]]:
  return [
      [python, "-m", "venv", venv],
      [f"{venv}/bin/pip", "install", "-q", "-U", "pip"],
      # The `gpu` extra of setup.py pins jax[cuda12] to the version the code was verified with.
      [f"{venv}/bin/pip", "install", "-q", "-e", f"{repo}[gpu]"],
      [f"{venv}/bin/python", "-c", "import jax; print(jax.devices())"],
  ]


def setup_commands(args: argparse.Namespace) -> list[list[str]]:
  if not args.host:
    return _install_steps(args.python, args.venv, str(args.repo))
  rsync = ["rsync", "-az", "--delete", *(f"--exclude={pattern}" for pattern in RSYNC_EXCLUDES),
           f"{str(args.repo).rstrip('/')}/", f"{args.host}:{REMOTE_DIR}/"]
  remote = " && ".join(commands.render(step) for step in _install_steps(args.python, args.venv, "."))
  return [rsync, ["ssh", args.host, f"cd {REMOTE_DIR} && {remote}"]]


def _run_env(args: argparse.Namespace) -> dict[str, str]:
  env = {}
  if args.gpus:
    env["CUDA_VISIBLE_DEVICES"] = args.gpus
  if args.mem_fraction:
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = args.mem_fraction
  return env


def run_commands(args: argparse.Namespace, overrides: Sequence[str]) -> list[list[str]]:
  entry = commands.entry_command(f"{args.venv}/bin/python", args.module, args.config, args.workdir, overrides)
  env = _run_env(args)
  if not args.host:
    return [["env", *(f"{key}={value}" for key, value in env.items()), *entry] if env else entry]
  return [["ssh", args.host, f"cd {REMOTE_DIR} && {commands.with_env(env, entry)}"]]


def add_target_flags(p: argparse.ArgumentParser) -> None:
  p.add_argument("--host", default=None, help="ssh destination; run here when omitted")
  p.add_argument("--venv", default=".venv-gpu", help="virtualenv path, relative to the checkout")


def add_run_flags(p: argparse.ArgumentParser, *, with_entry: bool = True) -> None:
  """`run`'s flags; a sweep sets module/config/workdir itself (`with_entry=False`)."""
  if with_entry:
    p.add_argument("--module", choices=commands.ENTRY_MODULES, default="train")
    p.add_argument("--config", required=True, help="experiment file[:arg], relative to the repository root")
    p.add_argument("--workdir", required=True)
  p.add_argument("--gpus", default="", help="CUDA_VISIBLE_DEVICES, e.g. 0,1 (all GPUs when empty)")
  p.add_argument("--mem_fraction", default="", help="XLA_PYTHON_CLIENT_MEM_FRACTION, e.g. 0.9 (jax default if empty)")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m launch.gpu_node", description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="action", required=True)
  for action in ("setup", "run"):
    p = sub.add_parser(action)
    add_target_flags(p)
    p.add_argument("--dry_run", action="store_true", help="print the commands instead of running them")
    if action == "setup":
      p.add_argument("--python", default="python3.11", help="interpreter that creates the venv (>= 3.11)")
      p.add_argument("--repo", default=str(commands.REPO_ROOT), help="local checkout to install")
    else:
      add_run_flags(p)
  return parser


def main(argv: Sequence[str] | None = None) -> None:
  args, extra = build_parser().parse_known_args(argv)
  overrides = commands.split_overrides(extra)
  if overrides and args.action != "run":
    raise SystemExit(f"--config.* overrides only apply to `run`, not `{args.action}`")
  launch = setup_commands(args) if args.action == "setup" else run_commands(args, overrides)
  commands.execute(launch, dry_run=args.dry_run)


if __name__ == "__main__":
  main(sys.argv[1:])
