"""`TrainConfig`: the typed form of an experiment file's ConfigDict (built with `configlib.from_dict`).

One run is `total_steps` optimizer steps: the first `sft.steps` are SFT, the rest GRPO (either may be empty). Each
GRPO rollout batch feeds `grpo.updates_per_rollout` consecutive optimizer steps.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from atommem_jax.agent.config import AgentConfig
from atommem_jax.checkpoint.model_init import ModelInitConfig
from atommem_jax.data.long_context import LongContextConfig
from atommem_jax.data.synthetic import SyntheticConfig
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.rollout_engine import RolloutEngineConfig
from atommem_jax.sampling.config import SamplerConfig
from atommem_jax.sharding import MeshConfig
from atommem_jax.train.grpo import GRPOConfig
from atommem_jax.train.step import OptimizerConfig

# Keys that may differ between a checkpoint's config and the resuming run's (they do not change what was trained).
RESUMABLE_KEYS = ("total_steps", "checkpoint_every", "keep_checkpoints", "log_every", "debug_kill_at_step",
                  "eval.num_episodes", "eval.max_new_tokens", "max_nonfinite_streak",
                  # The engines give the same trajectories; only the speed differs.
                  "rollout.engine")


SYNTHETIC_DATASETS = ("synthetic", "web_synthetic")
WEB_DATASETS = ("web_synthetic", "webwalkerqa", "gaia", "web_plain")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """Where episodes come from: the synthetic world, or a native dataset file (HotpotQA, 2Wiki, MuSiQue); for the web
  environment (`agent.env="web"`, `train.web_inputs`), the synthetic worlds served as websites (`web_synthetic`) or a
  native web dataset (WebWalkerQA, GAIA, plain question rows)."""

  dataset: Literal["synthetic", "hotpotqa", "2wiki", "musique", "web_synthetic", "webwalkerqa", "gaia",
                   "web_plain"] = "synthetic"
  path: str = ""  # the native dataset file
  examples_path: str = ""  # or long-context examples already built by `python -m atommem_jax.data.build`
  synthetic: SyntheticConfig = SyntheticConfig()
  # Independent synthetic worlds (seeds synthetic.seed, +1, ...): with more than one, held-out episodes come from
  # worlds never trained on, so the model must read rather than recall.
  synthetic_worlds: int = 1
  long_context: LongContextConfig = LongContextConfig()
  num_eval_episodes: int = 16  # held out from training: the first worlds, or the first episodes of the shuffled list
  # Documents per GRPO episode when GRPO reads longer documents than SFT's demonstrations (a length curriculum);
  # 0 = long_context.num_docs. The held-out questions are then evaluated at both sizes.
  grpo_num_docs: int = 0
  # With `grpo_num_docs`: the fraction of GRPO's examples drawn from SFT's size instead (shuffled in), so the policy's
  # own rollouts keep practising what SFT taught while it learns the longer documents.
  grpo_short_fraction: float = 0.0

  def __post_init__(self):
    if self.synthetic_worlds < 1:
      raise ValueError(f"TaskConfig.synthetic_worlds must be >= 1, got {self.synthetic_worlds}")
    if self.grpo_num_docs < 0:
      raise ValueError(f"TaskConfig.grpo_num_docs must be >= 0 (0 = long_context.num_docs), got {self.grpo_num_docs}")
    if not 0.0 <= self.grpo_short_fraction < 1.0:
      raise ValueError(f"TaskConfig.grpo_short_fraction must be in [0, 1), got {self.grpo_short_fraction}")
    if self.grpo_num_docs and self.examples_path:
      raise ValueError("TaskConfig.grpo_num_docs needs examples built here: examples_path holds one size already built")
    if self.dataset not in SYNTHETIC_DATASETS and not (self.path or self.examples_path):
      raise ValueError(f"TaskConfig.path (the native file) or examples_path is required for dataset "
                       f"{self.dataset!r}")


@dataclasses.dataclass(frozen=True)
class SFTStageConfig:
  steps: int = 0
  pairs_path: str = ""  # (prompt, completion) JSONL; "" = generated from the oracle on the training episodes
  oracle_episodes: int = 64  # training episodes the oracle plays to make the pairs
  min_reward: float = 0.5  # every turn of a teacher trajectory at least this good becomes a pair
  recitation_pairs: int = 0  # reading practice for a model trained from scratch (`oracle_pairs.recitation_pairs`)
  # The oracle's read turns store one other sentence of the chunk with this probability (`oracle.OraclePolicy`), so
  # its answer turns show notes the answer does not use.
  oracle_extra_notes: float = 0.0
  # 0: those pairs from the first SFT step; S > 0: the plain oracle's pairs before step S, the extra-note ones after.
  oracle_extra_notes_from: int = 0
  # Drills (`drills.drill_batch`): the first `drill_steps` SFT steps (all of them if more), then every
  # `drill_every`-th (0 = none).
  drill: Literal["copy", "recite"] = "copy"
  # How a recitation drill writes each question's chain (`drills.recite_drill_batch`): "inline" after the question
  # on its line (every name space-prefixed), "lines" one fact per line and then `\boxed{answer}` (names also in the
  # bare, line-initial token form that the oracle's notes and answers begin with).
  recite_layout: Literal["inline", "lines"] = "inline"
  drill_steps: int = 0
  drill_every: int = 0
  drill_batch_size: int = 32
  batch_size: int = 16
  num_microbatches: int = 1
  max_prompt_tokens: int = 1024
  max_completion_tokens: int = 256
  optimizer: OptimizerConfig = OptimizerConfig(learning_rate=1e-5, warmup_steps=10, decay_steps=1000)

  def __post_init__(self):
    if not 0.0 <= self.oracle_extra_notes <= 1.0:
      raise ValueError(f"SFTStageConfig.oracle_extra_notes must be in [0, 1], got {self.oracle_extra_notes}")
    if self.oracle_extra_notes_from < 0:
      raise ValueError(f"SFTStageConfig.oracle_extra_notes_from must be >= 0, got {self.oracle_extra_notes_from}")


@dataclasses.dataclass(frozen=True)
class GRPOStageConfig:
  loss: GRPOConfig = GRPOConfig()
  prompts_per_rollout: int = 4  # B episodes per rollout, each sampled `loss.num_generations` times
  updates_per_rollout: int = 1
  # Turn rows per micro-batch (a multiple of data x fsdp). A mini-batch holds 2**k micro-batches, as many as its
  # rows need, so a handful of shapes covers every rollout size and memory stays bounded.
  microbatch_rows: int = 16
  length_buckets: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192)
  sampler: SamplerConfig = SamplerConfig(temperature=1.0, top_p=0.99, max_new_tokens=256)
  optimizer: OptimizerConfig = OptimizerConfig(learning_rate=1e-6, warmup_steps=20, decay_steps=1000)


@dataclasses.dataclass(frozen=True)
class HeldOutEvalConfig:
  """The greedy evaluations a training run makes on its held-out episodes (`eval.*`; the evaluation CLI's config is
  `eval.config.EvalConfig`)."""

  num_episodes: int = 16  # greedy held-out episodes per size, at the start, after SFT and at the end; 0 = none
  max_new_tokens: int = 256


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  seed: int = 0
  total_steps: int = 100
  checkpoint_every: int = 10
  keep_checkpoints: int = 3
  log_every: int = 1
  max_nonfinite_streak: int = 5  # this many skipped (non-finite) updates in a row stop the run
  debug_kill_at_step: int = -1  # SIGKILL this process once this step has been dispatched (fault-tolerance tests)
  mesh: MeshConfig = MeshConfig()
  model: ModelInitConfig = ModelInitConfig()
  task: TaskConfig = TaskConfig()
  agent: AgentConfig = AgentConfig()
  memory: MemoryConfig = MemoryConfig()
  # "hashing" (weight-free) or a Qwen3-Embedding checkpoint dir whose hidden size is memory.embed_dim
  # (`checkpoint.loader.load_embedder`), as in evaluation.
  embedder: str = "hashing"
  rollout: RolloutEngineConfig = RolloutEngineConfig()
  sft: SFTStageConfig = SFTStageConfig()
  grpo: GRPOStageConfig = GRPOStageConfig()
  eval: HeldOutEvalConfig = HeldOutEvalConfig()

  def __post_init__(self):
    if self.total_steps < 1:
      raise ValueError(f"TrainConfig.total_steps must be >= 1, got {self.total_steps}")
    if self.checkpoint_every < 1:
      raise ValueError(f"TrainConfig.checkpoint_every must be >= 1, got {self.checkpoint_every}")
    if not self.embedder:
      raise ValueError("TrainConfig.embedder is empty: give 'hashing' (weight-free) or a Qwen3-Embedding checkpoint "
                       "directory")
    if not 0 <= self.sft.steps <= self.total_steps:
      raise ValueError(f"sft.steps ({self.sft.steps}) must be in [0, total_steps={self.total_steps}]")
    u = self.grpo.updates_per_rollout
    if u < 1:
      raise ValueError(f"grpo.updates_per_rollout must be >= 1, got {u}")
    if self.total_steps > self.sft.steps and u > 1 and (self.checkpoint_every % u or (self.total_steps -
                                                                                       self.sft.steps) % u):
      # A checkpoint inside a rollout batch would need the rollout saved too; keep them on rollout boundaries.
      raise ValueError(f"with grpo.updates_per_rollout={u}, checkpoint_every ({self.checkpoint_every}) and the GRPO "
                       f"steps ({self.total_steps - self.sft.steps}) must be multiples of it")
    if u > 1 and self.sft.steps % u:
      raise ValueError(f"sft.steps ({self.sft.steps}) must be a multiple of grpo.updates_per_rollout ({u})")
    if self.grpo.microbatch_rows % (self.mesh.data * self.mesh.fsdp):
      raise ValueError(f"grpo.microbatch_rows ({self.grpo.microbatch_rows}) must be a multiple of mesh data x fsdp "
                       f"({self.mesh.data * self.mesh.fsdp})")
    if self.sft.batch_size % (self.sft.num_microbatches * self.mesh.data * self.mesh.fsdp):
      raise ValueError(f"sft.batch_size ({self.sft.batch_size}) must be a multiple of sft.num_microbatches x mesh "
                       f"data x fsdp")
    if (self.sft.drill_steps < 0 or self.sft.drill_every < 0
        or self.sft.drill_batch_size % (self.mesh.data * self.mesh.fsdp)):
      raise ValueError(f"sft.drill_steps ({self.sft.drill_steps}) and sft.drill_every ({self.sft.drill_every}) must "
                       f"be >= 0 and sft.drill_batch_size ({self.sft.drill_batch_size}) a multiple of mesh data x "
                       f"fsdp")
    if (self.task.dataset in WEB_DATASETS) != (self.agent.env == "web"):
      raise ValueError(f"task.dataset {self.task.dataset!r} and agent.env {self.agent.env!r} do not match: the web "
                       f"datasets {WEB_DATASETS} run in the web environment, the others in long_context")
    if self.agent.env == "web" and self.sft.drill_steps and self.sft.drill != "copy":
      raise ValueError("web runs drill with sft.drill='copy' (recitation drills read long-context documents)")
    if self.keep_checkpoints < 1 or self.log_every < 1 or self.max_nonfinite_streak < 1:
      raise ValueError("keep_checkpoints, log_every and max_nonfinite_streak must be >= 1")
