"""Rollout engines: run B episodes x G samples of an environment with a policy, turn by turn, to the end.

Both take `(episodes, policy, *, tokenizer, embed_fn, config, env=None, reward_fn=None, templates=None,
max_turns=None)` and return the same `trajectory.Trajectory`s:

  host    `host.rollout`: observations, parsing and actions on the host, one jitted transition per turn on device;
          any environment, any text policy or the model.
  device  `device.rollout`: the same trajectories, identical for the same seed, with each turn's rendering,
          tokenization and parsing in-graph; the model (`SamplerPolicy`) only, and only where
          `device.unsupported_reasons(tokenizer, env, sampler, memory_config)` is empty (it raises otherwise).

A run picks one by name (`rollout.engine`): `get(name)` is its rollout function, and `check(name, ...)` refuses,
before anything is computed, an engine that cannot serve the run's settings.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

ENGINES = ("host", "device")


def get(name: str) -> Callable:
  """The `rollout` function of the engine `name`."""
  if name not in ENGINES:
    raise ValueError(f"unknown rollout engine {name!r}; known: {list(ENGINES)}")
  return importlib.import_module(f"{__name__}.{name}").rollout


def check(name: str, *, tokenizer: Any, config: Any, sampler: Any = None) -> None:
  """Raises ValueError naming `rollout.engine` and each setting at fault when the engine `name` cannot run rollouts
  of this `RolloutConfig` (its environment, memory) with this tokenizer and sampler."""
  get(name)
  if name == "device":
    device = importlib.import_module(f"{__name__}.device")
    reasons = device.unsupported_reasons(tokenizer, config.agent, sampler, config.memory)
    if reasons:
      raise ValueError("rollout.engine='device' cannot give the host engine's trajectories here: "
                       + "; ".join(reasons) + " (use rollout.engine='host')")
