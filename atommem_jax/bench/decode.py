"""Decode speed: `python -m atommem_jax.bench decode --json`.

CPU mode (default): our jitted sampler against HF torch `generate` on the same tiny random Qwen3 weights (greedy,
batch 8, 256 new tokens), with tokens/s, whether the generated ids are identical, and the ratio.

Accelerator mode (`--preset qwen3_1_7b --batch 64 --dtype bfloat16`): decode tokens/s of random weights and the
fraction of the memory-bandwidth roofline, counting per step the bytes of every parameter plus the whole KV cache
over the step time and `--peak_bandwidth_gbps` (an overestimate of the bytes: the segmented decode loop reads only the
cache slots its segment can have written, see `sampling.decode.segment_bounds`).
"""
from __future__ import annotations

import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from atommem_jax.sampling import batching
from atommem_jax.sampling.config import SamplerConfig
from atommem_jax.sampling.sampler import Sampler

# The comparison config: small enough for a CPU, big enough that per-step framework overhead is not everything.
BENCH_HF_KWARGS = dict(vocab_size=2048, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=2048,
                       rms_norm_eps=1e-6, rope_theta=10_000.0, tie_word_embeddings=True,
                       # wide init: large argmax margins, so identical ids are a meaningful check.
                       initializer_range=0.2)


def _define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_bool("json", False, "print one JSON object (handled by the dispatcher)", flag_values=values)
  flags.DEFINE_string("preset", None, "a Qwen3 preset name: accelerator mode (random weights, no HF reference)",
                      flag_values=values)
  flags.DEFINE_integer("batch", 8, "rows decoded together", flag_values=values)
  flags.DEFINE_integer("prompt_len", 32, "longest prompt (others are shorter, left-padded)", flag_values=values)
  flags.DEFINE_integer("max_new_tokens", 256, "tokens generated per row", flag_values=values)
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "params, activations and cache", flag_values=values)
  flags.DEFINE_float("peak_bandwidth_gbps", 4800.0, "accelerator memory bandwidth (H200: 4800)", flag_values=values)
  flags.DEFINE_integer("repeats", 3, "timed runs of each side (the best is reported)", flag_values=values)
  flags.DEFINE_integer("seed", 0, "weights and prompts", flag_values=values)


