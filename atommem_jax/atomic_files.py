"""Whole-file writes that never leave a partial file: write beside the target, then rename over it."""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any, Iterable


def write_text(path: str | os.PathLike, text: str) -> None:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
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
