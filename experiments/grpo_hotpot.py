r"""GRPO on HotpotQA (200-document contexts) from an SFT'd Qwen3 checkpoint, the released settings.

  python -m atommem_jax.train --config experiments/grpo_hotpot.py --workdir RUN \
      --config.task.path=hotpot_train_v1.1.json --config.model.checkpoint=SFT_PARAMS_DIR \
      --config.mesh.data=8

SFT_PARAMS_DIR is an HF Qwen3 dir or an Orbax parameter dir (e.g. `RUN_SFT/params` of experiments/sft_hotpot.py).

The embedded default (CPU, no downloads): SFT on the oracle's trajectories, then GRPO, on the synthetic task:

  python -m atommem_jax.train --config experiments/grpo_hotpot.py:tiny --workdir RUN
"""
import importlib.util
import pathlib


def _base():
  spec = importlib.util.spec_from_file_location("train_base", pathlib.Path(__file__).with_name("train_base.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str | None = None):
  base = _base()
  if arg == "tiny":
    return base.tiny()
  if arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' (HotpotQA, released settings) or 'tiny'")
  config = base.released()
  config.task.dataset = "hotpotqa"
  return config
