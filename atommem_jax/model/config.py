"""`Qwen3Config`: the typed shape of a Qwen3 decoder, its presets, and the HF `config.json` boundary."""
from __future__ import annotations

import dataclasses
import json
import pathlib
import typing
from typing import Any, Literal, Mapping

from atommem_jax import configlib

DType = Literal["float32", "bfloat16"]
# `model/attention.py`: "auto" picks splash on TPU, cuDNN on GPU, and on CPU blockwise for long rows, dense otherwise.
Attention = Literal["auto", "dense", "blockwise", "splash", "cudnn"]
# Per-layer rematerialisation in the backward pass: nothing, everything but the layer's input, or every matmul
# without batch dimensions kept (the projections; attention scores are recomputed).
Remat = Literal["none", "full", "dots"]


@dataclasses.dataclass(frozen=True)
class Qwen3Config:
  vocab_size: int = 512
  hidden_size: int = 64
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 16
  intermediate_size: int = 128
  rope_theta: float = 10_000.0
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = True
  max_position_embeddings: int = 1024
  dtype: DType = "float32"  # activations
  param_dtype: DType = "float32"
  attention: Attention = "auto"
  remat: Remat = "none"
  # Training losses apply the LM head to this many sequence positions at a time (under remat), so no [N, T, V]
  # logits exist; rows no longer than this are one chunk.
  logits_chunk: int = 1024
  # Standard deviation of the random init of every matrix (HF's `initializer_range`; norms start at 1).
  initializer_range: float = 0.02

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                 "intermediate_size", "max_position_embeddings", "logits_chunk"):
      if getattr(self, name) <= 0:
        raise configlib.ConfigError(f"Qwen3Config.{name} must be positive, got {getattr(self, name)}")
    if self.num_heads % self.num_kv_heads:
      raise configlib.ConfigError(
          f"Qwen3Config.num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
    if self.head_dim % 2:
      raise configlib.ConfigError(f"Qwen3Config.head_dim must be even for rotary embeddings, got {self.head_dim}")
    if self.rope_theta <= 0 or self.rms_norm_eps <= 0 or self.initializer_range <= 0:
      raise configlib.ConfigError("Qwen3Config.rope_theta, rms_norm_eps and initializer_range must be positive")
    if self.attention not in typing.get_args(Attention):
      raise configlib.ConfigError(f"Qwen3Config.attention must be one of {typing.get_args(Attention)}, "
                                  f"got {self.attention!r}")
    if self.remat not in typing.get_args(Remat):
      raise configlib.ConfigError(f"Qwen3Config.remat must be one of {typing.get_args(Remat)}, got {self.remat!r}")

  @property
  def num_params(self) -> int:
    """Parameter count (embedding counted once when tied)."""
    d, h, f = self.hidden_size, self.head_dim, self.intermediate_size
    attn = d * h * (2 * self.num_heads + 2 * self.num_kv_heads) + 2 * h
    per_layer = attn + 3 * d * f + 2 * d
    lm_head = 0 if self.tie_word_embeddings else self.vocab_size * d
    return self.vocab_size * d + self.num_layers * per_layer + d + lm_head

  def replace(self, **changes: Any) -> "Qwen3Config":
    return dataclasses.replace(self, **changes)

  @classmethod
  def from_dict(cls, mapping: Any) -> "Qwen3Config":
    mapping = dict(mapping.to_dict() if hasattr(mapping, "to_dict") else mapping)
    if isinstance(mapping.get("remat"), bool):  # configs saved before remat named a policy
      mapping["remat"] = "full" if mapping["remat"] else "none"
    return configlib.from_dict(cls, mapping)

  def to_dict(self) -> dict[str, Any]:
    return configlib.to_dict(self)

  @classmethod
  def from_hf(cls, path_or_dict: str | pathlib.Path | Mapping[str, Any]) -> "Qwen3Config":
    """Reads a transformers Qwen3 `config.json` (a checkpoint dir, the file itself, or its parsed dict)."""
    if isinstance(path_or_dict, Mapping):
      hf, where = dict(path_or_dict), "config dict"
    else:
      path = pathlib.Path(path_or_dict)
      if path.is_dir():
        path = path / "config.json"
      if not path.is_file():
        raise FileNotFoundError(f"no HF config.json at {path}")
      hf, where = json.loads(path.read_text()), str(path)
    return _config_from_hf_dict(hf, where)

  def to_hf_dict(self) -> dict[str, Any]:
    """A `config.json` dict that transformers' `Qwen3ForCausalLM` loads (both rope keys, for old and new readers)."""
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "num_key_value_heads": self.num_kv_heads,
        "head_dim": self.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": self.max_position_embeddings,
        "rms_norm_eps": self.rms_norm_eps,
        "initializer_range": self.initializer_range,
        "rope_theta": self.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
        "tie_word_embeddings": self.tie_word_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "dtype": self.param_dtype,
        "torch_dtype": self.param_dtype,
    }


