"""Environments: the tasks an agent is rolled out in, behind one interface (`base.Environment`).

An environment is chosen by name in the config (`AgentConfig.env`); each name is a module here whose
`make(config, templates=None)` builds it, found by its file: adding an environment is adding one file. A rollout engine also takes an environment object directly, so one
defined elsewhere (a test's) runs with no change here.

  long_context   a document read chunk by chunk, then its questions answered (methods: atommem, memagent, rag,
                 full_context)
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Iterable

_NOT_ENVIRONMENTS = ("base",)  # the interface itself


def discover(path: Iterable[str], package: str) -> dict[str, str]:
  """name -> module of every module file under `path` (the interface module aside), none imported."""
  return {m.name: f"{package}.{m.name}" for m in sorted(pkgutil.iter_modules(path), key=lambda m: m.name)
          if not m.ispkg and m.name not in _NOT_ENVIRONMENTS and not m.name.startswith("_")}


# Imported when used, so `AgentConfig` can check a name without importing every environment.
ENVIRONMENTS = discover(__path__, __name__)


def make(config: Any, templates: Any = None) -> Any:
  """The environment `config.env` names, built from the agent config (and prompt templates, where it has them)."""
  if config.env not in ENVIRONMENTS:
    raise ValueError(f"unknown environment {config.env!r}; known: {sorted(ENVIRONMENTS)}")
  return importlib.import_module(ENVIRONMENTS[config.env]).make(config, templates)
