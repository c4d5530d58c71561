"""Rollout engines: run B episodes x G samples of an environment with a policy, turn by turn, to the end.

Both take `(episodes, policy, *, tokenizer, embed_fn, config, env=None, reward_fn=..., templates=None,
max_turns=None)` and return the same `trajectory.Trajectory`s:

  host    `host.rollout`: observations, parsing and actions on the host, one jitted transition per turn on device;
          any environment, any text policy or the model.
  device  `device.rollout`: the same trajectories, identical for the same seed, with each turn's rendering,
          tokenization and parsing in-graph; the model (`SamplerPolicy`) only, and only where
          `device.unsupported_reasons(tokenizer, env, sampler)` is empty (it raises otherwise).
"""
from __future__ import annotations

import importlib
from typing import Callable

ENGINES = ("host", "device")


def get(name: str) -> Callable:
  """The `rollout` function of the engine `name`."""
  if name not in ENGINES:
    raise ValueError(f"unknown rollout engine {name!r}; known: {list(ENGINES)}")
  return importlib.import_module(f"{__name__}.{name}").rollout