_HF_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": None}


def _config_from_hf_dict(hf: dict[str, Any], where: str) -> Qwen3Config:
  model_type = hf.get("model_type")
  if model_type not in ("qwen3", None):
    raise configlib.ConfigError(f"{where}: model_type {model_type!r} is not a Qwen3 decoder")
  if hf.get("attention_bias"):
    raise configlib.ConfigError(f"{where}: attention_bias=true is not a Qwen3 layout this model supports")
  if hf.get("hidden_act", "silu") != "silu":
    raise configlib.ConfigError(f"{where}: hidden_act {hf['hidden_act']!r} is not silu")
  if hf.get("use_sliding_window"):
    raise configlib.ConfigError(f"{where}: sliding-window attention is not supported")
  rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
  if rope.get("rope_type", rope.get("type", "default")) != "default":
    raise configlib.ConfigError(f"{where}: rope type {rope.get('rope_type')!r} is not supported, only 'default'")
  # transformers 5 stores the theta in rope_parameters; older versions at the top level.
  theta = rope.get("rope_theta", hf.get("rope_theta"))
  if theta is None:
    raise configlib.ConfigError(f"{where}: no rope_theta in rope_parameters or at the top level")
  required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "rms_norm_eps", "max_position_embeddings")
  missing = [k for k in required if k not in hf]
  if missing:
    raise configlib.ConfigError(f"{where}: missing keys {missing}")
  num_heads = hf["num_attention_heads"]
  param_dtype = hf.get("dtype") or hf.get("torch_dtype") or "float32"
  if _HF_DTYPES.get(param_dtype) is None:
    raise configlib.ConfigError(f"{where}: dtype {param_dtype!r} is not one of float32, bfloat16")
  return Qwen3Config(
      vocab_size=hf["vocab_size"],
      hidden_size=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"],
      num_heads=num_heads,
      num_kv_heads=hf.get("num_key_value_heads") or num_heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // num_heads,
      intermediate_size=hf["intermediate_size"],
      rope_theta=float(theta),
      rms_norm_eps=float(hf["rms_norm_eps"]),
      # transformers' PretrainedConfig defaults tie_word_embeddings to True when absent.
      tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
      max_position_embeddings=hf["max_position_embeddings"],
      initializer_range=float(hf.get("initializer_range", 0.02)),
      dtype=param_dtype,
      param_dtype=param_dtype,
  )


def _qwen3(hidden: int, layers: int, heads: int, kv: int, mlp: int, tied: bool) -> Qwen3Config:
  return Qwen3Config(vocab_size=151_936, hidden_size=hidden, num_layers=layers, num_heads=heads, num_kv_heads=kv,
                     head_dim=128, intermediate_size=mlp, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                     tie_word_embeddings=tied, max_position_embeddings=40_960)


PRESETS: dict[str, Qwen3Config] = {
    "qwen3_0_6b": _qwen3(1024, 28, 16, 8, 3072, tied=True),
    "qwen3_1_7b": _qwen3(2048, 28, 16, 8, 6144, tied=True),
    "qwen3_4b": _qwen3(2560, 36, 32, 8, 9728, tied=True),
    "qwen3_8b": _qwen3(4096, 36, 32, 8, 12288, tied=False),
    "tiny": Qwen3Config(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                        intermediate_size=128, rope_theta=10_000.0, tie_word_embeddings=True,
                        max_position_embeddings=1024),
    # The embedded default's model: 4 heads, each with its own keys and values. With 2 kv heads (`tiny_gqa`, the
    # previous default) the reading skill formed within the budget on some seeds only (README, "Across seeds").
    "tiny_default": Qwen3Config(vocab_size=2048, hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=4,
                                head_dim=32, intermediate_size=384, rope_theta=10_000.0, tie_word_embeddings=True,
                                max_position_embeddings=8192),
    "tiny_gqa": Qwen3Config(vocab_size=2048, hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2,
                            head_dim=32, intermediate_size=384, rope_theta=10_000.0, tie_word_embeddings=True,
                            max_position_embeddings=8192),
}


class UnknownPresetError(KeyError, ValueError):
  """A preset name that is not in `PRESETS` (a ValueError too: it is bad input, reported as one line)."""


def get_preset(name: str) -> Qwen3Config:
  if name not in PRESETS:
    raise UnknownPresetError(f"unknown Qwen3 preset {name!r}; known presets: {sorted(PRESETS)}")
  return PRESETS[name]