def _prompts(batch: int, max_len: int, vocab: int, seed: int) -> list[list[int]]:
  rng = np.random.default_rng(seed)
  lengths = np.linspace(max(1, max_len // 2), max_len, batch).astype(int)
  return [rng.integers(1, vocab, n).tolist() for n in lengths]


def _best_of(fn, repeats: int) -> tuple[float, float]:
  """The best wall time and the best process CPU time (all threads) of `repeats` runs of `fn`."""
  best_wall, best_cpu = float("inf"), float("inf")
  for _ in range(repeats):
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    best_wall, best_cpu = min(best_wall, time.perf_counter() - start), min(best_cpu, time.process_time() - cpu_start)
  return best_wall, best_cpu


def _cpu_vs_hf(f: flags.FlagValues) -> dict:
  import torch
  from transformers import Qwen3Config as HFQwen3Config
  from transformers import Qwen3ForCausalLM

  from atommem_jax.checkpoint import load_hf

  torch.manual_seed(f.seed)
  hf_model = Qwen3ForCausalLM(HFQwen3Config(**BENCH_HF_KWARGS)).eval()
  with tempfile.TemporaryDirectory() as tmp:
    hf_model.save_pretrained(tmp)
    _, model = load_hf(tmp)
  prompts = _prompts(f.batch, f.prompt_len, BENCH_HF_KWARGS["vocab_size"], f.seed)
  config = SamplerConfig(max_new_tokens=f.max_new_tokens, greedy=True, prompt_buckets=(f.prompt_len,), pad_id=0)
  sampler = Sampler(model, config)
  start = time.perf_counter()
  ours = sampler.generate(prompts)
  first_call_s = time.perf_counter() - start
  ours_s, ours_cpu_s = _best_of(lambda: sampler.generate(prompts), f.repeats)

  padded = batching.left_pad(prompts, length_buckets=(f.prompt_len,), batch_buckets=(f.batch,), batch_multiple_of=1,
                             pad_id=0, vocab_size=BENCH_HF_KWARGS["vocab_size"])
  input_ids = torch.as_tensor(padded.tokens_BxP, dtype=torch.long)
  attention_mask = torch.as_tensor(padded.mask_BxP, dtype=torch.long)

  def hf_generate(new_tokens):
    with torch.inference_mode():
      return hf_model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                               max_new_tokens=new_tokens, min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0)

  # HF gets its best thread count: on a small shared machine one intra-op thread is often much faster than the
  # default, whose threads spin waiting for each other.
  default_threads = torch.get_num_threads()
  probe_s = {}
  for threads in sorted({1, default_threads}):
    torch.set_num_threads(threads)
    hf_generate(2)
    probe_s[threads] = _best_of(lambda: hf_generate(16), 1)[0]
  hf_threads = min(probe_s, key=probe_s.get)
  torch.set_num_threads(hf_threads)
  hf_ids = hf_generate(f.max_new_tokens)[:, f.prompt_len:].numpy()
  hf_s, hf_cpu_s = _best_of(lambda: hf_generate(f.max_new_tokens), f.repeats)
  torch.set_num_threads(default_threads)

  tokens = f.batch * f.max_new_tokens
  ours_ids = ours.tokens_RxN[:, :f.max_new_tokens]
  return {
      "mode": "cpu_vs_hf_torch",
      "config": {**BENCH_HF_KWARGS, "batch": f.batch, "prompt_len": f.prompt_len, "max_new_tokens": f.max_new_tokens,
                 "greedy": True, "dtype": "float32"},
      "ours_tokens_per_s": tokens / ours_s,
      "hf_tokens_per_s": tokens / hf_s,
      "ratio": hf_s / ours_s,
      # Process CPU seconds (all threads): less sensitive than wall time to other load on a shared machine.
      "ours_cpu_s": ours_cpu_s,
      "hf_cpu_s": hf_cpu_s,
      "cpu_time_ratio": hf_cpu_s / ours_cpu_s,
      "identical_tokens": bool(np.array_equal(ours_ids, hf_ids)),
      "token_agreement": float(np.mean(ours_ids == hf_ids)),
      "hf_threads": hf_threads,
      "hf_probe_s_by_threads": {str(k): v for k, v in probe_s.items()},
      "ours_first_call_s_incl_compile": first_call_s,
      "ours_s": ours_s,
      "hf_s": hf_s,
      "load_average_1min": os.getloadavg()[0],
      "cpu_count": os.cpu_count(),
  }


def _accelerator(f: flags.FlagValues) -> dict:
  from flax import nnx

  from atommem_jax.model import Qwen3, get_preset

  model_config = get_preset(f.preset).replace(dtype=f.dtype, param_dtype=f.dtype)
  model = Qwen3(model_config, rngs=nnx.Rngs(f.seed))
  prompts = _prompts(f.batch, f.prompt_len, model_config.vocab_size, f.seed)
  config = SamplerConfig(max_new_tokens=f.max_new_tokens, greedy=True, prompt_buckets=(f.prompt_len,), pad_id=0)
  sampler = Sampler(model, config)
  padded = batching.left_pad(prompts, length_buckets=(f.prompt_len,), batch_buckets=(f.batch,), batch_multiple_of=1,
                             pad_id=0, vocab_size=model_config.vocab_size)
  prefill, decode = sampler.functions(1)
  arrays = [jnp.asarray(a) for a in (padded.tokens_BxP, padded.mask_BxP, padded.tokens_BxP[:, -1], padded.lengths_B,
                                     padded.active_B, np.arange(f.batch, dtype=np.int32))]
  tokens_BxP, mask_BxP, last_B, lengths_B, active_B, row_ids_B = arrays
  key, eos, stops = jax.random.key(0), jnp.asarray(sampler.eos_ids_E), jnp.asarray(sampler.stop_table_SxW)

  def run_prefill():
    return jax.block_until_ready(prefill(sampler.params, tokens_BxP, mask_BxP))

  def run_decode(cache):
    return jax.block_until_ready(decode(sampler.params, cache, last_B, lengths_B, active_B, row_ids_B, key, eos,
                                        stops))

  start = time.perf_counter()
  run_decode(run_prefill())
  compile_s = time.perf_counter() - start
  prefill_s, decode_s = float("inf"), float("inf")
  for _ in range(f.repeats):
    start = time.perf_counter()
    cache = run_prefill()
    middle = time.perf_counter()
    result, _ = run_decode(cache)
    end = time.perf_counter()
    prefill_s, decode_s = min(prefill_s, middle - start), min(decode_s, end - middle)
  steps = int(np.max(np.asarray(result.lengths_R)))
  step_s = decode_s / steps
  param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(sampler.params))
  cache_slots = f.prompt_len + f.max_new_tokens
  itemsize = jnp.dtype(f.dtype).itemsize
  cache_bytes = (2 * model_config.num_layers * f.batch * cache_slots * model_config.num_kv_heads *
                 model_config.head_dim * itemsize)
  bytes_per_step = param_bytes + cache_bytes
  return {
      "mode": "accelerator",
      "device": str(jax.devices()[0].device_kind),
      "preset": f.preset, "batch": f.batch, "prompt_len": f.prompt_len, "max_new_tokens": f.max_new_tokens,
      "dtype": f.dtype,
      "decode_tokens_per_s": f.batch * steps / decode_s,
      "decode_step_ms": step_s * 1e3,
      "prefill_s": prefill_s,
      "compile_and_first_run_s": compile_s,
      "param_bytes": int(param_bytes),
      "kv_cache_bytes": int(cache_bytes),
      "achieved_bandwidth_gbps": bytes_per_step / step_s / 1e9,
      "peak_bandwidth_gbps": f.peak_bandwidth_gbps,
      "roofline_fraction": bytes_per_step / step_s / 1e9 / f.peak_bandwidth_gbps,
  }


def run(argv: list[str]) -> dict:
  values = flags.FlagValues()
  _define_flags(values)
  values(["decode"] + list(argv))
  if values.preset is None:
    return _cpu_vs_hf(values)
  return _accelerator(values)
