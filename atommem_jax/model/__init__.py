"""The Qwen3 decoder in Flax NNX.

Public API:
  Qwen3Config, PRESETS, get_preset          -- typed config, presets, `Qwen3Config.from_hf` / `.to_hf_dict`
  Qwen3                                      -- `logits_BxTxV, cache = model(tokens_BxT, positions_BxT, mask_BxT,
                                                cache=None)`; `model.hidden_states(...)`; `model.logits(h_BxTxD)`
  KVCache, positions_from_mask               -- fixed-shape cache pytree (`KVCache.init`, `KVCache.shardings`)
  param_shardings, shard_params,             -- parameter shardings from the logical-axis table,
  abstract_model, init_sharded                  abstract (sharded) shapes, models created directly sharded
"""
from atommem_jax.model.config import PRESETS, Qwen3Config, get_preset
from atommem_jax.model.kv_cache import KVCache, positions_from_mask
from atommem_jax.model.partitioning import abstract_model, init_sharded, param_shardings, shard_params
from atommem_jax.model.qwen3 import Qwen3

__all__ = ["PRESETS", "Qwen3Config", "get_preset", "KVCache", "positions_from_mask", "abstract_model",
           "init_sharded", "param_shardings", "shard_params", "Qwen3"]
