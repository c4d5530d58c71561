"""The multi-process pieces a run uses, on 2 CPU processes joined by `distributed.initialize_from_env`.

Each worker (this file run as `python tests/test_distributed.py OUT`, 2 simulated devices each) checks: shares of a
global list are disjoint and cover it; `allgather` returns every process's objects in process order; `localize`
turns fsdp-sharded global parameters into a full copy on the process's own devices; `shard_batch` gives each
process's block to `make_array_from_process_local_data` and the global batch comes out whole; a `Sampler` refuses a
mesh that spans processes. The whole-run comparison is `test_train_distributed.py` (slow).
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from atommem_jax import distributed


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_shares_are_contiguous_disjoint_and_cover(monkeypatch):
  import jax
  monkeypatch.setattr(jax, "process_count", lambda: 3)
  for count in (0, 1, 2, 7, 9):
    shares = [distributed.share(count, p) for p in range(3)]
    assert [i for s in shares for i in s] == list(range(count))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize("env, message", [
    ({}, "missing: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID"),
    ({"JAX_COORDINATOR_ADDRESS": "localhost:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"}, "integers"),
    ({"JAX_COORDINATOR_ADDRESS": "localhost:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "not in"),
])
def test_bad_environment_is_one_clear_error(monkeypatch, env, message):
  for name in distributed.ENV_VARS:
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(ValueError, match=message):
    distributed.initialize_from_env()


def test_two_processes(tmp_path):
  port = _free_port()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  workers = []
  for i in range(2):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i),
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    workers.append(subprocess.Popen([sys.executable, __file__, str(tmp_path / f"out{i}.json")], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  for worker in workers:
    output, _ = worker.communicate(timeout=300)
    assert worker.returncode == 0, output[-3000:]
  got = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
  assert got[0]["share"] == [0, 1, 2] and got[1]["share"] == [3, 4]
  for out in got:
    assert out["gathered"] == [["p0", 0], ["p0", 1], ["p0", 2], ["p1", 3], ["p1", 4]]
    assert out["local_copy_equal"] and out["local_devices_only"]
    assert out["batch_equal"] and out["batch_rows_here"] == 4  # 8 rows over 4 devices: 2 devices here
    assert "spans 2 processes" in out["sampler_error"]


def _worker(out_path: str) -> None:
  distributed.initialize_from_env()
  import jax
  from flax import nnx
  from jax.sharding import NamedSharding, PartitionSpec as P
  from atommem_jax import sharding
  from atommem_jax.model import PRESETS, param_shardings
  from atommem_jax.sampling.config import SamplerConfig
  from atommem_jax.sampling.sampler import Sampler
  from atommem_jax.train import batching, step

  assert jax.process_count() == 2 and len(jax.devices()) == 4
  me = jax.process_index()
  out = {"share": list(distributed.share(5))}
  out["gathered"] = distributed.allgather([(f"p{me}", i) for i in out["share"]])

  mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=1))
  graphdef, params, _ = step.init_params(PRESETS["tiny"], seed=0, mesh=mesh)
  state = nnx.state(nnx.merge(graphdef, params))
  local_mesh = distributed.local_mesh(mesh)
  local = distributed.localize(state, mesh, param_shardings(state, local_mesh))
  replicated = jax.jit(lambda s: s, out_shardings=NamedSharding(mesh, P()))(state)
  leaves, want = jax.tree.leaves(local), jax.tree.leaves(replicated)
  out["local_copy_equal"] = all(np.array_equal(np.asarray(a), np.asarray(b.addressable_data(0)))
                                for a, b in zip(leaves, want))
  out["local_devices_only"] = all(x.sharding.device_set <= set(jax.local_devices()) for x in leaves)

  rows = 8
  batch = batching.TrainBatch(
      tokens_NxT=np.arange(rows * 6, dtype=np.int32).reshape(rows, 6), positions_NxT=np.zeros((rows, 6), np.int32),
      mask_NxT=np.ones((rows, 6), bool), loss_mask_NxT=np.ones((rows, 6), bool),
      old_logprobs_NxT=np.zeros((rows, 6), np.float32), ref_logprobs_NxT=np.zeros((rows, 6), np.float32),
      advantage_N=np.arange(rows, dtype=np.float32))
  host = batching.split_microbatches(batch, 1)
  placed = step.shard_batch(host, step.batch_shardings(mesh))
  whole = jax.jit(lambda b: b, out_shardings=NamedSharding(mesh, P()))(placed)
  out["batch_equal"] = all(np.array_equal(np.asarray(g.addressable_data(0)), w)
                           for g, w in zip(jax.tree.leaves(whole), jax.tree.leaves(host)))
  out["batch_rows_here"] = sum(s.data.shape[1] for s in placed.tokens_NxT.addressable_shards)
  try:
    Sampler(nnx.merge(graphdef, params), SamplerConfig(), mesh=mesh)
    out["sampler_error"] = ""
  except ValueError as e:
    out["sampler_error"] = str(e)
  with open(out_path, "w") as f:
    json.dump(out, f)
  distributed.barrier("done")


if __name__ == "__main__":
  _worker(sys.argv[1])
