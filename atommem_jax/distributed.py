"""Multi-process runs: joining one, sharing work between processes, and the few host collectives a run needs.

A run of P processes (one per host) keeps one global mesh for training; everything host-driven (rollouts, the
sampler, evaluation) runs per process on that process's own devices. Each process takes a contiguous share of a
global list of episodes, rolls it out on a process-local mesh, and `allgather` hands every process the whole list
of results in global order, so what follows (GRPO rows, minibatches, metrics) is computed identically everywhere and
identically to a 1-process run. With one process every function here is the identity.
"""
from __future__ import annotations

import itertools
import os
import pickle
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

ENV_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize_from_env() -> None:
  """`jax.distributed.initialize` from JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
  JAX_PROCESS_ID; one clear error when one is missing or malformed."""
  values = {name: os.environ.get(name, "") for name in ENV_VARS}
  missing = [name for name, value in values.items() if not value]
  if missing:
    raise ValueError(f"--distributed needs the environment variables {', '.join(ENV_VARS)}; missing: "
                     f"{', '.join(missing)}")
  try:
    num_processes, process_id = int(values["JAX_NUM_PROCESSES"]), int(values["JAX_PROCESS_ID"])
  except ValueError:
    raise ValueError(f"JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers, got "
                     f"{values['JAX_NUM_PROCESSES']!r} and {values['JAX_PROCESS_ID']!r}") from None
  if not 0 <= process_id < num_processes:
    raise ValueError(f"JAX_PROCESS_ID={process_id} is not in [0, JAX_NUM_PROCESSES={num_processes})")
  jax.distributed.initialize(coordinator_address=values["JAX_COORDINATOR_ADDRESS"], num_processes=num_processes,
                             process_id=process_id)


def is_main() -> bool:
  """Process 0: the one that writes metrics, TensorBoard, plots and files beside the checkpoints."""
  return jax.process_index() == 0


def share(count: int, process: int | None = None) -> range:
  """The indices of `count` items this process (or `process`) handles: contiguous, in process order, sizes
  differing by at most one."""
  processes = jax.process_count()
  process = jax.process_index() if process is None else process
  base, extra = divmod(count, processes)
  start = process * base + min(process, extra)
  return range(start, start + base + (process < extra))


# Host-side waits ride on the coordination service (not on device collectives, whose first use on CPU times out
# after 30 s): one process may roll out or build the SFT pairs for many minutes while the others wait.
_WAIT_MS = 2 * 60 * 60 * 1000
_sequence = itertools.count()  # every process calls the collectives below in the same order


def _coordination_client() -> Any:
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  return jax_distributed.global_state.client


def barrier(name: str) -> None:
  """Every process waits here until all have arrived."""
  if jax.process_count() > 1:
    _coordination_client().wait_at_barrier(f"atommem/{next(_sequence)}/{name}", _WAIT_MS)


def allgather(items: Sequence[Any]) -> list[Any]:
  """Every process's `items` (any picklable objects), concatenated in process order, on every process."""
  if jax.process_count() == 1:
    return list(items)
  client, key = _coordination_client(), f"atommem/{next(_sequence)}/allgather"
  client.key_value_set_bytes(f"{key}/{jax.process_index()}", pickle.dumps(list(items)))
  out: list[Any] = []
  for process in range(jax.process_count()):
    out += pickle.loads(client.blocking_key_value_get_bytes(f"{key}/{process}", _WAIT_MS))
  barrier(f"{key} read")  # every process has its copy: the keys can go
  client.key_value_delete(f"{key}/{jax.process_index()}")
  return out


def _process_devices(mesh: Mesh, process: int) -> list[jax.Device]:
  return sorted((d for d in mesh.devices.flat if d.process_index == process), key=lambda d: d.id)


def _process_mesh(mesh: Mesh, process: int) -> Mesh:
  devices = _process_devices(mesh, process)
  tensor = mesh.shape.get("tensor", 1)
  if len(devices) % tensor:
    raise ValueError(f"process {process} has {len(devices)} devices of the mesh, not a multiple of its tensor axis "
                     f"({tensor}); the sampler's process-local mesh needs whole tensor groups")
  shape = {name: 1 for name in mesh.axis_names}
  shape["tensor"] = tensor
  shape["fsdp" if "fsdp" in shape else mesh.axis_names[0]] = len(devices) // tensor
  return Mesh(np.array(devices).reshape([shape[name] for name in mesh.axis_names]), mesh.axis_names,
              axis_types=mesh.axis_types)


def local_mesh(mesh: Mesh) -> Mesh:
  """A mesh with `mesh`'s axis names over this process's devices only (rows over data x fsdp, the tensor axis
  kept): what the sampler runs on, so no batch it fetches spans hosts. `mesh` itself in a 1-process run."""
  if jax.process_count() == 1:
    return mesh
  return _process_mesh(mesh, jax.process_index())


def localize(tree: Any, global_mesh: Mesh, local_shardings: Any) -> Any:
  """Global arrays on `global_mesh` -> arrays on this process's `local_mesh(global_mesh)` with `local_shardings`.

  One resharding over all processes puts a full copy on every process, already laid out over its devices as
  `local_shardings` say; each process then keeps its own copy. `tree` unchanged in a 1-process run.
  """
  if jax.process_count() == 1:
    return tree
  meshes = [_process_mesh(global_mesh, p) for p in range(jax.process_count())]
  # Process p's row of this mesh is its local mesh: a local spec over it is replicated across processes.
  hosts = Mesh(np.stack([m.devices for m in meshes]), ("processes", *meshes[0].axis_names),
               axis_types=(meshes[0].axis_types[0], *meshes[0].axis_types))

  def to_local(x: jax.Array, sharding: NamedSharding) -> jax.Array:
    replicated = jax.device_put(x, NamedSharding(hosts, sharding.spec))
    return jax.make_array_from_single_device_arrays(x.shape, sharding,
                                                    [shard.data for shard in replicated.addressable_shards])

  leaves, treedef = jax.tree.flatten(tree)
  shardings = jax.tree.leaves(local_shardings)  # a prefix-shaped tree (one sharding per parameter variable)
  if len(shardings) != len(leaves):
    raise ValueError(f"{len(shardings)} shardings for {len(leaves)} arrays")
  return jax.tree.unflatten(treedef, [to_local(x, s) for x, s in zip(leaves, shardings)])
