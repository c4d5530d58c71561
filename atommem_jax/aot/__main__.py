r"""Will the configured run fit a TPU slice? Compile its programs for the slice ahead of time, on a host with no TPU.

  python -m atommem_jax.aot --config experiments/grpo_hotpot.py:v5p-8 --topology v5p-8 [--config.x=...] [--json]

Compiles the GRPO train step, the sampler's prefill at its largest prompt bucket and its decode loop
(`aot/programs.py`) for the named slice (`v5e-16`, `v5p-8`, `v6e-64`, ...; libtpu from `pip install -e ".[aot]"`),
with the config's mesh laid over the slice's chips: a one-device mesh (the released default) becomes fsdp over all
of them, any other mesh must have as many devices as the slice has chips. Prints per program and chip the argument,
temporary, resident (other training state live meanwhile) and peak bytes against the chip's HBM, `fits` or
`does not fit`, the compile time and analytic model FLOPs (`cost_analysis` counts a scanned layer once and leaves
out Pallas kernels). The compiler's out-of-memory report is a verdict: its figures are printed, not a traceback.

`--json` prints one JSON object last: {"topology", "hbm_bytes_per_chip", "fits", "programs": {NAME:
{"argument_bytes", "temp_bytes", "peak_bytes", "fits"}}}. `--program NAME` (repeatable) compiles only those.

Exit status: 0 when every program fits, 3 when one does not, 2 for a bad topology name or config.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import time
from typing import Sequence

from absl import flags
from ml_collections import config_flags

from atommem_jax import cli
from atommem_jax.aot import topology as topology_lib

PROGRAMS = ("train_step", "prefill", "decode")
EXIT_FITS, EXIT_BAD_INPUT, EXIT_DOES_NOT_FIT = 0, 2, 3
GIB = 1 << 30



def _flags(argv: Sequence[str]) -> flags.FlagValues:
  values = flags.FlagValues()  # per call, so `run` can be called again in one process (tests)
  # The config flag reads its --config.x overrides from `sys_argv` (sys.argv unless given).
  config_flags.DEFINE_config_file("config", None, "Experiment file (path[:arg]) defining get_config(arg).",
                                  lock_config=True, flag_values=values, sys_argv=list(argv))
  flags.DEFINE_string("topology", None, "TPU slice: v5e-4, v5e-16, v5p-8, v5p-16, v6e-16, v6e-64, v4-8, ...",
                      flag_values=values)
  flags.DEFINE_bool("json", False, "print one JSON object last", flag_values=values)
  flags.DEFINE_multi_enum("program", list(PROGRAMS), PROGRAMS, "programs to compile (default: all)",
                          flag_values=values)
  return values


class BadInput(ValueError):
  """A config or topology this check cannot use; exit status 2."""


@dataclasses.dataclass
class Verdict:
  name: str
  shape: str
  argument_bytes: int
  temp_bytes: int
  resident_bytes: int
  peak_bytes: int
  fits: bool
  compile_s: float
  flops: float
  note: str = ""


def _mesh_for(config, chips: int):
  """The config's mesh on `chips` chips: one device becomes fsdp over all, anything else must match."""
  from atommem_jax.sharding import MeshConfig  # pylint: disable=g-import-not-at-top

  devices = math.prod(config.mesh.shape)
  if devices == 1:
    mesh = MeshConfig(fsdp=chips)
  elif devices == chips:
    mesh = config.mesh
  else:
    raise BadInput(f"config mesh data={config.mesh.data} fsdp={config.mesh.fsdp} tensor={config.mesh.tensor} has "
                   f"{devices} devices but the topology has {chips} chips; set the mesh to {chips} devices or to 1 "
                   f"(fsdp over every chip)")
  try:
    return dataclasses.replace(config, mesh=mesh)
  except ValueError as e:
    raise BadInput(f"with mesh fsdp={mesh.fsdp} data={mesh.data} tensor={mesh.tensor}: {e}") from None


