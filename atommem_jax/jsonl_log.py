"""JSON-lines logs a run appends to (`metrics.jsonl`, `eval.jsonl`), kept whole across crashes and resumes.

Reading: a damaged line (cut short by a crash, invalid UTF-8 or JSON, not an object, no valid key) is reported with
its file and line and set aside in `<file>.damaged`, never a reason to drop the valid rows after it. Each set-aside
line becomes one JSON object there: `{"line", "reason", "text", "set_aside_at"}`, `text` holding the raw bytes
(undecodable ones as `\\udcXX` escapes, so `text.encode("utf-8", "surrogateescape")` gives them back).

Resuming from step s: rows with `step <= s` stay as they are, and any the checkpoint vouches for (`vouched`: the rows
it saved) but the file lost are put back. Rows with `step > s` were written by the interrupted run after its
checkpoint; they stay until the resumed run re-derives them (a row with the same key), so the file never holds a
row twice and nothing is dropped that has not been written again.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Any, Callable, Hashable, Iterable, Sequence

from absl import logging
from etils import epath

from atommem_jax import atomic_files, storage

DAMAGED_SUFFIX = ".damaged"

Row = dict[str, Any]
KeyFn = Callable[[Row], Hashable]


@dataclasses.dataclass(frozen=True)
class DamagedLine:
  path: epath.Path
  line_no: int
  raw: bytes
  reason: str

  def describe(self) -> str:
    return f"{self.path}: line {self.line_no}: {self.reason}"


def _parse(raw: bytes, validate: Callable[[Row], str | None]) -> Row | str:
  """The row on this line, or why it is damaged."""
  try:
    text = atomic_files.decode_line(raw)
  except ValueError as e:
    return str(e)
  try:
    row = json.loads(text)
  except json.JSONDecodeError as e:
    return f"not valid JSON ({e.msg} at column {e.colno})"
  if not isinstance(row, dict):
    return f"expected a JSON object, got {type(row).__name__}"
  return validate(row) or row


@dataclasses.dataclass(frozen=True)
class Line:
  """A valid row and the exact text it was read from (so a rewrite keeps it byte for byte)."""
  row: Row
  text: str

  @classmethod
  def of(cls, row: Row) -> "Line":
    return cls(row, json.dumps(row))


def read(path: str | os.PathLike, validate: Callable[[Row], str | None] = lambda row: None
         ) -> tuple[list[Line], list[DamagedLine], bool]:
  """(valid lines in file order, damaged lines, whether the file ends with a newline). Never raises for content; a
  missing file reads as empty."""
  path = epath.Path(path)
  if not path.exists():
    return [], [], True
  lines = path.read_bytes().split(b"\n")
  ends_with_newline = not lines[-1]
  if ends_with_newline:
    lines.pop()
  valid, damaged = [], []
  for line_no, raw in enumerate(lines, start=1):
    if not raw.strip():
      continue
    parsed = _parse(raw, validate)
    if isinstance(parsed, str):
      cut = line_no == len(lines) and not ends_with_newline
      damaged.append(DamagedLine(path, line_no, raw, f"{parsed}; the line has no end (cut short)" if cut else parsed))
    else:
      valid.append(Line(parsed, raw.decode("utf-8").rstrip("\r")))
  return valid, damaged, ends_with_newline


def set_aside(damaged: Sequence[DamagedLine]) -> epath.Path | None:
  """Appends the damaged lines to `<file>.damaged` (one JSON object each) and reports each; returns that path."""
  if not damaged:
    return None
  sidecar = damaged[0].path.with_name(damaged[0].path.name + DAMAGED_SUFFIX)
  now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  records = [{"line": d.line_no, "reason": d.reason, "text": d.raw.decode("utf-8", "surrogateescape"),
              "set_aside_at": now} for d in damaged]
  # ensure_ascii keeps undecodable bytes (lone surrogates after surrogateescape) writable and exact
  text = "".join(json.dumps(record) + "\n" for record in records)
  if not storage.is_local(sidecar):  # an object store cannot append: the object is written whole again
    atomic_files.write_text(sidecar, (sidecar.read_text(encoding="utf-8") if sidecar.exists() else "") + text)
  else:
    with open(sidecar, "a", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
  for d in damaged:
    logging.warning("%s; set aside in %s", d.describe(), sidecar)
  return sidecar


class ResumedLog:
  """One JSON-lines file, appended row by row, consistent with the step a run resumed from (module docstring).

  `key` identifies a row (the step for metrics; label and size for evaluations); every row has an integer "step".
  Only the writer (`write=True`, process 0) changes the file; the others only read it, to agree on `rows`.
  `repairs` says, one line each, what opening the file mended.
  """

  def __init__(self, path: str | os.PathLike, key: KeyFn, resume_step: int, *, write: bool,
               vouched: Sequence[Row] | None = None):
    self.path = storage.as_path(path)
    self.key = key
    self._write = write
    self.repairs: list[str] = []
    lines, damaged, ends_with_newline = read(self.path, has_step)
    kept = [line for line in lines if line.row["step"] <= resume_step]
    kept_keys = {key(line.row) for line in kept}
    restored = [Line.of(row) for row in vouched or () if key(row) not in kept_keys]
    # The rows this run stands on: those up to the resume step, whole again (a stable sort: file order per step).
    self._lines = sorted(kept + restored, key=lambda line: line.row["step"])
    self._stale = [line for line in lines if line.row["step"] > resume_step]
    if not write:
      return
    if damaged:
      sidecar = set_aside(damaged)
      self.repairs += [f"{d.describe()}; set aside in {sidecar}" for d in damaged]
    for line in restored:
      self.repairs.append(f"{self.path}: the row {key(line.row)} was missing; restored from the checkpoint of step "
                          f"{resume_step}")
      logging.warning("%s", self.repairs[-1])
    if damaged or restored:
      self._rewrite()
    elif not ends_with_newline:  # a whole last row without its newline: complete it before appending
      self._append_text("\n")

  @property
  def rows(self) -> list[Row]:
    return [line.row for line in self._lines]

  def append(self, rows: Iterable[Row]) -> None:
    new = [Line.of(row) for row in rows]
    self._lines += new
    if not self._write or not new:
      return
    if self._stale:
      keys = {self.key(line.row) for line in new}
      left = [line for line in self._stale if self.key(line.row) not in keys]
      replaced, self._stale = len(left) != len(self._stale), left
      if replaced or (left and max(line.row["step"] for line in new) <= max(line.row["step"] for line in left)):
        self._rewrite()  # the re-derived rows in place of the interrupted run's, the rest after them
        return
      # Rows the resumed run will not write again (its config changed): they stay where they are.
      self._stale = []
    self._append_text("".join(line.text + "\n" for line in new))

  def _append_text(self, text: str) -> None:
    if not storage.is_local(self.path):  # an object store cannot append: the object is written whole again
      self._rewrite()
      return
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(text)
      f.flush()

  def _rewrite(self) -> None:
    """The file as it should be now: this run's rows, then the interrupted run's not yet re-derived."""
    atomic_files.write_text(self.path, "".join(line.text + "\n" for line in [*self._lines, *self._stale]))


def has_step(row: Row) -> str | None:
  """Why `row` is no log row (no integer "step"), or None."""
  step = row.get("step")
  if not isinstance(step, int) or isinstance(step, bool):
    return "no integer 'step'"
  return None
