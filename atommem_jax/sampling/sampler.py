"""`Sampler`: the object rollouts and evaluation call many times, with prompts of any length.

It splits the model once (graphdef static, params an argument, so the trainer can pass new params without a
recompile), pads prompts to a length bucket and the batch to a batch bucket (one compilation per bucket pair and
sample count), runs the jitted prefill and the jitted decode loop (which donates the cache), and applies the exact
stop-string cut on the host.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.nnx as nnx
import jax
import numpy as np
from jax.sharding import Mesh

from atommem_jax import sharding
from atommem_jax.model import KVCache, param_shardings
from atommem_jax.sampling import batching
from atommem_jax.sampling import decode as decode_lib
from atommem_jax.sampling import stop as stop_lib
from atommem_jax.sampling.config import SamplerConfig, StopReason


@dataclasses.dataclass(frozen=True)
class SampleOutput:
  """Host copies of one `generate` call. Rows are prompt-major: row `p * num_samples + g` is sample g of prompt p.

  `tokens_RxN` are generated ids only, padded with pad_id after `lengths_R`; a final EOS is included (and counted in
  the length) because the policy produced it. `logprobs_RxN` is log pi(token) under softmax(logits / temperature),
  no top-k/top-p (temperature 1 when greedy): the policy GRPO trains, so its pi_old. `sampling_logprobs_RxN` is under
  the distribution actually sampled (0 for greedy). `texts` (with a tokenizer) are the decoded rows without the EOS,
  cut just after the first stop string.
  """

  tokens_RxN: np.ndarray
  logprobs_RxN: np.ndarray
  sampling_logprobs_RxN: np.ndarray
  lengths_R: np.ndarray
  stop_reasons_R: np.ndarray
  num_samples: int
  texts: list[str] | None = None

  def token_ids(self, row: int, *, include_eos: bool = True) -> list[int]:
    length = int(self.lengths_R[row])
    if not include_eos and self.stop_reasons_R[row] == StopReason.EOS:
      length -= 1
    return self.tokens_RxN[row, :length].tolist()


class Sampler:
  """Batched generation with logprobs; see `SampleOutput` for what comes back.

  Args:
    model: the NNX Qwen3 (its params are copied out once; pass `params=` to `generate` to use newer ones).
    config: the sampling settings.
    tokenizer: an HF tokenizer; needed for stop strings and texts.
    mesh: a (data, fsdp, tensor) mesh; rows shard over data x fsdp, heads over tensor.
  """

  def __init__(self, model: nnx.Module, config: SamplerConfig, *, tokenizer: Any = None, mesh: Mesh | None = None,
               rules: sharding.ShardingRules = sharding.DEFAULT_RULES):
    self.config = config
    self.tokenizer = tokenizer
    self.mesh = mesh
    self.rules = rules
    self.graphdef, self.params = nnx.split(model)
    self.vocab_size = int(model.config.vocab_size)
    if config.stop_strings and tokenizer is None:
      raise ValueError(f"stop strings {config.stop_strings} need a tokenizer to be matched")
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)
    self.stop_table_SxW = stop_lib.stop_sequences_table(config.stop_strings, encode)
    self.eos_ids_E = np.asarray(config.eos_ids or (-1,), np.int32)  # -1 matches no token
    self._batch_shards = 1
    if mesh is not None and mesh.is_multi_process:
      raise ValueError(f"the sampler's mesh spans {len({d.process_index for d in mesh.devices.flat})} processes; "
                       f"its outputs are fetched to the host, so give it a process-local mesh "
                       f"(distributed.local_mesh)")
    if mesh is not None:
      spec = rules.spec(("batch",))[0]
      self._batch_shards = int(np.prod([mesh.shape[a] for a in ((spec,) if isinstance(spec, str) else spec or ())]))
      self.params = jax.device_put(self.params, param_shardings(self.params, mesh, rules))
    self._jitted: dict[int, tuple[Callable, Callable]] = {}
    self.trace_count = 0  # incremented each time prefill or decode is traced: the number of compilations

  def functions(self, num_samples: int) -> tuple[Callable, Callable]:
    """The jitted `prefill(params, tokens_BxP, mask_BxP) -> cache` and `decode(params, cache, last_token_B,
    prompt_lengths_B, active_B, row_ids_B, key, eos_ids_E, stop_table_SxW) -> (DecodeResult, cache)` for G samples
    (decode donates its cache); built once per G."""
    if num_samples not in self._jitted:
      def counted(fn):
        @functools.wraps(fn)
        def wrapper(*args):
          self.trace_count += 1
          return fn(*args)
        return wrapper

      params = None if self.mesh is None else param_shardings(self.params, self.mesh, self.rules)
      self._jitted[num_samples] = jitted_functions(self.graphdef, self.config, num_samples, mesh=self.mesh,
                                                   rules=self.rules, params_sharding=params, wrap=counted)
    return self._jitted[num_samples]

  def generate(self, prompt_ids: Sequence[Sequence[int]], *, num_samples: int = 1, seed: int = 0,
               row_ids: Sequence[int] | None = None, params: nnx.State | None = None) -> SampleOutput:
    """Samples `num_samples` continuations of every prompt.

    `row_ids` (one per prompt, default 0..P-1) seed each prompt's randomness: a prompt with the same row id and seed
    gets the same samples in any batch, and so in any wave (`SamplerConfig.wave_rows`).
    """
    if num_samples < 1:
      raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    row_ids = list(range(len(prompt_ids)) if row_ids is None else row_ids)
    if len(row_ids) != len(prompt_ids):
      raise ValueError(f"row_ids has {len(row_ids)} entries for {len(prompt_ids)} prompts")
    wave, batch_buckets = self.waves(len(prompt_ids), num_samples)
    waves = [self._generate_wave(prompt_ids[i:i + wave], row_ids[i:i + wave], num_samples, seed, params,
                                 batch_buckets) for i in range(0, max(len(prompt_ids), 1), wave)]
    output = waves[0] if len(waves) == 1 else SampleOutput(
        *(np.concatenate([getattr(w, f) for w in waves]) for f in
          ("tokens_RxN", "logprobs_RxN", "sampling_logprobs_RxN", "lengths_R", "stop_reasons_R")),
        num_samples=num_samples)
    return self._cut_on_host(output) if self.tokenizer is not None else output

  def waves(self, num_prompts: int, num_samples: int = 1) -> tuple[int, tuple[int, ...]]:
    """How `generate` runs `num_prompts` prompts: waves of this many prompts (the last may be shorter), each
    padded to one of these batch buckets."""
    if self.config.wave_rows and num_prompts * num_samples > self.config.wave_rows:
      wave = max(1, self.config.wave_rows // num_samples)
      # Every wave, the last one too, pads to the same batch: one compilation.
      return wave, (batching.batch_bucket(wave, self.config.batch_buckets, self._batch_shards),)
    return max(num_prompts, 1), tuple(self.config.batch_buckets)  # no prompts: `left_pad` says so

  def _generate_wave(self, prompt_ids: Sequence[Sequence[int]], row_ids: Sequence[int], num_samples: int, seed: int,
                     params: nnx.State | None, batch_buckets: Sequence[int]) -> SampleOutput:
    padded, row_ids_B = self.pad(prompt_ids, row_ids, batch_buckets=batch_buckets)
    result = self.generate_padded(padded, row_ids_B, num_samples=num_samples, seed=seed, params=params)
    result = jax.device_get(result)
    rows = padded.num_prompts * num_samples
    return SampleOutput(
        tokens_RxN=np.array(result.tokens_RxN[:rows]), logprobs_RxN=np.array(result.logprobs_RxN[:rows]),
        sampling_logprobs_RxN=np.array(result.sampling_logprobs_RxN[:rows]),
        lengths_R=np.array(result.lengths_R[:rows]), stop_reasons_R=np.array(result.stop_reason_R[:rows]),
        num_samples=num_samples)

  def pad(self, prompt_ids: Sequence[Sequence[int]], row_ids: Sequence[int] | None = None, *,
          batch_buckets: Sequence[int] | None = None) -> tuple[batching.PaddedPrompts, np.ndarray]:
    """One wave's prompts (`waves`) left-padded to their length bucket and the batch to its bucket (default: the
    config's batch buckets), as `generate` runs them, and the row ids (default 0..P-1) padded with 0."""
    batch_buckets = self.config.batch_buckets if batch_buckets is None else batch_buckets
    padded = batching.left_pad(prompt_ids, length_buckets=self.config.prompt_buckets,
                               batch_buckets=batch_buckets, batch_multiple_of=self._batch_shards,
                               pad_id=self.config.pad_id, vocab_size=self.vocab_size)
    if row_ids is None:
      row_ids = range(padded.num_prompts)
    if len(row_ids) != padded.num_prompts:
      raise ValueError(f"row_ids has {len(row_ids)} entries for {padded.num_prompts} prompts")
    row_ids_B = np.zeros((padded.tokens_BxP.shape[0],), np.int32)
    row_ids_B[:padded.num_prompts] = row_ids
    return padded, row_ids_B

  def generate_padded(self, padded: batching.PaddedPrompts, row_ids_B: np.ndarray, *, num_samples: int = 1,
                      seed: int = 0, params: nnx.State | None = None) -> decode_lib.DecodeResult:
    """`generate` on `pad`'s output, without the host-side stop-string cut; the result stays on the device."""
    prefill, decode = self.functions(num_samples)
    params = self.params if params is None else params
    with jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext():
      cache = prefill(params, padded.tokens_BxP, padded.mask_BxP)
      result, _ = decode(params, cache, padded.tokens_BxP[:, -1], padded.lengths_B, padded.active_B, row_ids_B,
                         jax.random.key(seed), self.eos_ids_E, self.stop_table_SxW)
    return result

  def _cut_on_host(self, output: SampleOutput) -> SampleOutput:
    """Decodes rows and cuts each exactly after its first stop string (dropping the tokens after it)."""
    decode_text = lambda ids: self.tokenizer.decode(list(ids), skip_special_tokens=False)
    texts = []
    for row in range(output.tokens_RxN.shape[0]):
      ids = output.token_ids(row, include_eos=False)
      cut = stop_lib.cut_at_stop(ids, decode_text, self.config.stop_strings)
      if cut is None:
        texts.append(decode_text(ids))
        continue
      keep, text = cut
      texts.append(text)
      output.tokens_RxN[row, keep:] = self.config.pad_id
      output.logprobs_RxN[row, keep:] = 0.0
      output.sampling_logprobs_RxN[row, keep:] = 0.0
      output.lengths_R[row] = keep
      output.stop_reasons_R[row] = StopReason.STOP
    return dataclasses.replace(output, texts=texts)