def _without_data(config: dict) -> dict:
  """The check reads no data: a dataset file the config has not named yet is not an error here."""
  task = config.get("task", {})
  if task.get("dataset", "synthetic") != "synthetic" and not (task.get("path") or task.get("examples_path")):
    task["path"] = "(not read by the fit check)"
  return config


def _model_config(config):
  """The architecture (the preset, or the checkpoint's when it is readable here) as the run executes it."""
  from atommem_jax.checkpoint import CheckpointError, loader  # pylint: disable=g-import-not-at-top
  from atommem_jax.model import get_preset  # pylint: disable=g-import-not-at-top

  init = config.model
  if not init.checkpoint:
    try:
      return init.runtime(get_preset(init.preset))
    except KeyError as e:
      raise BadInput(str(e).strip('"')) from None
  try:
    return init.runtime(loader.resolve(init.checkpoint, field="model.checkpoint").model_config)
  except (FileNotFoundError, CheckpointError) as e:
    raise BadInput(f"model.checkpoint {init.checkpoint} is not readable here ({e}), so its architecture is unknown; "
                   f"check with --config.model.checkpoint= and the matching --config.model.preset") from None


_SIZE = re.compile(r"([\d.]+)\s*([KMGT]?)(?:i?B)?")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _bytes(text: str) -> int:
  number, unit = _SIZE.fullmatch(text.strip()).groups()
  return int(float(number) * _UNITS[unit])


def _out_of_memory_temp_bytes(message: str) -> int | None:
  """The temporaries' bytes from the compiler's out-of-memory report ("... required for HLO temporaries (63.01G)
  exceeds available HBM (15.75G)"), where it says."""
  temporaries = re.search(r"temporaries\s*\(([\d.]+\s*[KMGT]?)i?B?\)", message)
  return _bytes(temporaries.group(1)) if temporaries else None


def _compile(program, mesh, hbm: int) -> Verdict:
  from atommem_jax.aot import programs as programs_lib  # pylint: disable=g-import-not-at-top

  arguments = programs_lib.per_chip_bytes(program.args)
  start = time.perf_counter()
  try:
    compiled = programs_lib.lower(program, mesh).compile()
  except Exception as e:  # pylint: disable=broad-except
    message = str(e)
    if "RESOURCE_EXHAUSTED" not in message and "Ran out of memory" not in message:
      raise
    temp = _out_of_memory_temp_bytes(message) or 0
    peak = arguments + temp + program.resident_bytes_per_chip
    first_line = next((line.strip() for line in message.splitlines() if "memory" in line.lower()), message[:200])
    return Verdict(program.name, program.shape, arguments, temp, program.resident_bytes_per_chip, peak, False,
                   time.perf_counter() - start, program.flops, note=first_line)
  seconds = time.perf_counter() - start
  stats = compiled.memory_analysis()
  temp = int(stats.temp_size_in_bytes)
  own = int(stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes + temp)
  peak = max(own, int(getattr(stats, "peak_memory_in_bytes", 0) or 0)) + program.resident_bytes_per_chip
  return Verdict(program.name, program.shape, int(stats.argument_size_in_bytes), temp,
                 program.resident_bytes_per_chip, peak, peak <= hbm, seconds, program.flops)


def _attention_on_tpu(model_config) -> str:
  from atommem_jax.model import attention  # pylint: disable=g-import-not-at-top

  resolved = attention.resolve(model_config.attention, queries=attention.AUTO_DENSE_MAX_QUERIES + 1,
                               self_attention=True, platform="tpu", dtype=model_config.dtype)
  return resolved if resolved == model_config.attention else f"{resolved} ({model_config.attention})"


