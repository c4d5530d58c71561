"""Pure prefill and decode functions: jit them with the graphdef and configs static, params as an argument.

Prefill writes every prompt token but the last into a fresh KV cache and broadcasts it to G samples per prompt.
The decode loop (`jax.lax.while_loop`) then feeds one token per row and step, starting with each prompt's last
token, so the first generated token comes out of the same body as every later one. Prompts are left-padded, so the
last column is every row's last real token. Rows stop on their own (EOS, a stop sequence, or the length budget); the
loop ends when all rows are done.

Each row's randomness is `fold_in(fold_in(fold_in(key, row_id), sample_index), step)`: a row draws the same tokens
whatever batch it is in, as long as the caller gives it the same row id.
"""
from __future__ import annotations

from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
from flax import struct

from atommem_jax import sharding
from atommem_jax.model import KVCache, positions_from_mask
from atommem_jax.model.kv_cache import DecodeKV
from atommem_jax.sampling import law
from atommem_jax.sampling import stop as stop_lib
from atommem_jax.sampling.config import SamplerConfig, StopReason

CACHE_KV_AXES = ("layers", "batch", "cache_length", "act_kv_heads", "head_dim")
CACHE_MASK_AXES = ("batch", "cache_length")


@struct.dataclass
class DecodeResult:
  """Per generated row (R = prompts x samples, prompt-major): ids padded with pad_id, logprobs padded with 0.

  `logprobs_RxN` is log pi(token) under softmax(logits / temperature), no truncation (temperature 1 when greedy):
  the policy GRPO trains, so these are its pi_old.
  `sampling_logprobs_RxN` is the log-probability under the tempered, truncated distribution actually sampled
  (0 when greedy). `lengths_R` counts generated tokens including a final EOS; `stop_reason_R` holds `StopReason`s.
  """

  tokens_RxN: jax.Array
  logprobs_RxN: jax.Array
  sampling_logprobs_RxN: jax.Array
  lengths_R: jax.Array
  stop_reason_R: jax.Array


@struct.dataclass
class _LoopState:
  kv: DecodeKV
  tokens_RxN: jax.Array
  logprobs_RxN: jax.Array
  sampling_logprobs_RxN: jax.Array
  lengths_R: jax.Array
  stop_reason_R: jax.Array
  done_R: jax.Array
  last_token_R: jax.Array
  positions_R: jax.Array
  window_RxW: jax.Array
  step: jax.Array


def _constrain_cache(cache):
  return cache.replace(
      k_LxBxSxKxH=sharding.constrain(cache.k_LxBxSxKxH, CACHE_KV_AXES),
      v_LxBxSxKxH=sharding.constrain(cache.v_LxBxSxKxH, CACHE_KV_AXES),
      mask_BxS=sharding.constrain(cache.mask_BxS, CACHE_MASK_AXES))


def _repeat_rows(cache, num_samples: int):
  """The cache of B prompts as the cache of B*G rows, each prompt's G rows adjacent."""
  if num_samples == 1:
    return cache
  return cache.replace(
      k_LxBxSxKxH=jnp.repeat(cache.k_LxBxSxKxH, num_samples, axis=1),
      v_LxBxSxKxH=jnp.repeat(cache.v_LxBxSxKxH, num_samples, axis=1),
      mask_BxS=jnp.repeat(cache.mask_BxS, num_samples, axis=0))


def prefill(graphdef: nnx.GraphDef, params: nnx.State, tokens_BxP: jax.Array, mask_BxP: jax.Array, *,
            config: SamplerConfig, num_samples: int):
  """A KV cache of B*G rows holding every prompt token but the last, with room for `max_new_tokens` more."""
  model = nnx.merge(graphdef, params)
  batch, length = tokens_BxP.shape
  cache = KVCache.init(model.config, batch, length + config.max_new_tokens, config.cache_dtype)
  cache = _constrain_cache(cache)
  prefix_mask_BxT = mask_BxP[:, :-1]
  cache = model.prefill(tokens_BxP[:, :-1], positions_from_mask(prefix_mask_BxT), prefix_mask_BxT, cache)
  return _constrain_cache(_repeat_rows(cache, num_samples))


def row_keys(key: jax.Array, row_ids_B: jax.Array, num_samples: int) -> jax.Array:
  """One key per generated row: `fold_in(fold_in(key, row_id), sample_index)`, prompt-major."""
  def keys_of_prompt(row_id):
    prompt_key = jax.random.fold_in(key, row_id)
    return jax.vmap(lambda g: jax.random.fold_in(prompt_key, g))(jnp.arange(num_samples))
  keys_BxG = jax.vmap(keys_of_prompt)(row_ids_B)
  return keys_BxG.reshape((-1,) + keys_BxG.shape[2:])


