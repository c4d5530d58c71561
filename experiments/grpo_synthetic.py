r"""GRPO on the synthetic task from an SFT'd checkpoint (e.g. the output of experiments/sft_synthetic.py).

  python -m atommem_jax.train --config experiments/sft_synthetic.py --workdir RUN_SFT
  python -m atommem_jax.train --config experiments/grpo_synthetic.py --workdir RUN \
      --config.model.checkpoint=RUN_SFT/params

The KL reference is the starting checkpoint. experiments/grpo_hotpot.py:tiny runs both stages in one job.
"""
from atommem_jax import configlib


def get_config(arg: str | None = None):
  if arg:
    raise ValueError(f"unknown config argument {arg!r}; this file takes none")
  config = configlib.load_config_file(__file__, "train_base").tiny()
  config.sft.steps = 0
  config.total_steps = 40
  config.checkpoint_every = 10
  return config
