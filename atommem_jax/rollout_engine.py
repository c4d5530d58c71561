"""The rollout engine a run uses (`rollout.engine` in training and evaluation configs), chosen by name.

- "host": `agent.engines.host.rollout`, the turn loop on the host (observations rendered, responses parsed, between
  jitted transitions).
- "device": the whole rollout in one `while_loop` on the device (`agent.device_loop`); not yet selectable by a run.

Every rollout a run plays with its model goes through `rollout_fn(config)`, resolved once when the run starts, so
an engine that cannot serve the run is refused before anything is computed. The oracle's demonstrations are host
rollouts always: the oracle is a Python policy.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Literal

from atommem_jax import configlib
from atommem_jax.agent.engines import host
from atommem_jax.agent.trajectory import Trajectory

RolloutFn = Callable[..., list[Trajectory]]  # the signature of `agent.engines.host.rollout`


@dataclasses.dataclass(frozen=True)
class RolloutEngineConfig:
  engine: Literal["host", "device"] = "host"


def rollout_fn(config: RolloutEngineConfig) -> RolloutFn:
  """The rollout function of `config.engine`: `fn(episodes, policy, *, tokenizer, embed_fn, config)`."""
  if config.engine == "device":
    raise configlib.ConfigError("rollout.engine='device' is not wired yet for this run (training and evaluation "
                                "use the host engine for now; it will be wired later): set rollout.engine=host")
  return host.rollout
