"""Prefill (full forward) speed: `python -m atommem_jax.bench forward --json`.

CPU mode (default): our jitted forward against transformers' torch `Qwen3ForCausalLM` on the same random weights
(4 layers, hidden 256, batch 8, sequence 512, fp32), prefill tokens/s of both after warm-up, their ratio, and the
max logit difference as a check that both computed the same thing.

Accelerator mode (`--preset qwen3_1_7b --dtype bfloat16`): random weights created sharded over every device
(fsdp), prefill tokens/s and model FLOPs utilisation. FLOPs per token = 2 x matmul parameters (layers + LM head)
+ causal attention 2 x 2 x L x N x H x (T + 1) / 2; the peak comes from `--peak_tflops` or the device kind.
"""
from __future__ import annotations

import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import nnx

from atommem_jax import sharding
from atommem_jax.model import Qwen3Config, get_preset, init_sharded, param_shardings, positions_from_mask

BENCH_HF_KWARGS = dict(vocab_size=2048, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=2048,
                       rms_norm_eps=1e-6, rope_theta=10_000.0, tie_word_embeddings=True, initializer_range=0.02)

# Dense peak TFLOP/s by (device kind substring, dtype); anything else needs --peak_tflops.
PEAK_TFLOPS = {("H200", "bfloat16"): 989.4, ("H100", "bfloat16"): 989.4, ("H200", "float32"): 66.9,
               ("H100", "float32"): 66.9, ("A100", "bfloat16"): 312.0, ("A100", "float32"): 19.5,
               ("TPU v5p", "bfloat16"): 459.0, ("TPU v4", "bfloat16"): 275.0}


def _define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_bool("json", False, "print one JSON object (handled by the dispatcher)", flag_values=values)
  flags.DEFINE_string("preset", None, "a Qwen3 preset: accelerator mode with random weights, no HF reference",
                      flag_values=values)
  flags.DEFINE_integer("batch", 8, "rows per forward", flag_values=values)
  flags.DEFINE_integer("seq_len", 512, "tokens per row", flag_values=values)
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "params and activations", flag_values=values)
  flags.DEFINE_float("peak_tflops", None, "device peak TFLOP/s for MFU (default: from the device kind)",
                     flag_values=values)
  flags.DEFINE_integer("repeats", 5, "timed runs after warm-up; the best is reported", flag_values=values)
  flags.DEFINE_integer("seed", 0, "weights and tokens", flag_values=values)


def flops_per_token(config: Qwen3Config, seq_len: int) -> dict[str, float]:
  embedding_gather = 0 if config.tie_word_embeddings else config.vocab_size * config.hidden_size
  matmul_params = config.num_params - embedding_gather
  attention = 2 * 2 * config.num_layers * config.num_heads * config.head_dim * (seq_len + 1) / 2
  return {"params": 2.0 * matmul_params, "attention": float(attention), "total": 2.0 * matmul_params + attention}


def _best_time(fn, repeats: int) -> float:
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def _batch(batch: int, seq_len: int, vocab: int, seed: int):
  rng = np.random.default_rng(seed)
  tokens_BxT = rng.integers(0, vocab, (batch, seq_len)).astype(np.int32)
  mask_BxT = np.ones((batch, seq_len), bool)
  return tokens_BxT, np.array(positions_from_mask(jnp.asarray(mask_BxT))), mask_BxT


def _jitted_forward(model, mesh=None):
  graphdef, state = nnx.split(model)

  def forward(state, tokens_BxT, positions_BxT, mask_BxT):
    return nnx.merge(graphdef, state)(tokens_BxT, positions_BxT, mask_BxT)[0]

  if mesh is None:
    return state, jax.jit(forward)
  rows = sharding.DEFAULT_RULES.named(mesh, ("batch", "length"))
  return state, jax.jit(forward, in_shardings=(param_shardings(state, mesh), rows, rows, rows))


