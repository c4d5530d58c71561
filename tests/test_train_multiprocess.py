"""The train step on 2 CPU processes joined by `jax.distributed.initialize` on localhost gives the 1-device loss.

The test runs this file twice as a worker (`python tests/test_train_multiprocess.py WORKER_ID PORT OUT`), each
process with 2 CPU devices, forming a (data 2, fsdp 2, tensor 1) mesh over the 4 global devices.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np

NUM_STEPS = 2


def _batch(seed: int, vocab: int):
  from atommem_jax.train import batching
  rng = np.random.default_rng(seed)
  rows = 8
  prompts = [list(rng.integers(3, vocab, size=rng.integers(2, 8))) for _ in range(rows)]
  responses = [list(rng.integers(3, vocab, size=rng.integers(1, 8))) for _ in range(rows)]
  logprobs = [list(rng.normal(-6.0, 0.3, size=len(r))) for r in responses]
  batch, _ = batching.pack_rows(prompts, responses, buckets=(16,), pad_id=0, response_logprobs=logprobs,
                                advantages=list(rng.normal(size=rows)))
  batch = batch.replace(ref_logprobs_NxT=np.where(batch.loss_mask_NxT, -6.2, 0.0).astype(np.float32))
  return batching.split_microbatches(batch, 2)


def train_losses(mesh_config) -> list[float]:
  """Two GRPO steps of the tiny model from seed 0 on `mesh_config` over all (global) devices."""
  import jax
  from atommem_jax import sharding
  from atommem_jax.model.config import PRESETS
  from atommem_jax.train import grpo, step

  model = PRESETS["tiny"]
  mesh = sharding.make_mesh(mesh_config, jax.devices()[:int(np.prod(mesh_config.shape))])
  graphdef, params, params_sharding = step.init_params(model, seed=0, mesh=mesh)
  tx = step.make_optimizer(step.OptimizerConfig(learning_rate=1e-3, warmup_steps=1, decay_steps=10))
  shardings = step.state_shardings(tx, params_sharding, jax.eval_shape(lambda: params), mesh)
  state = step.init_train_state(params, tx, shardings)
  step_fn = step.make_train_step(graphdef, tx, step.StepConfig("grpo", grpo.GRPOConfig(kl_coef=0.1)), shardings, mesh)
  losses = []
  for i in range(NUM_STEPS):
    state, metrics = step_fn(state, step.shard_batch(_batch(i, model.vocab_size), step.batch_shardings(mesh)))
    losses.append(float(metrics["loss"]))
  # The updated parameters must agree too: a replicated checksum of every parameter.
  losses.append(float(jax.jit(lambda p: sum(jax.numpy.sum(x * x) for x in jax.tree.leaves(p)),
                              out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))(
                                  state.params)))
  return losses


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_single_device(tmp_path):
  from atommem_jax import sharding
  want = train_losses(sharding.MeshConfig())
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  workers = [subprocess.Popen([sys.executable, __file__, str(i), str(port), str(tmp_path / f"out{i}.json")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
  for worker in workers:
    output, _ = worker.communicate(timeout=240)
    assert worker.returncode == 0, output[-3000:]
  for i in range(2):
    got = json.loads((tmp_path / f"out{i}.json").read_text())
    np.testing.assert_allclose(got[:NUM_STEPS], want[:NUM_STEPS], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got[NUM_STEPS], want[NUM_STEPS], rtol=1e-5)


if __name__ == "__main__":
  worker_id, port, out_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=worker_id)
  assert jax.process_count() == 2 and len(jax.devices()) == 4, (jax.process_count(), jax.devices())
  from atommem_jax import sharding
  losses = train_losses(sharding.MeshConfig(data=2, fsdp=2, tensor=1))
  with open(out_path, "w") as f:
    json.dump(losses, f)
  jax.distributed.shutdown()
