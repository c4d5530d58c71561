"""`EvalConfig`: what an evaluation run reads (checkpoint, datasets x document counts, variants) and how it decodes.

Built from an experiment file's ConfigDict by `eval_config_from_dict`. Two fields are maps keyed by name, so a
command line can reach into them (`--config.datasets.hotpotqa.num_docs=(200,)`,
`--config.variants.no_update.agent.allow_update=False`):
- `datasets`: name -> `DatasetSpec` (the name is also the reader unless `format` says otherwise);
- `variants`: name -> overrides of `agent` and `memory` (a baseline is a variant with `agent.method`, an ablation one
  with a switch off, "any K" one with `memory.top_k`); every variant runs on every dataset and N.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

from atommem_jax import configlib
from atommem_jax.agent.config import AgentConfig
from atommem_jax.rollout_engine import RolloutEngineConfig
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.sampling.config import SamplerConfig

DATASET_FORMATS = ("hotpotqa", "2wiki", "musique", "synthetic")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """One dataset, evaluated at each document count in `num_docs`.

  format: the reader ("" = the map key); label: the name in tables ("" = the map key). A key must be a Python
    identifier for `--config.datasets.KEY...` to reach it, hence `twowiki` with format and label "2wiki".
  path: the native file (unused for `synthetic`). max_examples: the first examples only (0 = all).
  seed: distractors, document order and bundling (and the synthetic world) derive from it.
  single_question_fraction / min_bundle_size / max_bundle_size / gold: as in `data.long_context.LongContextConfig`
    (the released evaluation: 0.5, 2, 10, "all_context").
  synthetic_*: the synthetic world's size (0 documents = max(2N, 64)) and question kinds (() = all);
    `synthetic_worlds` worlds (seeds seed, seed + 1, ...), each bundled on its own with its own seed, as the trainer
    builds its held-out worlds (so seed 0 with the trainer's sizes gives exactly its held-out episodes).
  """

  format: str = ""
  label: str = ""
  path: str = ""
  num_docs: tuple[int, ...] = (200,)
  max_examples: int = 0
  seed: int = 0
  single_question_fraction: float = 1.0
  min_bundle_size: int = 2
  max_bundle_size: int = 10
  gold: Literal["all_context", "supporting"] = "supporting"
  synthetic_num_questions: int = 64
  synthetic_num_documents: int = 0
  synthetic_question_kinds: tuple[str, ...] = ()
  synthetic_worlds: int = 1


@dataclasses.dataclass(frozen=True)
class VariantSpec:
  """Overrides applied on top of the run's `agent` / `memory` config for one column of the results table."""

  agent: dict = dataclasses.field(default_factory=dict)
  memory: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class MeshSpec:
  """Mesh axis sizes; 0 on one axis means "every device the others leave" (so one config fits 1 or 8 devices)."""

  data: int = 0
  fsdp: int = 1
  tensor: int = 1


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """An evaluation run.

  checkpoint: any dir `checkpoint.loader.resolve` reads: an Orbax parameter dir (`save_params` / `convert` output),
    an HF Qwen3 dir, or a trainer workdir / its checkpoints dir (the latest step is used).
  expected_model: a model preset name the checkpoint must match (architecture fields); "" accepts any.
  tokenizer: "" = the tokenizer files saved with the checkpoint; "tiny" = the packaged tiny tokenizer; else a dir.
  embedder: "hashing" (weight-free) or a Qwen3-Embedding checkpoint dir (HF or Orbax), as in training.
  rollout: the rollout engine (`rollout.engine`: "host" | "device"; see `rollout_engine`).
  batch_size: episodes per rollout batch.
  variant_order / dataset_order: the order of rows and columns in the tables (ConfigDicts sort their keys, so the
    order cannot come from the maps); names left out follow in sorted order.
  """

  checkpoint: str
  datasets: dict[str, DatasetSpec]
  variants: dict[str, VariantSpec]
  expected_model: str = ""
  tokenizer: str = ""
  embedder: str = "hashing"
  seed: int = 0
  batch_size: int = 8
  mesh: MeshSpec = MeshSpec()
  agent: AgentConfig = AgentConfig()
  memory: MemoryConfig = MemoryConfig()
  sampler: SamplerConfig = SamplerConfig(greedy=True)
  rollout: RolloutEngineConfig = RolloutEngineConfig()
  variant_order: tuple[str, ...] = ()
  dataset_order: tuple[str, ...] = ()

  def __post_init__(self):
    if not self.checkpoint:
      raise configlib.ConfigError("EvalConfig.checkpoint is empty: pass --config.checkpoint=DIR")
    if not self.embedder:
      raise configlib.ConfigError("EvalConfig.embedder is empty: pass --config.embedder=DIR (a Qwen3-Embedding "
                                  "checkpoint, HF or Orbax) or 'hashing' (weight-free)")
    if not self.datasets:
      raise configlib.ConfigError("EvalConfig.datasets is empty: nothing to evaluate")
    if not self.variants:
      raise configlib.ConfigError("EvalConfig.variants is empty: give at least one (e.g. atommem={})")
    if not self.sampler.greedy:
      raise configlib.ConfigError("EvalConfig.sampler.greedy must be True: evaluation decodes greedily")
    if self.batch_size < 1:
      raise configlib.ConfigError(f"EvalConfig.batch_size must be >= 1, got {self.batch_size}")
    from atommem_jax.model.config import PRESETS  # pylint: disable=g-import-not-at-top
    if self.expected_model and self.expected_model not in PRESETS:
      raise configlib.ConfigError(f"EvalConfig.expected_model {self.expected_model!r} is not a model preset; known "
                                  f"presets: {sorted(PRESETS)}")
    labels = [dataset_label(name, spec) for name, spec in self.datasets.items()]
    if len(set(labels)) != len(labels):
      raise configlib.ConfigError(f"EvalConfig.datasets: two datasets share a label: {labels}")
    for name, spec in self.datasets.items():
      if dataset_format(name, spec) not in DATASET_FORMATS:
        raise configlib.ConfigError(f"EvalConfig.datasets.{name}: format {dataset_format(name, spec)!r} is not one "
                                    f"of {DATASET_FORMATS}")
      if not spec.num_docs or any(n < 1 for n in spec.num_docs):
        raise configlib.ConfigError(f"EvalConfig.datasets.{name}.num_docs must be positive, got {spec.num_docs}")
      if dataset_format(name, spec) != "synthetic" and not spec.path:
        raise configlib.ConfigError(f"EvalConfig.datasets.{name}.path is empty: give the native {name} file")
      if spec.synthetic_worlds < 1 or (spec.synthetic_worlds > 1 and dataset_format(name, spec) != "synthetic"):
        raise configlib.ConfigError(f"EvalConfig.datasets.{name}.synthetic_worlds must be >= 1 (and 1 unless the "
                                    f"format is synthetic), got {spec.synthetic_worlds}")
    for field, names in (("variant_order", self.variants), ("dataset_order", self.datasets)):
      unknown = sorted(set(getattr(self, field)) - set(names))
      if unknown:
        raise configlib.ConfigError(f"EvalConfig.{field} names {unknown}, which are not defined; known: {sorted(names)}")

  def variant_configs(self) -> dict[str, tuple[AgentConfig, MemoryConfig]]:
    """Each variant's agent and memory config: the run's, with the variant's overrides (unknown keys refused)."""
    out = {}
    for name, variant in self.variants.items():
      agent = configlib.from_dict(AgentConfig, {**configlib.to_dict(self.agent), **variant.agent},
                                  where=f"variants.{name}.agent")
      memory = configlib.from_dict(MemoryConfig, {**configlib.to_dict(self.memory), **variant.memory},
                                   where=f"variants.{name}.memory")
      out[name] = (agent, memory)
    return out


def _ordered(mapping: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
  names = [*dict.fromkeys(order), *sorted(set(mapping) - set(order))]
  return {name: mapping[name] for name in names}


def dataset_format(name: str, spec: DatasetSpec) -> str:
  return spec.format or name


def dataset_label(name: str, spec: DatasetSpec) -> str:
  return spec.label or name


def _named_map(cls: type, mapping: Any, where: str) -> dict[str, Any]:
  mapping = dict(configlib._as_mapping(mapping) or {})  # pylint: disable=protected-access
  return {name: configlib.from_dict(cls, value or {}, where=f"{where}.{name}") for name, value in mapping.items()}


def eval_config_from_dict(config: Mapping[str, Any] | Any) -> EvalConfig:
  """The ConfigDict boundary: unknown keys anywhere (datasets and variants included) are a `ConfigError`."""
  raw = dict(configlib._as_mapping(config) or {})  # pylint: disable=protected-access
  datasets = _named_map(DatasetSpec, raw.pop("datasets", {}), "EvalConfig.datasets")
  variants = _named_map(VariantSpec, raw.pop("variants", {}), "EvalConfig.variants")
  # Evaluation is greedy; an experiment file that leaves `sampler.greedy` out gets it, one that sets False is refused.
  raw["sampler"] = {"greedy": True, **dict(configlib._as_mapping(raw.get("sampler", {})) or {})}  # pylint: disable=protected-access
  config = configlib.from_dict(EvalConfig, {**raw, "datasets": datasets, "variants": variants})
  config = dataclasses.replace(config, datasets=_ordered(config.datasets, config.dataset_order),
                               variants=_ordered(config.variants, config.variant_order))
  config.variant_configs()  # validates every variant's overrides now, before anything runs
  return config