def _cpu_vs_hf(f: flags.FlagValues) -> dict:
  import torch
  from transformers import Qwen3Config as HFQwen3Config
  from transformers import Qwen3ForCausalLM

  from atommem_jax.checkpoint import load_hf

  torch.manual_seed(f.seed)
  hf_model = Qwen3ForCausalLM(HFQwen3Config(**BENCH_HF_KWARGS)).eval()
  with tempfile.TemporaryDirectory() as tmp:
    hf_model.save_pretrained(tmp)
    config, model = load_hf(tmp)
  tokens, positions, mask = _batch(f.batch, f.seq_len, config.vocab_size, f.seed)
  state, forward = _jitted_forward(model)
  args = [jnp.asarray(a) for a in (tokens, positions, mask)]
  start = time.perf_counter()
  ours_logits = jax.block_until_ready(forward(state, *args))
  first_call_s = time.perf_counter() - start
  ours_s = _best_time(lambda: jax.block_until_ready(forward(state, *args)), f.repeats)

  torch_args = dict(input_ids=torch.as_tensor(tokens, dtype=torch.long),
                    attention_mask=torch.as_tensor(mask, dtype=torch.long),
                    position_ids=torch.as_tensor(positions, dtype=torch.long))

  def hf_forward():
    with torch.inference_mode():
      return hf_model(**torch_args, use_cache=False).logits

  hf_logits = hf_forward().numpy()  # warm-up
  hf_s = _best_time(hf_forward, f.repeats)
  tokens_per_call = f.batch * f.seq_len
  flops = flops_per_token(config, f.seq_len)
  return {
      "mode": "cpu_vs_hf_torch",
      "config": {**BENCH_HF_KWARGS, "batch": f.batch, "seq_len": f.seq_len, "dtype": "float32"},
      "torch_threads": torch.get_num_threads(),
      "ours_tokens_per_s": tokens_per_call / ours_s,
      "hf_tokens_per_s": tokens_per_call / hf_s,
      "ratio": hf_s / ours_s,
      "max_abs_logit_diff": float(np.abs(np.asarray(ours_logits) - hf_logits).max()),
      "ours_first_call_s_incl_compile": first_call_s,
      "ours_s": ours_s,
      "hf_s": hf_s,
      "flops_per_token": flops["total"],
      "ours_tflops_per_s": flops["total"] * tokens_per_call / ours_s / 1e12,
  }


def _peak_tflops(f: flags.FlagValues) -> float | None:
  if f.peak_tflops:
    return f.peak_tflops
  kind = jax.devices()[0].device_kind
  return next((v for (name, dtype), v in PEAK_TFLOPS.items() if name in kind and dtype == f.dtype), None)


def _accelerator(f: flags.FlagValues) -> dict:
  config = get_preset(f.preset).replace(dtype=f.dtype, param_dtype=f.dtype)
  mesh = sharding.make_mesh(sharding.MeshConfig(fsdp=jax.device_count()))
  start = time.perf_counter()
  model = init_sharded(config, mesh, seed=f.seed)
  init_s = time.perf_counter() - start
  tokens, positions, mask = _batch(f.batch, f.seq_len, config.vocab_size, f.seed)
  state, forward = _jitted_forward(model, mesh)
  with jax.set_mesh(mesh):
    args = [jnp.asarray(a) for a in (tokens, positions, mask)]
    start = time.perf_counter()
    jax.block_until_ready(forward(state, *args))
    first_call_s = time.perf_counter() - start
    best_s = _best_time(lambda: jax.block_until_ready(forward(state, *args)), f.repeats)
  tokens_per_s = f.batch * f.seq_len / best_s
  flops = flops_per_token(config, f.seq_len)
  achieved = flops["total"] * tokens_per_s / 1e12
  peak = _peak_tflops(f)
  return {
      "mode": "accelerator",
      "preset": f.preset,
      "dtype": f.dtype,
      "device_kind": jax.devices()[0].device_kind,
      "devices": jax.device_count(),
      "batch": f.batch,
      "seq_len": f.seq_len,
      "params": config.num_params,
      "prefill_tokens_per_s": tokens_per_s,
      "prefill_s": best_s,
      "flops_per_token": flops,
      "achieved_tflops_per_s": achieved,
      "peak_tflops_per_s": peak,
      "mfu": achieved / (peak * jax.device_count()) if peak else None,
      "first_call_s_incl_compile": first_call_s,
      "init_s_incl_compile": init_s,
  }


def run(argv: list[str]) -> dict:
  values = flags.FlagValues()
  _define_flags(values)
  values(["forward", *argv])
  return _accelerator(values) if values.preset else _cpu_vs_hf(values)
