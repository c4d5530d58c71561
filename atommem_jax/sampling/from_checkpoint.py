"""Generation straight from a checkpoint directory: the work behind `python -m atommem_jax.generate`.

DIR is any directory `checkpoint.loader.resolve` reads (a transformers Qwen3 directory, an Orbax parameter directory
written by `atommem_jax.convert`, a trainer workdir); the tokenizer is the checkpoint's, and generation stops at the
loader's stop ids (the tokenizer's EOS and those of its generation_config.json).
"""
from __future__ import annotations

import pathlib
from typing import Sequence


def generate_from_dir(model_dir: str, prompts: Sequence[str], *, max_new_tokens: int, greedy: bool, temperature: float,
             top_k: int, top_p: float, num_samples: int, stop: Sequence[str], seed: int, chat: bool,
             attention: str = "auto") -> list[dict]:
  """Loads DIR (HF or Orbax, with its tokenizer) and generates with `attention` (a `Qwen3Config.attention`): one
  dict per prompt and sample, prompt-major."""
  import flax.nnx as nnx

  from atommem_jax.checkpoint import loader
  from atommem_jax.model import abstract_model
  from atommem_jax.sampling import chat as chat_lib
  from atommem_jax.sampling.config import SamplerConfig, StopReason
  from atommem_jax.sampling.sampler import Sampler

  directory = pathlib.Path(model_dir)
  if not directory.is_dir():
    raise ValueError(f"--model {model_dir} is not a directory")
  if not prompts:
    raise ValueError("give at least one --prompt")
  if max_new_tokens < 1:
    raise ValueError(f"--max_new_tokens must be at least 1, got {max_new_tokens}")
  checkpoint = loader.resolve(directory, field="--model")
  positions = checkpoint.model_config.max_position_embeddings
  tokenizer = loader.load_tokenizer("", checkpoint)
  if chat:
    prompt_ids = [chat_lib.user_prompt_ids(tokenizer, text) for text in prompts]
  else:
    prompt_ids = [tokenizer.encode(text, add_special_tokens=False) for text in prompts]
  for index, ids in enumerate(prompt_ids):
    if not ids:
      raise ValueError(f"--prompt {index} ({prompts[index]!r}) tokenizes to no tokens")
  longest = max(len(ids) for ids in prompt_ids)
  if longest + max_new_tokens > positions:
    raise ValueError(f"--max_new_tokens {max_new_tokens} after the longest prompt ({longest} tokens) needs "
                     f"{longest + max_new_tokens} positions; the model in {directory} has {positions} "
                     f"(max_position_embeddings): use --max_new_tokens {max(positions - longest, 0)} or less")
  model = loader.load_model(checkpoint)
  model = nnx.merge(abstract_model(model.config.replace(attention=attention))[0], nnx.state(model))
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
  # Powers of two from 64 up to the first that fits the longest prompt.
  buckets = tuple(2 ** i for i in range(6, max(6, (longest - 1).bit_length()) + 1))
  config = SamplerConfig(max_new_tokens=max_new_tokens, greedy=greedy, temperature=temperature, top_k=top_k,
                         top_p=top_p, prompt_buckets=buckets, stop_strings=tuple(stop),
                         eos_ids=loader.stop_ids(tokenizer, checkpoint.tokenizer_dir), pad_id=tokenizer.pad_token_id)
  sampler = Sampler(model, config, tokenizer=tokenizer)
  output = sampler.generate(prompt_ids, num_samples=num_samples, seed=seed)
  rows = []
  for row in range(output.tokens_RxN.shape[0]):
    rows.append({
        "prompt_index": row // num_samples,
        "sample_index": row % num_samples,
        "prompt": prompts[row // num_samples],
        "token_ids": output.token_ids(row, include_eos=False),
        "text": output.texts[row],
        "stop_reason": StopReason(int(output.stop_reasons_R[row])).name.lower(),
    })
  return rows
