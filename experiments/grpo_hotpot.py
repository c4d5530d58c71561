r"""GRPO on HotpotQA (200-document contexts) from an SFT'd Qwen3 checkpoint, the released settings.

  python -m atommem_jax.train --config experiments/grpo_hotpot.py --workdir RUN \
      --config.task.path=hotpot_train_v1.1.json --config.model.checkpoint=SFT_PARAMS_DIR \
      --config.mesh.data=8

SFT_PARAMS_DIR is an HF Qwen3 dir or an Orbax parameter dir (e.g. `RUN_SFT/params` of experiments/sft_hotpot.py).

The embedded default (CPU, no downloads): SFT on the oracle's trajectories, then GRPO, on the synthetic task:

  python -m atommem_jax.train --config experiments/grpo_hotpot.py:tiny --workdir RUN
"""
from atommem_jax import configlib


def get_config(arg: str | None = None):
  base = configlib.load_config_file(__file__, "train_base")
  if arg == "tiny":
    return base.tiny()
  if arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' (HotpotQA, released settings) or 'tiny'")
  config = base.released()
  config.task.dataset = "hotpotqa"
  return config
