r"""SFT on the oracle's trajectories on the synthetic task (no downloads): the tiny default's first stage alone.

  python -m atommem_jax.train --config experiments/sft_synthetic.py --workdir RUN

`:small` is a shorter run for smoke tests. The oracle's (prompt, completion) pairs are written to RUN/sft_pairs.jsonl;
RUN/params is the Orbax parameter dir experiments/grpo_synthetic.py can start from.
"""
from atommem_jax import configlib


def get_config(arg: str | None = None):
  config = configlib.load_config_file(__file__, "train_base").tiny()
  if arg == "small":
    config.total_steps = 10
    config.checkpoint_every = 5
    config.eval.num_episodes = 4
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' or 'small'")
  else:
    config.total_steps = config.sft.steps
  config.sft.steps = config.total_steps
  return config