def _report(topology, config, model_config, verdicts: list[Verdict]) -> None:
  gib = lambda n: f"{n / GIB:8.2f}"
  m = config.mesh
  print(f"topology {topology.name}: {topology.chips} chips ({topology.compiler_name}), "
        f"{topology.hbm_bytes_per_chip / GIB:.2f} GiB HBM per chip; mesh data={m.data} fsdp={m.fsdp} "
        f"tensor={m.tensor}; model {config.model.preset or config.model.checkpoint} "
        f"({model_config.num_params / 1e9:.2f}B params, {model_config.param_dtype} params, {model_config.dtype} "
        f"activations, attention {_attention_on_tpu(model_config)}, remat {model_config.remat})")
  print(f"{'program':<11} {'argument':>8} {'temp':>8} {'resident':>8} {'peak':>8} {'HBM':>8}  GiB per chip  "
        f"{'verdict':<12} {'compile':>8}  {'TFLOPs':>9}  shape")
  for v in verdicts:
    print(f"{v.name:<11} {gib(v.argument_bytes)} {gib(v.temp_bytes)} {gib(v.resident_bytes)} {gib(v.peak_bytes)} "
          f"{gib(topology.hbm_bytes_per_chip)}                {'fits' if v.fits else 'does not fit':<12} "
          f"{v.compile_s:7.1f}s  {v.flops / 1e12:9.1f}  {v.shape}")
    if v.note:
      print(f"            compiler: {v.note}")


def run(argv: Sequence[str]) -> int:
  """The command line `argv` (program name first); returns the exit status."""
  args = _flags(argv)
  try:
    # Flag syntax, a missing or failing experiment file, an unknown config key (with the nearest known ones).
    cli.parse_flag_values(argv, args)
  except cli.CliError as e:
    print(f"error: {cli.one_line(e)}", file=sys.stderr)
    return EXIT_BAD_INPUT
  if args.config is None or not args.topology:
    print("error: --config FILE[:ARG] and --topology NAME are required", file=sys.stderr)
    return EXIT_BAD_INPUT
  from atommem_jax import configlib  # pylint: disable=g-import-not-at-top
  from atommem_jax.train.config import TrainConfig  # pylint: disable=g-import-not-at-top

  try:
    topology = topology_lib.parse(args.topology)
    config = _mesh_for(configlib.from_dict(TrainConfig, _without_data(args.config.to_dict())), topology.chips)
    model_config = _model_config(config)
  except (BadInput, topology_lib.TopologyError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_BAD_INPUT
  try:
    devices = topology.devices()
  except Exception as e:  # pylint: disable=broad-except  (no libtpu, or one that cannot lay out this slice)
    print(f"error: cannot lay out {topology.name} ({topology.compiler_name}): {e}. The check needs libtpu: "
          f"pip install -e \".[aot]\"", file=sys.stderr)
    return EXIT_BAD_INPUT

  from atommem_jax import sharding  # pylint: disable=g-import-not-at-top
  from atommem_jax.aot import programs as programs_lib  # pylint: disable=g-import-not-at-top

  mesh = sharding.make_mesh(config.mesh, devices)
  wanted = args.program or list(PROGRAMS)
  built = []
  if "train_step" in wanted:
    built.append(programs_lib.train_step(config, model_config, mesh))
  if "prefill" in wanted or "decode" in wanted:
    built += [p for p in programs_lib.sampler_programs(config, model_config, mesh) if p.name in wanted]
  verdicts = []
  for program in built:
    verdicts.append(_compile(program, mesh, topology.hbm_bytes_per_chip))
    v = verdicts[-1]
    print(f"[{v.name}] {'fits' if v.fits else 'does not fit'}: peak {v.peak_bytes / GIB:.2f} GiB per chip, compiled in "
          f"{v.compile_s:.0f} s", file=sys.stderr, flush=True)
  _report(topology, config, model_config, verdicts)
  fits = all(v.fits for v in verdicts)
  print(f"{topology.name}: {'every program fits' if fits else 'does not fit'}")
  if args.json:
    print(json.dumps({
        "topology": topology.name, "hbm_bytes_per_chip": topology.hbm_bytes_per_chip, "fits": fits,
        "programs": {v.name: {"argument_bytes": v.argument_bytes, "temp_bytes": v.temp_bytes,
                              "peak_bytes": v.peak_bytes, "fits": v.fits} for v in verdicts}}))
  return EXIT_FITS if fits else EXIT_DOES_NOT_FIT


def main() -> None:
  sys.exit(run(sys.argv))


if __name__ == "__main__":
  main()
