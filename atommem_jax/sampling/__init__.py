"""Jitted batched generation with logprobs, and chat formatting.

Public API:
  SamplerConfig, StopReason                  -- frozen settings (`configlib.from_dict`); why each row stopped
  Sampler(model, config, *, tokenizer=None, mesh=None).generate(prompt_ids, *, num_samples=1, seed=0,
          row_ids=None, params=None) -> SampleOutput
                                             -- one compilation per (prompt bucket, batch bucket, num_samples);
                                                `sampler.params = new_state` swaps weights without recompiling
  SampleOutput                               -- tokens_RxN, logprobs_RxN (softmax(logits / T): GRPO's pi_old),
                                                sampling_logprobs_RxN, lengths_R, stop_reasons_R, texts, token_ids(r)
  decode.prefill, decode.decode              -- the pure functions behind it (graphdef and configs static)
  law.sample_tokens, law.truncated_logits    -- greedy / temperature / top-k / top-p draws
  chat.chat_text, chat.chat_prompt_ids, chat.user_prompt_ids
                                             -- the tokenizer's chat template
"""
from atommem_jax.sampling.config import SamplerConfig, StopReason
from atommem_jax.sampling.sampler import SampleOutput, Sampler

__all__ = ["SamplerConfig", "StopReason", "SampleOutput", "Sampler"]
