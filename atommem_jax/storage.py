"""Where a run's files live: a local directory or any filesystem `etils.epath` reaches (`gs://bucket/run`, ...).

Every workdir path (checkpoints, metrics, TensorBoard, exports, SFT pairs, plots) is an `epath.Path` made by
`as_path`: local paths become absolute (Orbax wants that), URIs are kept as they are. Object stores cannot append
to or rename a file, so whole-file writes go straight to the object (which appears complete or not at all) and
TensorBoard's event files are rewritten whole on each flush.
"""
from __future__ import annotations

import io
import os
from typing import Any

from etils import epath

PathLike = str | os.PathLike


def is_local(path: PathLike) -> bool:
  return "://" not in os.fspath(path)


def as_path(path: PathLike) -> epath.Path:
  """`path` as an `epath.Path`: absolute when local, untouched when a URI (never `cwd/gs:/bucket`)."""
  path = epath.Path(path)
  return path.absolute() if is_local(path) else path


class _EventFile:
  """A TensorBoard event file on an object store: buffered, the whole file rewritten at each flush."""

  def __init__(self, path: str):
    self.path = epath.Path(path)
    self.buffer = io.BytesIO()

  def write(self, data: bytes) -> None:
    self.buffer.write(data)

  def flush(self) -> None:
    self.path.write_bytes(self.buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _EventFiles:
  """tensorboardX's writer factory for URI schemes, through epath."""

  def open(self, path: str) -> Any:
    return _EventFile(path)

  def directory_check(self, path: str) -> None:
    epath.Path(path).mkdir(parents=True, exist_ok=True)


def summary_writer(logdir: epath.Path, purge_step: int | None = None) -> Any:
  """A tensorboardX `SummaryWriter` writing under `logdir`, local or a URI (through epath)."""
  from tensorboardX import SummaryWriter, record_writer  # pylint: disable=g-import-not-at-top
  for scheme in ("gs", "s3", "az", "hf"):  # the URI schemes epath knows
    record_writer.register_writer_factory(scheme, _EventFiles())
  return SummaryWriter(os.fspath(logdir), purge_step=purge_step)
