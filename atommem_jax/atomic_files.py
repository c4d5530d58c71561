"""JSON-lines files: whole-file writes that never leave a partial file (locally: write beside, then rename; on an
object store: one object write), and a reader whose every error names the file and line. Paths go through
`storage.as_path`, so any filesystem etils.epath reaches works."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Iterable, Iterator

from etils import epath

from atommem_jax import storage


def write_text(path: str | os.PathLike, text: str) -> None:
  path = storage.as_path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if not storage.is_local(path):
    path.write_text(text, encoding="utf-8")  # an object appears whole or not at all
    return
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
  """One JSON object per line (UTF-8, not ASCII-escaped)."""
  write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_jsonl(path: str | os.PathLike, error: type[Exception] = ValueError) -> Iterator[tuple[int, dict[str, Any]]]:
  """(line number, object) for each non-blank line; a missing file, invalid JSON or a non-object raises `error`."""
  path = epath.Path(path)
  if not path.is_file():
    raise error(f"{path}: file does not exist")
  with path.open(encoding="utf-8") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise error(f"{path}: line {line_no}: not valid JSON ({e.msg})") from None
      if not isinstance(row, dict):
        raise error(f"{path}: line {line_no}: expected a JSON object, got {type(row).__name__}")
      yield line_no, row