def segment_bounds(budget: int, max_len: int) -> list[tuple[int, int]]:
  """`(end_step, slots)` of each decode segment: steps [previous end, end_step) attend over the first `slots` slots.

  Single-token attention reads every slot of its (fixed-shape) cache, so the loop runs in up to `_MAX_SEGMENTS`
  segments over a cache that grows between them, each sized for the slots its last step can have written: on average
  much less than the whole cache. The decode writes at most `budget` slots after `index <= max_len - budget`, which
  bounds the slots written before step `end_step` by `max_len - budget + end_step`, whatever the traced index is.
  """
  segments = max(1, min(_MAX_SEGMENTS, budget // _MIN_SEGMENT_STEPS))
  ends = [budget * (i + 1) // segments for i in range(segments)]
  return [(end, max_len - budget + end) for end in ends]


# More segments attend over fewer empty slots but compile one more loop body each.
_MAX_SEGMENTS = 4
_MIN_SEGMENT_STEPS = 32


def decode(graphdef: nnx.GraphDef, params: nnx.State, cache, last_token_B: jax.Array, prompt_lengths_B: jax.Array,
           active_B: jax.Array, row_ids_B: jax.Array, key: jax.Array, eos_ids_E: jax.Array, stop_table_SxW: jax.Array,
           *, config: SamplerConfig, num_samples: int) -> tuple[DecodeResult, Any]:
  """Generates up to `max_new_tokens` per row from a prefilled cache.

  Returns the result and the final cache (`KVCache`, holding every generated token; a caller may continue from it).
  The loop itself runs on `model.decode_weights()` and a `DecodeKV` (see `segment_bounds`).
  """
  repeat = lambda x: jnp.repeat(x, num_samples, axis=0)
  rows = last_token_B.shape[0] * num_samples
  budget = config.max_new_tokens
  keys_R = row_keys(key, row_ids_B, num_samples)
  batch_axes = ("batch", None)
  model = nnx.merge(graphdef, params)
  weights = model.decode_weights()
  if budget > cache.max_len:
    raise ValueError(f"{budget} new tokens do not fit a KV cache of {cache.max_len} slots")
  segments = segment_bounds(budget, cache.max_len)

  def body(state: _LoopState) -> _LoopState:
    feed_mask_R = ~state.done_R
    logits_RxV, kv = model.decode_step(weights, state.last_token_R, state.positions_R, feed_mask_R, state.kv)
    logits_RxV = logits_RxV.astype(jnp.float32)
    step_keys_R = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys_R, state.step)
    tokens_R, sampling_logprobs_R = law.sample_tokens(
        logits_RxV, step_keys_R, greedy=config.greedy, temperature=config.temperature, top_k=config.top_k,
        top_p=config.top_p)
    logprobs_R = law.token_logprobs(logits_RxV, tokens_R, config.policy_temperature)
    live_R = ~state.done_R
    tokens_R = jnp.where(live_R, tokens_R, config.pad_id)

    def write(buffer_RxN, value_R):
      # Rows that are already done keep their padding.
      old_Rx1 = jax.lax.dynamic_slice_in_dim(buffer_RxN, state.step, 1, axis=1)
      new_Rx1 = jnp.where(live_R[:, None], value_R[:, None].astype(buffer_RxN.dtype), old_Rx1)
      return jax.lax.dynamic_update_slice_in_dim(buffer_RxN, new_Rx1, state.step, axis=1)

    window_RxW = stop_lib.push_token(state.window_RxW, tokens_R)
    hit_eos_R = live_R & jnp.isin(tokens_R, eos_ids_E)
    hit_stop_R = live_R & ~hit_eos_R & stop_lib.matches_stop(window_RxW, stop_table_SxW)
    hit_length_R = live_R & ~hit_eos_R & ~hit_stop_R & (state.step + 1 >= budget)
    stop_reason_R = jnp.select(
        [hit_eos_R, hit_stop_R, hit_length_R],
        [jnp.int32(StopReason.EOS), jnp.int32(StopReason.STOP), jnp.int32(StopReason.LENGTH)], state.stop_reason_R)
    return _LoopState(
        kv=kv.constrain(),
        tokens_RxN=sharding.constrain(write(state.tokens_RxN, tokens_R), batch_axes),
        logprobs_RxN=write(state.logprobs_RxN, logprobs_R),
        sampling_logprobs_RxN=write(state.sampling_logprobs_RxN, sampling_logprobs_R),
        lengths_R=state.lengths_R + live_R.astype(jnp.int32),
        stop_reason_R=stop_reason_R,
        done_R=state.done_R | hit_eos_R | hit_stop_R | hit_length_R,
        last_token_R=tokens_R,
        positions_R=state.positions_R + 1,
        window_RxW=window_RxW,
        step=state.step + 1)

  initial = _LoopState(
      kv=DecodeKV.from_cache(cache, segments[0][1]).constrain(),
      tokens_RxN=jnp.full((rows, budget), config.pad_id, jnp.int32),
      logprobs_RxN=jnp.zeros((rows, budget), jnp.float32),
      sampling_logprobs_RxN=jnp.zeros((rows, budget), jnp.float32),
      lengths_R=jnp.zeros((rows,), jnp.int32),
      stop_reason_R=jnp.full((rows,), int(StopReason.NOT_STOPPED), jnp.int32),
      done_R=~repeat(active_B),
      last_token_R=repeat(last_token_B).astype(jnp.int32),
      positions_R=repeat(prompt_lengths_B).astype(jnp.int32) - 1,
      window_RxW=stop_lib.initial_window(rows, stop_table_SxW.shape[1]),
      step=jnp.zeros((), jnp.int32))
  state = initial
  for end_step, slots in segments:
    cond = lambda state, end_step=end_step: (state.step < end_step) & ~jnp.all(state.done_R)
    state = jax.lax.while_loop(cond, body, state.replace(kv=state.kv.grow(slots).constrain()))
  return DecodeResult(state.tokens_RxN, state.logprobs_RxN, state.sampling_logprobs_RxN, state.lengths_R,
                      state.stop_reason_R), _constrain_cache(state.kv.to_cache(cache.max_len))
