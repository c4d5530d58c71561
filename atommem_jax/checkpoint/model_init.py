"""`ModelInitConfig`: the model a run starts from (a preset or a checkpoint) and how it executes it.

It lives beside the loader because a trainer checkpoint records it (`meta`'s `config.model`), and the loader reads it
back to restore that run's parameters with the run's dtypes, attention and remat.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from atommem_jax.model.config import Attention, Qwen3Config, Remat


@dataclasses.dataclass(frozen=True)
class ModelInitConfig:
  preset: str = "tiny_default"  # a `model.PRESETS` name (ignored when `checkpoint` holds a config)
  checkpoint: str = ""  # any dir `checkpoint.loader.resolve` reads (HF, Orbax params, a trainer workdir); "" = random
  # init from `seed`
  tokenizer: str = ""  # a tokenizer dir; "" = the checkpoint's, or the packaged tiny tokenizer
  # How the model runs (`Qwen3Config` fields of the same names): attention implementation, per-layer remat, LM-head
  # chunk of the training losses.
  attention: Attention = "auto"
  remat: Remat = "none"
  logits_chunk: int = 1024
  # Activation and parameter dtypes; "" = the preset's or the checkpoint's. A checkpoint is cast to `param_dtype`
  # (float32 master weights for bfloat16 checkpoints: updates of 1e-6 vanish in bfloat16 weights).
  dtype: Literal["", "float32", "bfloat16"] = ""
  param_dtype: Literal["", "float32", "bfloat16"] = ""
  # Standard deviation of a random init's matrices; 0 = the preset's (0.02). Only a random init reads it.
  initializer_range: float = 0.0

  def runtime(self, model: Qwen3Config) -> Qwen3Config:
    """`model` (a preset or a checkpoint's architecture) as this run executes it."""
    changes = {k: v for k, v in (("dtype", self.dtype), ("param_dtype", self.param_dtype),
                                 ("initializer_range", self.initializer_range)) if v}
    return model.replace(attention=self.attention, remat=self.remat, logits_chunk=self.logits_chunk, **changes)
