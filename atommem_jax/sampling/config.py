"""The sampler's frozen config and the codes that say why a row stopped."""
from __future__ import annotations

import dataclasses
import enum


class StopReason(enum.IntEnum):
  """Why a generated row ended; `NOT_STOPPED` only appears for batch-padding rows that were never active."""

  NOT_STOPPED = 0
  EOS = 1
  STOP = 2
  LENGTH = 3


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """How to sample. Build it with `configlib.from_dict(SamplerConfig, config_dict)`.

  Attributes:
    max_new_tokens: generation budget per row; rows that reach it stop with `StopReason.LENGTH`.
    temperature: softmax temperature of the sampling distribution (ignored when `greedy`).
    top_k: keep only the k most likely tokens; 0 turns it off.
    top_p: keep the smallest set of most likely tokens whose mass reaches top_p; 1.0 turns it off.
    greedy: argmax decoding (the evaluation setting).
    prompt_buckets: prompts are left-padded to the smallest bucket that fits them, so the number of compilations
      is bounded by the number of buckets; a prompt longer than the largest bucket is an error.
    batch_buckets: the batch (prompts) is padded with inactive rows up to the smallest of these that fits, for the
      same reason; empty means: the next power of two.
    stop_strings: generation stops once the generated text contains one of these; the returned text ends exactly
      at the end of the first occurrence (the stop string is kept, as the agent's tags must stay parseable).
    eos_ids: token ids that end a row (kept in the output: the policy produced them and GRPO scores them); empty
      means rows end only at a stop string or the length budget (callers pass the tokenizer's EOS explicitly).
    pad_id: the id written into prompt padding and after a row has stopped.
    cache_dtype: dtype of the KV cache ("float32" or "bfloat16"); None uses the model's activation dtype.
    wave_rows: the most generated rows (prompts x samples) one prefill and decode call holds; a larger batch runs
      as consecutive waves of this many, so the batch size does not decide whether the KV cache fits. 0 = the whole
      batch at once.
  """

  max_new_tokens: int = 256
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  greedy: bool = False
  prompt_buckets: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
  batch_buckets: tuple[int, ...] = ()
  stop_strings: tuple[str, ...] = ()
  eos_ids: tuple[int, ...] = ()
  pad_id: int = 0
  cache_dtype: str | None = None
  wave_rows: int = 0

  @property
  def policy_temperature(self) -> float:
    """The temperature of the policy whose log-probabilities `logprobs_RxN` reports (1 for greedy decoding)."""
    return 1.0 if self.greedy else self.temperature

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"SamplerConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}")
    if not self.greedy and not self.temperature > 0:
      raise ValueError(f"SamplerConfig.temperature must be > 0 when sampling, got {self.temperature}")
    if self.top_k < 0:
      raise ValueError(f"SamplerConfig.top_k must be >= 0 (0 = off), got {self.top_k}")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"SamplerConfig.top_p must be in (0, 1], got {self.top_p}")
    if not self.prompt_buckets or list(self.prompt_buckets) != sorted(set(self.prompt_buckets)):
      raise ValueError(f"SamplerConfig.prompt_buckets must be non-empty and strictly increasing, got {self.prompt_buckets}")
    if self.prompt_buckets[0] < 2:
      raise ValueError(f"SamplerConfig.prompt_buckets must all be >= 2, got {self.prompt_buckets}")
    if list(self.batch_buckets) != sorted(set(self.batch_buckets)) or any(b < 1 for b in self.batch_buckets):
      raise ValueError(f"SamplerConfig.batch_buckets must be positive and strictly increasing, got {self.batch_buckets}")
    if any(not s for s in self.stop_strings):
      raise ValueError("SamplerConfig.stop_strings must not contain the empty string")
    if self.wave_rows < 0:
      raise ValueError(f"SamplerConfig.wave_rows must be >= 0 (0 = the whole batch at once), got {self.wave_rows}")
    if self.cache_dtype not in (None, "float32", "bfloat16"):
      raise ValueError(f"SamplerConfig.cache_dtype must be 'float32' or 'bfloat16', got {self.cache_dtype!r}")
