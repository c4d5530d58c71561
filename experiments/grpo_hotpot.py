r"""GRPO on HotpotQA (200-document contexts) from an SFT'd Qwen3 checkpoint, the released settings.

  python -m atommem_jax.train --config experiments/grpo_hotpot.py:v5p-8 --workdir RUN \
      --config.task.path=hotpot_train_v1.1.json --config.model.checkpoint=SFT_PARAMS_DIR

SFT_PARAMS_DIR is an HF Qwen3 dir or an Orbax parameter dir (e.g. `RUN_SFT/params` of experiments/sft_hotpot.py).
The argument names the TPU slice (`v5p-8`): fsdp over its chips, with micro-batch rows and
sampler waves that the ahead-of-time fit check passes (BUILD_NOTES.md, "Scale"):

  python -m atommem_jax.aot --config experiments/grpo_hotpot.py:v5p-8 --topology v5p-8

Without an argument the mesh is one device (the fit check spreads it over a slice's chips as fsdp).

The embedded default (CPU, no downloads): SFT on the oracle's trajectories, then GRPO, on the synthetic task:

  python -m atommem_jax.train --config experiments/grpo_hotpot.py:tiny --workdir RUN
"""
from atommem_jax import configlib

# slice -> (chips, turn rows per micro-batch, generated rows per sampler wave); BUILD_NOTES.md has the fit table.
TOPOLOGIES = {
    "v5p-8": (4, 8, 16),
}


def get_config(arg: str | None = None):
  base = configlib.load_config_file(__file__, "train_base")
  if arg == "tiny":
    return base.tiny()
  if arg and arg not in TOPOLOGIES:
    raise ValueError(f"unknown config argument {arg!r}; use '' (HotpotQA, released settings), 'tiny', or a TPU "
                     f"slice: {', '.join(TOPOLOGIES)}")
  config = base.released()
  config.task.dataset = "hotpotqa"
  if arg:
    chips, microbatch_rows, wave_rows = TOPOLOGIES[arg]
    config.mesh = dict(data=1, fsdp=chips, tensor=1)
    config.grpo.microbatch_rows = microbatch_rows
    config.grpo.sampler.wave_rows = wave_rows
  return config
