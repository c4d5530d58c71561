"""How every command line of the package reports bad input: one line naming the cause, exit status 1.

  if __name__ == "__main__":
    cli.run(main)

`run` is `absl.app.run` with two changes. Flags are parsed by `parse_flags`, which turns a missing experiment file,
an override of a config key the experiment does not have (with the nearest keys it does have) and any other flag
error into one line. And `main` runs under `report_input_errors`: a `CliError`, a `ValueError` (every input error of
the package is one: `configlib.ConfigError`, `DataFormatError`, ...; a `UnicodeDecodeError` or `json.JSONDecodeError`
too) or an `OSError` (a missing file, a directory where a file was expected) ends the command with
`error: <message>` on stderr and exit status 1, instead of a traceback. `ATOMMEM_TRACEBACK=1` in the environment
restores the traceback, for debugging.
"""
from __future__ import annotations

import difflib
import functools
import os
from typing import Any, Callable, NoReturn, Sequence

from absl import app, flags

TRACEBACK_ENV = "ATOMMEM_TRACEBACK"
INPUT_ERRORS = (ValueError, OSError)


class CliError(Exception):
  """Bad input that a command reports as `error: <message>` (one line) and exit status 1."""


def one_line(error: BaseException) -> str:
  text = error.args[0] if isinstance(error, KeyError) and len(error.args) == 1 else str(error)
  text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate would stop the print
  return " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(error).__name__


def fail(error: BaseException | str) -> NoReturn:
  raise SystemExit(f"error: {one_line(error if isinstance(error, BaseException) else ValueError(error))}") from None


def report_input_errors(main: Callable[[Sequence[str]], Any]) -> Callable[[Sequence[str]], Any]:
  """`main` with its input errors (see the module docstring) turned into one line and exit status 1."""

  @functools.wraps(main)
  def wrapped(argv: Sequence[str]) -> Any:
    try:
      return main(argv)
    except (CliError, *INPUT_ERRORS) as e:
      if os.environ.get(TRACEBACK_ENV):
        raise
      fail(e)

  return wrapped


def nearest(name: str, known: Sequence[str], n: int = 3) -> list[str]:
  """The known names closest to `name` (difflib's ratio), best first."""
  return difflib.get_close_matches(name, list(known), n=n, cutoff=0.5)


# ---- flags

def _config_flag_names(values: flags.FlagValues) -> list[str]:
  """The flags defined by `ml_collections.config_flags.DEFINE_config_file` (their parser's public type name)."""
  return [name for name in values if values[name].parser.flag_type() == "config object"]


def _flag_arguments(argv: Sequence[str], name: str) -> tuple[str | None, list[str]]:
  """(the value of `--name`, the dotted keys of every `--name.KEY=...` override) as written in argv."""
  value, overrides = None, []
  for index, arg in enumerate(argv[1:], start=1):
    if arg == "--":
      break
    body = arg.lstrip("-")
    if not arg.startswith("-"):
      continue
    key, has_value, text = body.partition("=")
    if key == name:
      value = text if has_value else (argv[index + 1] if index + 1 < len(argv) else None)
    elif key.startswith(name + "."):
      overrides.append(key[len(name) + 1:])
  return value, overrides


def _is_mapping(node: Any) -> bool:
  return callable(getattr(node, "keys", None))


def _flat_keys(config: Any, prefix: str = "") -> list[str]:
  keys = []
  for key in config.keys():
    keys.append(prefix + key)
    if _is_mapping(config[key]):
      keys += _flat_keys(config[key], f"{prefix}{key}.")
  return keys


def unknown_override(config: Any, key: str) -> str | None:
  """Why the dotted override `key` names nothing in `config` (with the nearest keys it has), or None if it does."""
  node, parts = config, key.split(".")
  for depth, part in enumerate(parts):
    if _is_mapping(node) and part in node.keys():
      node = node[part]
      continue
    siblings = [".".join([*parts[:depth], k]) for k in node.keys()] if _is_mapping(node) else []
    close = nearest(key, _flat_keys(config)) or nearest(key, siblings)
    known = f"nearest known keys: {', '.join(close)}" if close else f"known keys there: {', '.join(sorted(siblings))}"
    return f"unknown config key {'.'.join(parts[:depth + 1])!r}; {known}"
  return None


def _missing_experiment(argv: Sequence[str], name: str) -> str | None:
  value, _ = _flag_arguments(argv, name)
  path = None if value is None else value.split(":", 1)[0]  # `path[:arg]`, split as ml_collections does
  if path is None or os.path.isfile(path):
    return None
  return f"--{name}: experiment file {path} " + ("is a directory" if os.path.isdir(path) else "does not exist")


def _last_line(error: BaseException) -> str:
  # ml_collections re-raises a get_config error with the whole traceback in its message; its last line is the cause.
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[-1] if lines else type(error).__name__


def _override_error(argv: Sequence[str], name: str, values: flags.FlagValues) -> str | None:
  """Why parsing `--name` and its overrides failed: the experiment's own error, or an unknown key."""
  value, overrides = _flag_arguments(argv, name)
  if value is None:
    return None
  try:
    config = values[name].parser.parse(value)
    config.keys()
  except Exception as e:  # pylint: disable=broad-except  # whatever the experiment file raised
    return f"--{name} {value}: {_last_line(e.__cause__ or e)}"
  for key in overrides:
    problem = unknown_override(config, key)
    if problem:
      return f"--{name}.{key}: {problem}"
  return None


def parse_flag_values(argv: Sequence[str], values: flags.FlagValues) -> list[str]:
  """`values(argv)`, every failure a `CliError` of one line (with `ATOMMEM_TRACEBACK=1`, the original error)."""
  debug = bool(os.environ.get(TRACEBACK_ENV))
  names = _config_flag_names(values)
  for name in names:
    problem = _missing_experiment(argv, name)
    if problem and not debug:
      raise CliError(problem)
  try:
    args = values(list(argv))
  except Exception as e:  # pylint: disable=broad-except  # absl and ml_collections raise many kinds here
    if debug:
      raise
    for name in names:
      problem = _override_error(argv, name, values)
      if problem:
        raise CliError(problem) from None
    raise CliError(one_line(e)) from None
  for name in names:  # a config file that failed to load holds its error until first use
    try:
      value = values[name].value
      if value is not None:
        value.keys()
    except Exception as e:  # pylint: disable=broad-except
      if debug:
        raise
      raise CliError(f"--{name}: {_last_line(e.__cause__ or e)}") from None
  return args


def parse_flags(argv: Sequence[str]) -> list[str]:
  """`flags.FLAGS(argv)` with every failure as one line: `error: ...` and exit status 1."""
  try:
    return parse_flag_values(argv, flags.FLAGS)
  except CliError as e:
    fail(e)


def run(main: Callable[[Sequence[str]], Any]) -> None:
  """`absl.app.run(main)` with input errors (flags or `main`'s) as one line and exit status 1."""
  app.run(report_input_errors(main), flags_parser=parse_flags)
