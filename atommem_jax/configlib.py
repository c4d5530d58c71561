"""The config boundary: ml_collections / dict -> frozen dataclasses, refusing unknown keys.

Every part of the library takes a frozen dataclass; nothing untyped crosses into jitted code. Defaults live in the
dataclasses and in experiment files, never in `config.get(key, default)` calls.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import pathlib
import types
import typing
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def load_config_file(path: str | os.PathLike, sibling: str | None = None) -> types.ModuleType:
  """An experiment file as a module. Experiment files are loaded by path, not as a package, so one reaches a
  sibling (e.g. the shared `train_base.py`) with `load_config_file(__file__, "train_base")`."""
  path = pathlib.Path(path)
  if sibling:
    path = path.with_name(f"{sibling}.py")
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class ConfigError(ValueError):
  """A config that names an unknown key or holds a value of the wrong type."""


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
  if isinstance(value, Mapping):
    return value
  if hasattr(value, "to_dict"):  # ml_collections.ConfigDict / FrozenConfigDict
    return value.to_dict()
  return None


def _convert(value: Any, annotation: Any, where: str) -> Any:
  origin = typing.get_origin(annotation)
  if dataclasses.is_dataclass(annotation):
    mapping = _as_mapping(value)
    if mapping is None:
      if isinstance(value, annotation):
        return value
      raise ConfigError(f"{where}: expected a mapping for {annotation.__name__}, got {type(value).__name__}")
    return from_dict(annotation, mapping, where=where)
  if origin in (typing.Union, types.UnionType):
    args = typing.get_args(annotation)
    if value is None and type(None) in args:
      return None
    for arg in args:
      if arg is type(None):
        continue
      try:
        return _convert(value, arg, where)
      except ConfigError:
        continue
    raise ConfigError(f"{where}: {value!r} does not match {annotation}")
  if origin is typing.Literal:
    if value not in typing.get_args(annotation):
      raise ConfigError(f"{where}: {value!r} is not one of {typing.get_args(annotation)}")
    return value
  if origin in (tuple, list):
    if not isinstance(value, (tuple, list)):
      raise ConfigError(f"{where}: expected a sequence, got {type(value).__name__}")
    args = typing.get_args(annotation)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
      return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is tuple and args:
      if len(args) != len(value):
        raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
      return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
    return tuple(value)
  if origin is dict or annotation is dict:
    mapping = _as_mapping(value)
    if mapping is None:
      raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return dict(mapping)
  if annotation is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if annotation in (int, float, str, bool):
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
      raise ConfigError(f"{where}: expected {annotation.__name__}, got {type(value).__name__} ({value!r})")
    return value
  return value


def from_dict(cls: type[T], mapping: Any, *, where: str | None = None) -> T:
  """Builds the frozen dataclass `cls` from a mapping or ConfigDict; unknown keys are an error."""
  where = where or cls.__name__
  mapping = _as_mapping(mapping)
  if mapping is None:
    raise ConfigError(f"{where}: expected a mapping")
  hints = typing.get_type_hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
  unknown = sorted(set(mapping) - set(fields))
  if unknown:
    close = sorted({k for name in unknown for k in difflib.get_close_matches(name, list(fields), n=3, cutoff=0.5)})
    raise ConfigError(f"{where}: unknown config key(s) {unknown}"
                      + (f"; nearest known keys: {close}" if close else "") + f"; known keys are {sorted(fields)}")
  kwargs = {name: _convert(value, hints[name], f"{where}.{name}") for name, value in mapping.items()}
  return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
  """The inverse of `from_dict`, for saving configs beside checkpoints."""
  return dataclasses.asdict(obj)
