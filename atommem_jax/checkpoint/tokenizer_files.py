"""The tokenizer files that travel with a checkpoint, whichever format it is in."""
from __future__ import annotations

import os
import pathlib

from etils import epath

from atommem_jax import storage

TOKENIZER_PATTERNS = ("tokenizer*.json", "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt",
                      "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
                      "generation_config.json")


def tokenizer_files(src: str | pathlib.Path) -> list[pathlib.Path]:
  src = pathlib.Path(src)
  found = {p for pattern in TOKENIZER_PATTERNS for p in src.glob(pattern) if p.is_file()}
  return sorted(found)


def copy_tokenizer_files(src: str | pathlib.Path | None, dst: str | os.PathLike) -> list[str]:
  """Copies tokenizer/chat-template files from `src` (a directory; None copies nothing) into `dst` (local or any
  URI etils.epath reaches)."""
  if src is None:
    return []
  src = pathlib.Path(src)
  if not src.is_dir():
    raise FileNotFoundError(f"tokenizer source {src} is not a directory")
  copied = []
  for path in tokenizer_files(src):
    epath.Path(path).copy(storage.as_path(dst) / path.name, overwrite=True)
    copied.append(path.name)
  return copied