def jitted_functions(graphdef: nnx.GraphDef, config: SamplerConfig, num_samples: int, *, mesh: Mesh | None = None,
                     rules: sharding.ShardingRules = sharding.DEFAULT_RULES, params_sharding: Any = None,
                     wrap: Callable[[Callable], Callable] = lambda fn: fn) -> tuple[Callable, Callable]:
  """`Sampler.functions` for a graphdef: prefill and decode jitted, with explicit shardings on a mesh (the
  parameters' given as `params_sharding`); `wrap` sees each Python function before it is jitted."""
  prefill = wrap(functools.partial(decode_lib.prefill, graphdef, config=config, num_samples=num_samples))
  decode = wrap(functools.partial(decode_lib.decode, graphdef, config=config, num_samples=num_samples))
  if mesh is None:
    return jax.jit(prefill), jax.jit(decode, donate_argnums=1)
  named = lambda *axes: rules.named(mesh, axes)
  cache = KVCache.shardings(mesh, rules)
  rows, replicated = named("batch"), named()
  return (
      jax.jit(prefill, in_shardings=(params_sharding, named("batch", None), named("batch", None)),
              out_shardings=cache),
      jax.jit(decode, donate_argnums=1,
              in_shardings=(params_sharding, cache, rows, rows, rows, rows, replicated, replicated, replicated),
              out_shardings=(decode_lib.DecodeResult(named("batch", None), named("batch", None),
                                                     named("batch", None), rows, rows), cache)))
