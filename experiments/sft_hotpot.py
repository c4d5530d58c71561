r"""SFT of a Qwen3 checkpoint on teacher trajectories for HotpotQA, the released settings.

  python -m atommem_jax.train --config experiments/sft_hotpot.py --workdir RUN_SFT \
      --config.model.checkpoint=QWEN3_8B_HF_DIR --config.sft.pairs_path=teacher_pairs.jsonl \
      --config.task.path=hotpot_dev_distractor_v1.json --config.mesh.fsdp=8

teacher_pairs.jsonl holds {"prompt", "completion"} lines: every turn of teacher trajectories with reward >= 0.5
(the prompt chat-formatted exactly as the model sees it). The held-out episodes of `task.path` are evaluated
(greedy) before and after; RUN_SFT/params is the Orbax parameter dir experiments/grpo_hotpot.py starts from.

  python -m atommem_jax.train --config experiments/sft_hotpot.py:tiny --workdir RUN   # CPU, synthetic task
"""
from atommem_jax import configlib


def get_config(arg: str | None = None):
  base = configlib.load_config_file(__file__, "train_base")
  if arg == "tiny":
    config = base.tiny()
    config.total_steps = config.sft.steps  # the tiny default's SFT stage alone
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' (HotpotQA, released settings) or 'tiny'")
  else:
    config = base.released()
    config.task.dataset = "hotpotqa"
    config.total_steps = 200
  config.sft.steps = config.total_steps  # SFT only
  return config
