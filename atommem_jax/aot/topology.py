"""TPU slice names as users say them (`v5e-16`, `v5p-8`, `v6e-64`, `v4-32`) -> the compiler's topology description.

v4 and v5p names count TensorCores (two per chip, run as one "megacore" device); v5e and v6e names count chips.
HBM per chip is a table (the devices of a topology description report no memory stats).
"""
from __future__ import annotations

import dataclasses
import os
import re

GIB = 1 << 30

# generation -> (compiler name, chip config, cores per chip in the slice name, HBM bytes per chip, 3-D torus)
_GENERATIONS = {
    "v4": ("v4", "megacore", 2, 32 * GIB, True),
    "v5p": ("v5", "megacore", 2, 95 * GIB, True),
    "v5e": ("v5e", "default", 1, 16 * GIB, False),
    "v6e": ("v6e", "default", 1, 32 * GIB, False),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6": "v6e"}
_MAX_CHIPS = 8192


class TopologyError(ValueError):
  """A slice name this tool cannot lay out."""


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str  # as the user said it, normalised: "v5p-8"
  generation: str  # "v5p"
  chips: int
  compiler_name: str  # "v5:2x2x1"
  chip_config: str  # "megacore" / "default"
  hbm_bytes_per_chip: int

  def devices(self) -> list:
    """The slice's devices, from libtpu, on a host without a TPU (`pip install -e ".[aot]"`)."""
    from jax.experimental import topologies  # pylint: disable=g-import-not-at-top

    # libtpu otherwise asks the cloud metadata server what machine it is on, and warns when it cannot tell.
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", self.name.replace("v5e-", "v5litepod-"))
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    # Compiling touches no chip: two checks at once need not fight over libtpu's one-process lock file.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    description = topologies.get_topology_desc(platform="tpu", topology_name=self.compiler_name,
                                               chip_config_name=self.chip_config, num_slices=1)
    devices = list(description.devices)
    if len(devices) != self.chips:
      raise TopologyError(f"{self.name}: libtpu laid out {len(devices)} devices for {self.compiler_name}, expected "
                          f"{self.chips}")
    return devices


def _grid(chips: int, three_d: bool) -> str:
  """The torus of a slice of `chips` chips (a power of two): 2x2x1, 2x2x2, 2x2x4, 2x4x4, 4x4x4, ... or 2x2, 2x4,
  4x4, 4x8, 8x8, 8x16, ..."""
  exponent = chips.bit_length() - 1
  if not three_d:
    rows = 1 << (exponent // 2)
    return f"{rows}x{chips // rows}"
  if chips == 4:
    return "2x2x1"
  sizes = [2, 2, 1]
  for i in range(exponent - 2):
    sizes[2 - i % 3] *= 2
  return "x".join(map(str, sorted(sizes)))


def parse(name: str) -> Topology:
  """`v5p-8` -> Topology; a name not of the form GENERATION-COUNT, or a count no slice has, is a TopologyError."""
  match = re.fullmatch(r"\s*(v4|v5p|v5e|v5litepod|v5lite|v6e|v6)-(\d+)\s*", name.lower())
  known = ", ".join(f"{g}-N" for g in _GENERATIONS)
  if not match:
    raise TopologyError(f"unknown TPU topology {name!r}; expected one of {known} (e.g. v5e-16, v5p-8, v6e-64)")
  generation = _ALIASES.get(match.group(1), match.group(1))
  count = int(match.group(2))
  compiler, chip_config, cores_per_chip, hbm, three_d = _GENERATIONS[generation]
  if count % cores_per_chip:
    raise TopologyError(f"{name}: {generation} slices are named by TensorCores, two per chip; {count} is odd")
  chips = count // cores_per_chip
  smallest = 4 if three_d else 1
  if chips < smallest or chips > _MAX_CHIPS or chips & (chips - 1):
    raise TopologyError(f"{name}: no {generation} slice has {chips} chips (powers of two from {smallest})")
  return Topology(name=f"{generation}-{count}", generation=generation, chips=chips,
                  compiler_name=f"{compiler}:{_grid(chips, three_d)}", chip_config=chip_config,
                  hbm_bytes_per_chip=hbm)
