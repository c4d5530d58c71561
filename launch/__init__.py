"""Getting onto machines: TPU VM pods (`tpu_vm`), a single GPU node (`gpu_node`) and grid sweeps (`sweep`).

Every script takes `--dry_run`, which prints the exact commands (one per line, shell-quoted) instead of running them,
so a launch can be reviewed, or pasted by hand, before it spends accelerator time.
"""
