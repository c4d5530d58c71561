"""Attention at long rows: `python -m atommem_jax.bench attention --json [--seq_lens 1024,2048,4096,8192]`.

One SFT train step (forward, backward, AdamW; per-layer remat, as long rows are trained) of a small Qwen3 (vocab 2048,
hidden 256, 2 layers, 4 query / 2 kv heads of 64, MLP 768; fp32) on one row of T tokens, on CPU, with
`attention="dense"` (the [T, T] scores) and `attention="blockwise"` (query blocks of 512, memory linear in T). For
each T: the compiled step's temporary bytes (`memory_analysis`) and its median wall time after a warm-up, for both,
and their ratios; `temp_growth` is each implementation's temp bytes over its own at the first T (T squared for
dense, at most linear for blockwise).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import numpy as np

from atommem_jax import sharding
from atommem_jax.model import Qwen3Config
from atommem_jax.train import batching, step as step_lib

MODEL = Qwen3Config(vocab_size=2048, hidden_size=256, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=64,
                    intermediate_size=768, max_position_embeddings=16384, remat="full", logits_chunk=1024)


def _flags(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m atommem_jax.bench attention")
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--seq_lens", default="1024,2048,4096,8192")
  parser.add_argument("--repeats", type=int, default=3, help="timed steps after the warm-up; the median is kept")
  parser.add_argument("--implementations", default="dense,blockwise")
  return parser.parse_args(argv)


def _batch(length: int) -> batching.TrainBatch:
  rng = np.random.default_rng(length)
  tokens = rng.integers(3, MODEL.vocab_size, (1, length)).astype(np.int32)
  mask = np.ones((1, length), bool)
  loss_mask = mask.copy()
  loss_mask[:, :length // 2] = False  # a prompt, then the completion that carries the loss
  zeros = np.zeros((1, length), np.float32)
  batch = batching.TrainBatch(tokens_NxT=tokens, positions_NxT=np.arange(length, dtype=np.int32)[None],
                              mask_NxT=mask, loss_mask_NxT=loss_mask, old_logprobs_NxT=zeros,
                              ref_logprobs_NxT=zeros, advantage_N=np.zeros((1,), np.float32))
  return batching.split_microbatches(batch, 1)


def _measure(implementation: str, length: int, repeats: int) -> dict:
  mesh = sharding.make_mesh(sharding.MeshConfig(), jax.devices()[:1])
  graphdef, params, params_sharding = step_lib.init_params(MODEL.replace(attention=implementation), 0, mesh)
  tx = step_lib.make_optimizer(step_lib.OptimizerConfig(learning_rate=1e-4, warmup_steps=0, decay_steps=10))
  shardings = step_lib.state_shardings(tx, params_sharding, jax.eval_shape(lambda: params), mesh)
  state = step_lib.init_train_state(params, tx, shardings)
  step_fn = step_lib.make_train_step(graphdef, tx, step_lib.StepConfig("sft"), shardings, mesh)
  batch = step_lib.shard_batch(_batch(length), step_lib.batch_shardings(mesh))
  with jax.set_mesh(mesh):
    start = time.perf_counter()
    compiled = step_fn.__wrapped__.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
  temp = int(compiled.memory_analysis().temp_size_in_bytes)
  state, metrics = step_fn(state, batch)  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return {"temp_bytes": temp, "step_s": statistics.median(times), "compile_s": compile_s,
          "loss": float(metrics["loss"])}


def run(argv: list[str]) -> dict:
  f = _flags(argv)
  lengths = [int(x) for x in f.seq_lens.split(",")]
  implementations = f.implementations.split(",")
  results: dict = {"model": {k: getattr(MODEL, k) for k in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                                                              "num_kv_heads", "head_dim", "intermediate_size",
                                                              "remat")},
                   "rows": 1, "device": jax.devices()[0].device_kind, "by_seq_len": {}}
  for length in lengths:
    row = {name: _measure(name, length, f.repeats) for name in implementations}
    if {"dense", "blockwise"} <= set(row):
      row["blockwise_over_dense_time"] = row["blockwise"]["step_s"] / row["dense"]["step_s"]
      row["blockwise_over_dense_temp_bytes"] = row["blockwise"]["temp_bytes"] / row["dense"]["temp_bytes"]
    results["by_seq_len"][length] = row
    print(f"T={length}: " + ", ".join(f"{name} {row[name]['step_s']:.3f} s, {row[name]['temp_bytes'] / 2**20:.1f} MiB temp"
                                      for name in implementations), file=sys.stderr, flush=True)
  first = results["by_seq_len"][lengths[0]]
  results["temp_growth"] = {
      name: {length: results["by_seq_len"][length][name]["temp_bytes"] / first[name]["temp_bytes"]
             for length in lengths} for name in implementations}
  results["seq_len_growth"] = {length: length / lengths[0] for length in lengths}
  return results
