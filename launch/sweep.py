"""A grid of `--config.KEY=VALUE` overrides expanded into one run per point, on any launcher.

  python -m launch.sweep --config experiments/grpo_hotpot.py:tiny --workdir_root runs/lr_sweep \
      --grid train.learning_rate=1e-6,3e-6 --grid agent.top_k=4,6 [--launcher local|gpu_node|tpu_vm ...] [--dry_run]

Points are the cartesian product of the `--grid` axes, in the order given (last axis fastest); each gets its own
workdir `ROOT/KEY=VALUE,KEY=VALUE` so runs never share checkpoints. Values are split on commas and passed through
verbatim (ml_collections parses them with the type of the config field). With `--launcher tpu_vm` or `gpu_node` the
launcher's own flags (`--name`, `--zone`, `--host`, ...) follow and every point becomes that launcher's `run`.
Points run one after another (on a TPU slice, leave `--background` off so they do not share the chips); a failing
point stops the sweep unless `--keep_going`.
"""
from __future__ import annotations

import argparse
import itertools
import re
import sys
from typing import Sequence

from launch import commands, gpu_node, tpu_vm


def parse_axis(spec: str) -> tuple[str, list[str]]:
  key, sep, values = spec.partition("=")
  key = key.removeprefix("--config.").strip()
  if not sep or not key or not values:
    raise SystemExit(f"--grid {spec!r}: expected KEY=V1,V2,...")
  return key, values.split(",")


def expand_grid(axes: Sequence[tuple[str, Sequence[str]]]) -> list[dict[str, str]]:
  keys = [key for key, _ in axes]
  if len(set(keys)) != len(keys):
    raise SystemExit(f"--grid names a key twice: {keys}")
  return [dict(zip(keys, values)) for values in itertools.product(*(values for _, values in axes))]


def point_name(point: dict[str, str]) -> str:
  """A directory name for one point; characters a path cannot hold safely become '_'."""
  return ",".join(f"{key}={re.sub(r'[^A-Za-z0-9._+-]', '_', value)}" for key, value in point.items()) or "base"


def point_overrides(point: dict[str, str]) -> list[str]:
  return [f"--config.{key}={value}" for key, value in point.items()]


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m launch.sweep", description=__doc__.split("\n")[0])
  parser.add_argument("--launcher", choices=("local", "gpu_node", "tpu_vm"), default="local")
  parser.add_argument("--module", choices=commands.ENTRY_MODULES, default="train")
  parser.add_argument("--config", required=True)
  parser.add_argument("--workdir_root", required=True, help="each point runs in WORKDIR_ROOT/<point name>")
  parser.add_argument("--grid", action="append", default=[], help="KEY=V1,V2,... (repeat for more axes)")
  parser.add_argument("--python", default=sys.executable, help="interpreter for --launcher local")
  parser.add_argument("--keep_going", action="store_true", help="run the remaining points after a failure")
  parser.add_argument("--dry_run", action="store_true", help="print the commands instead of running them")
  return parser


def _launcher_parser(launcher: str) -> argparse.ArgumentParser:
  """The launcher's target and `run` flags, without those the sweep sets itself (module, config, workdir)."""
  module = tpu_vm if launcher == "tpu_vm" else gpu_node
  parser = argparse.ArgumentParser(prog=f"python -m launch.sweep --launcher {launcher}", add_help=False)
  module.add_target_flags(parser)
  module.add_run_flags(parser, with_entry=False)
  return parser


def sweep_commands(args: argparse.Namespace, launcher_args: Sequence[str], base_overrides: Sequence[str]):
  axes = [parse_axis(spec) for spec in args.grid]
  points = expand_grid(axes)
  if args.launcher != "local":
    target, extra = _launcher_parser(args.launcher).parse_known_args(launcher_args)
    if extra:
      raise SystemExit(f"unrecognised argument(s) for --launcher {args.launcher}: {extra}")
  elif launcher_args:
    raise SystemExit(f"unrecognised argument(s) {list(launcher_args)}")
  for point in points:
    workdir = f"{args.workdir_root.rstrip('/')}/{point_name(point)}"
    overrides = [*base_overrides, *point_overrides(point)]
    if args.launcher == "local":
      yield [commands.entry_command(args.python, args.module, args.config, workdir, overrides)]
      continue
    run_args = argparse.Namespace(**vars(target), module=args.module, config=args.config, workdir=workdir)
    module = tpu_vm if args.launcher == "tpu_vm" else gpu_node
    yield module.run_commands(run_args, overrides)


def main(argv: Sequence[str] | None = None) -> None:
  args, rest = build_parser().parse_known_args(argv)
  base_overrides = [arg for arg in rest if arg.startswith("--config.")]
  launcher_args = [arg for arg in rest if not arg.startswith("--config.")]
  failures = []
  for point_commands in sweep_commands(args, launcher_args, base_overrides):
    try:
      commands.execute(point_commands, dry_run=args.dry_run)
    except SystemExit as e:
      if not args.keep_going:
        raise
      failures.append(str(e))
      print(f"point failed, continuing: {e}", file=sys.stderr)
  if failures:
    raise SystemExit(f"{len(failures)} point(s) failed:\n" + "\n".join(failures))


if __name__ == "__main__":
  main(sys.argv[1:])
