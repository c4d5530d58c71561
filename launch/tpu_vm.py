"""Cloud TPU VMs: create a slice, put the code and dependencies on every worker, run train/evaluate on all of them.

  python -m launch.tpu_vm create   --name NAME --zone ZONE --accelerator_type v5litepod-16 [--spot] [--dry_run]
  python -m launch.tpu_vm setup    --name NAME --zone ZONE [--dry_run]
  python -m launch.tpu_vm run      --name NAME --zone ZONE --module train \
      --config experiments/grpo_hotpot.py --workdir gs://BUCKET/run1 [--config.total_steps=100 ...] [--dry_run]
  python -m launch.tpu_vm delete   --name NAME --zone ZONE [--dry_run]

A slice with more than one host is multi-host: `run` sends the same command to every worker (`--worker=all`), with
`--distributed` so the entry point calls `jax.distributed.initialize()`, which discovers the coordinator, process
count and process id from the TPU metadata server (a single-host slice joins a one-process group, harmlessly). Every host must see the same workdir, so use a `gs://`
path (Orbax and the metrics writer handle it) unless the slice has a single host.

`setup` ships `git archive HEAD` of this repository (committed code only: what runs is a recorded commit), installs
Python 3.11 (the base image has 3.10; setup.py needs >= 3.11) into a venv on each worker, and `pip install -e .[tpu]`
(setup.py's extra pinning `jax[tpu]`).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from launch import commands

DEFAULT_RUNTIME = "tpu-ubuntu2204-base"
REMOTE_DIR = "atommem_jax"  # relative to the worker's home directory
REMOTE_VENV = "~/venv"
ARCHIVE_NAME = "atommem_jax.tar.gz"


def _target_flags(args: argparse.Namespace) -> list[str]:
  flags = [f"--zone={args.zone}"]
  if args.project:
    flags.append(f"--project={args.project}")
  return flags


def create_commands(args: argparse.Namespace) -> list[list[str]]:
  argv = ["gcloud", "compute", "tpus", "tpu-vm", "create", args.name, *_target_flags(args),
          f"--accelerator-type={args.accelerator_type}", f"--version={args.version}"]
  if args.spot:
    argv.append("--spot")
  return [argv]


def ssh_all(args: argparse.Namespace, remote_command: str) -> list[str]:
  return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, *_target_flags(args), "--worker=all",
          f"--command={remote_command}"]


def setup_commands(args: argparse.Namespace) -> list[list[str]]:
  local_archive = f"/tmp/{args.name}-{ARCHIVE_NAME}"
  install = " && ".join([
      "set -e",
      "sudo apt-get update -q",
      "sudo apt-get install -y -q python3.11 python3.11-venv",
      f"python3.11 -m venv {REMOTE_VENV}",
      f"rm -rf ~/{REMOTE_DIR}",
      f"mkdir -p ~/{REMOTE_DIR}",
      f"tar -xzf ~/{ARCHIVE_NAME} -C ~/{REMOTE_DIR}",
      f"cd ~/{REMOTE_DIR}",
      f"{REMOTE_VENV}/bin/pip install -q -U pip",
      # The `tpu` extra of setup.py pins jax[tpu] (and so libtpu) to the version the code was verified with.
      f"{REMOTE_VENV}/bin/pip install -q -e '.[tpu]'",
      f"{REMOTE_VENV}/bin/python -c 'import jax; print(jax.process_index(), jax.local_device_count())'",
  ])
  return [
      ["git", "-C", str(args.repo), "archive", "--format=tar.gz", f"--output={local_archive}", "HEAD"],
      ["gcloud", "compute", "tpus", "tpu-vm", "scp", local_archive, f"{args.name}:{ARCHIVE_NAME}",
       *_target_flags(args), "--worker=all"],
      ssh_all(args, install),
  ]


def remote_run_line(args: argparse.Namespace, overrides: Sequence[str]) -> str:
  """The one shell line every worker runs: same code, same flags, distributed init switched on."""
  # Workers are separate VMs: each keeps its own persistent compilation cache, so a rerun skips XLA compilation.
  env = {"JAX_COMPILATION_CACHE_DIR": args.compilation_cache} if args.compilation_cache else {}
  # Relative to ~/atommem_jax: a `~` would not expand once quoted.
  entry = commands.entry_command("../venv/bin/python", args.module, args.config, args.workdir, overrides,
                                 distributed=True)
  line = commands.with_env(env, entry)
  if args.background:
    # Detached, so the run survives the launching terminal; each worker logs locally.
    line = f"mkdir -p ~/logs && nohup {line} > ~/logs/{args.module}.log 2>&1 &"
  return f"cd ~/{REMOTE_DIR} && {line}"


def run_commands(args: argparse.Namespace, overrides: Sequence[str]) -> list[list[str]]:
  return [ssh_all(args, remote_run_line(args, overrides))]


def delete_commands(args: argparse.Namespace) -> list[list[str]]:
  return [["gcloud", "compute", "tpus", "tpu-vm", "delete", args.name, *_target_flags(args), "--quiet"]]


def add_target_flags(p: argparse.ArgumentParser) -> None:
  p.add_argument("--name", required=True, help="TPU VM name")
  p.add_argument("--zone", required=True)
  p.add_argument("--project", default=None, help="GCP project (gcloud's default when omitted)")


def add_run_flags(p: argparse.ArgumentParser, *, with_entry: bool = True) -> None:
  """`run`'s flags; a sweep sets module/config/workdir itself (`with_entry=False`)."""
  if with_entry:
    p.add_argument("--module", choices=commands.ENTRY_MODULES, default="train")
    p.add_argument("--config", required=True, help="experiment file[:arg], relative to the repository root")
    p.add_argument("--workdir", required=True, help="shared by all hosts: a gs:// path on multi-host slices")
  p.add_argument("--background", action="store_true", help="detach with nohup; logs in ~/logs/ on each worker")
  p.add_argument("--compilation_cache", default="/tmp/jax_cache",
                 help="persistent XLA compilation cache on each worker ('' disables)")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m launch.tpu_vm", description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="action", required=True)
  for action in ("create", "setup", "run", "delete"):
    p = sub.add_parser(action)
    add_target_flags(p)
    p.add_argument("--dry_run", action="store_true", help="print the commands instead of running them")
    if action == "create":
      p.add_argument("--accelerator_type", default="v5litepod-16", help="e.g. v4-8, v4-32, v5litepod-16, v6e-8")
      p.add_argument("--version", default=DEFAULT_RUNTIME, help="TPU software (runtime) version")
      p.add_argument("--spot", action="store_true", help="spot capacity (preemptible, cheaper)")
    if action == "setup":
      p.add_argument("--repo", default=str(commands.REPO_ROOT), help="local checkout to ship (its HEAD commit)")
    if action == "run":
      add_run_flags(p)
  return parser


def main(argv: Sequence[str] | None = None) -> None:
  args, extra = build_parser().parse_known_args(argv)
  overrides = commands.split_overrides(extra)
  if overrides and args.action != "run":
    raise SystemExit(f"--config.* overrides only apply to `run`, not `{args.action}`")
  if args.action == "create":
    launch = create_commands(args)
  elif args.action == "setup":
    launch = setup_commands(args)
  elif args.action == "run":
    launch = run_commands(args, overrides)
  else:
    launch = delete_commands(args)
  commands.execute(launch, dry_run=args.dry_run)


if __name__ == "__main__":
  main(sys.argv[1:])
