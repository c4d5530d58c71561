"""Small real checkpoints made by `transformers` itself, the reference we test against."""
from __future__ import annotations

import pathlib

TINY_HF_KWARGS = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=1024,
    rms_norm_eps=1e-6,
    # A wide init keeps greedy argmax margins far above float noise, so token-level parity is meaningful.
    initializer_range=0.2,
)


def make_tiny_hf_checkpoint(path: str | pathlib.Path, *, tied: bool = True, rope_theta: float = 10_000.0,
                            seed: int = 0, max_shard_size: str | None = None, **overrides):
  """Saves a random tiny Qwen3ForCausalLM with `save_pretrained` and returns the torch model (eval mode, fp32)."""
  import torch
  from transformers import Qwen3Config, Qwen3ForCausalLM

  kwargs = dict(TINY_HF_KWARGS, tie_word_embeddings=tied, rope_theta=rope_theta, **overrides)
  torch.manual_seed(seed)
  model = Qwen3ForCausalLM(Qwen3Config(**kwargs)).eval()
  save_kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
  model.save_pretrained(str(path), **save_kwargs)
  return model
