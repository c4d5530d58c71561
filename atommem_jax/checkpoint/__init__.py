"""Checkpoints: HF safetensors in and out, Orbax parameter save/restore, and the one loader every entry point uses.

Public API:
  load_hf(path, *, mesh=None, rules=DEFAULT_RULES, dtype=None) -> (Qwen3Config, Qwen3)
  export_hf(model, config, dst, tokenizer_src=None)
  save_params(dir, model, config, *, tokenizer_src=None)
  restore_params(dir, *, mesh=None, rules=DEFAULT_RULES, config=None) -> (Qwen3Config, Qwen3)
  is_orbax_params_dir(dir), copy_tokenizer_files(src, dst), CheckpointError
  loader: resolve(path) -> CheckpointDir (kind, path, model_config, tokenizer_dir; no weights read),
          load_model(checkpoint, mesh=None), load_tokenizer(spec, checkpoint), tokenizer_dir(spec, checkpoint),
          stop_ids(tokenizer, dir), load_embedder(spec, *, embed_dim, tokenizer, mesh=None),
          check_architecture(checkpoint, preset), check_vocabulary(tokenizer, model_config, what)
  model_init.ModelInitConfig: the model a run starts from and how it executes it (`.runtime(model_config)`); a
          trainer checkpoint records it, and the loader reads it back
"""
from atommem_jax.checkpoint import loader
from atommem_jax.checkpoint.hf import CheckpointError, export_hf, load_hf
from atommem_jax.checkpoint.orbax_params import is_orbax_params_dir, load_config, restore_params, save_params
from atommem_jax.checkpoint.tokenizer_files import copy_tokenizer_files

__all__ = ["CheckpointError", "export_hf", "load_hf", "is_orbax_params_dir", "load_config", "restore_params",
           "save_params", "copy_tokenizer_files", "loader"]
