"""Files written whole: never a partial file (locally: write beside, then rename; on an object store: one object
write), never a replaced input, an existing output replaced only when asked; and a JSON-lines reader whose every
error names the file and line. Paths go through `storage.as_path`, so any filesystem etils.epath reaches works."""
from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Callable, Iterable, Iterator, Mapping, TextIO

from etils import epath

from atommem_jax import storage


class OutputError(ValueError):
  """An output path that cannot be written as asked: a directory, one of the inputs, or an existing file."""


def check_output(path: str | os.PathLike, *, overwrite: bool,
                 inputs: Mapping[str, str | os.PathLike | None] | None = None, flag: str = "--output") -> None:
  """Refuses an output that is a directory, is one of `inputs` (flag name -> path), or exists without `overwrite`."""
  path = pathlib.Path(path)
  inputs = inputs or {}
  if path.is_dir():
    raise OutputError(f"{flag} {path} is a directory; give the path of the file to write")
  for name, source in inputs.items():
    if source and (pathlib.Path(source).absolute() == path.absolute()
                   or (path.exists() and os.path.exists(source) and os.path.samefile(source, path))):
      raise OutputError(f"{flag} {path} is the same file as {name}; a writer never replaces its own input")
  if path.exists() and not overwrite:
    raise OutputError(f"{flag} {path} exists; pass --overwrite to replace it")


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[TextIO]:
  """A text file (UTF-8) that takes `path`'s place when the block ends without an error; after an error `path` is
  as it was and the temporary file is gone."""
  path = storage.as_path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if not storage.is_local(path):
    buffer = io.StringIO()
    yield buffer
    path.write_text(buffer.getvalue(), encoding="utf-8")  # an object appears whole or not at all
    return
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      yield f
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def write_text(path: str | os.PathLike, text: str) -> None:
  with replacing(path) as f:
    f.write(text)


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> int:
  """One JSON object per line (UTF-8, not ASCII-escaped), written as `rows` come; returns the row count."""
  count = 0
  with replacing(path) as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
      count += 1
  return count


def replace_dir(directory: str | os.PathLike, write: Callable[[pathlib.Path], None]) -> None:
  """`write(staging)` fills a fresh sibling directory, which then takes `directory`'s place; an earlier
  `directory` is removed only after the new one is complete (a failed write leaves it as it was)."""
  directory = pathlib.Path(directory)
  directory.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
  try:
    staging.rmdir()  # writers such as Orbax want to create the directory themselves
    write(staging)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  if directory.exists():
    old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
    os.replace(directory, old)
    os.replace(staging, directory)
    shutil.rmtree(old)
  else:
    os.replace(staging, directory)


def decode_line(raw: bytes) -> str:
  """`raw` as UTF-8; an invalid byte is a ValueError naming it and its column (1-based)."""
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None


def read_jsonl(path: str | os.PathLike, error: type[Exception] = ValueError) -> Iterator[tuple[int, dict[str, Any]]]:
  """(line number, object) for each non-blank line; a missing file, invalid UTF-8 or JSON, or a non-object raises
  `error`."""
  path = epath.Path(path)
  if path.is_dir():
    raise error(f"{path} is a directory, not a JSON-lines file")
  if not path.is_file():
    raise error(f"{path}: file does not exist")
  with path.open("rb") as f:
    for line_no, raw in enumerate(f, start=1):
      try:
        line = decode_line(raw)
      except ValueError as e:
        raise error(f"{path}: line {line_no}: {e}") from None
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise error(f"{path}: line {line_no}: not valid JSON ({e.msg})") from None
      if not isinstance(row, dict):
        raise error(f"{path}: line {line_no}: expected a JSON object, got {type(row).__name__}")
      yield line_no, row


def _lone_surrogate(value: Any, where: str = "") -> str | None:
  """Where in a parsed JSON value a string holds an unpaired surrogate (a `\\ud800` escape is valid JSON but no
  Unicode character), as `key[0].key (character N, \\udXXX)`; None if nowhere."""
  if isinstance(value, str):
    for index, char in enumerate(value):
      if "\ud800" <= char <= "\udfff":
        return f"{where or 'the value'} (character {index + 1}, \\u{ord(char):04x})"
    return None
  items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
  for key, item in items:
    if isinstance(key, int):
      path = f"{where}[{key}]"
    else:  # a key may hold the surrogate itself: shown escaped
      path = f"{where}.{key.encode('utf-8', 'backslashreplace').decode()}".lstrip(".")
    found = (_lone_surrogate(key, f"the key {path}") if isinstance(key, str) else None) or _lone_surrogate(item, path)
    if found:
      return found
  return None


def read_json(path: str | os.PathLike, error: type[Exception] = ValueError) -> Any:
  """A JSON file of valid Unicode text; a missing file, invalid UTF-8 (line and column), invalid JSON, or a string
  with a lone surrogate escape raises `error` naming where."""
  path = pathlib.Path(path)
  if path.is_dir():
    raise error(f"{path} is a directory, not a JSON file")
  try:
    data = path.read_bytes()
  except FileNotFoundError:
    raise error(f"{path}: file does not exist") from None
  except OSError as e:
    raise error(f"{path}: cannot read it ({e.strerror})") from None
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    line_no, line_start = data.count(b"\n", 0, e.start) + 1, data.rfind(b"\n", 0, e.start) + 1
    raise error(f"{path}: line {line_no}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column "
                f"{e.start - line_start + 1})") from None
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise error(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
  where = _lone_surrogate(value)
  if where:
    raise error(f"{path}: {where} is a lone surrogate, not a Unicode character")
  return value
