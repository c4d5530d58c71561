"""The rollout engine a run uses (`rollout.engine` in training and evaluation configs), chosen by name.

- "host": `agent.engines.host.rollout`, the turn loop on the host (observations rendered, responses parsed, between
  jitted transitions).
- "device": `agent.engines.device.rollout`, the same trajectories with each turn's rendering, tokenization and
  parsing in-graph; the model only, and only for settings it can serve (`check` refuses the others by name).

Every rollout a run plays with its model goes through `rollout_fn(config)`, resolved once when the run starts, so
an engine that cannot serve the run is refused before anything is computed. The oracle's demonstrations are host
rollouts always: the oracle is a Python policy.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Literal

from atommem_jax import configlib
from atommem_jax.agent import engines
from atommem_jax.agent.trajectory import Trajectory

RolloutFn = Callable[..., list[Trajectory]]  # the signature of `agent.engines.host.rollout`


@dataclasses.dataclass(frozen=True)
class RolloutEngineConfig:
  engine: Literal["host", "device"] = "host"


def rollout_fn(config: RolloutEngineConfig) -> RolloutFn:
  """The rollout function of `config.engine`: `fn(episodes, policy, *, tokenizer, embed_fn, config)`."""
  return engines.get(config.engine)


def check(config: RolloutEngineConfig, *, tokenizer, rollout_config, sampler) -> None:
  """One ConfigError, naming `rollout.engine` and each setting at fault, when the engine cannot serve rollouts of
  `rollout_config` (its environment and memory) with this tokenizer and sampler."""
  try:
    engines.check(config.engine, tokenizer=tokenizer, config=rollout_config, sampler=sampler)
  except ValueError as error:
    raise configlib.ConfigError(str(error)) from None
