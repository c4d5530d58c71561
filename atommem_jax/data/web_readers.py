"""Readers for the web benchmarks in their released files, all producing a `WebDataset` of `WebQuestion`s.

Formats:
- WebWalkerQA: a JSON list or JSON lines of `{question, answer, root_url, info}`; the original release spells the
  keys `Question`, `Answer`, `Root_Url`, `Info` (either spelling is accepted, per row). `info` is an object
  (`Hop`, `Domain`, `Language`, `Difficulty_Level`, `Source_Website`, `Golden_Path`, ...), kept as metadata.
- GAIA (2023 validation / test): `metadata.jsonl`, or a parquet file with the same columns: `task_id`, `Question`,
  `Level` (1-3, an int or a digit string), `Final answer`, `file_name` (an attachment beside the metadata file, may be
  empty), and optionally `Annotator Metadata`. The test split hides its answers as `"?"`: such a question has no gold
  answer (`answers == ()`), so every reward on it is 0.
- Plain: JSON lines of `{question, answers: [str, ...]}` with an optional string `id` and an optional `root_url`
  (the website to start from, as WebWalkerQA's).

A row that lacks a field or holds a wrong type raises one `DataFormatError` naming the file and the row (the list
index or the 0-based line number), or is skipped and counted with `WebReaderConfig(on_bad_row="skip")`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Literal

from atommem_jax.data.readers import _BadRow, _field, _load_rows, _string_list
from atommem_jax.data.records import DataFormatError, QARecord

WEB_DATASETS = ("webwalkerqa", "gaia", "plain")
GAIA_HIDDEN_ANSWER = "?"


@dataclasses.dataclass(frozen=True)
class WebReaderConfig:
  """How a reader treats rows it cannot use.

  Attributes:
    on_bad_row: "raise" stops at the first malformed row; "skip" drops it and counts it in `num_skipped`.
    skip_attachments: GAIA questions that come with a file are dropped (the text-only subset) when True.
  """

  on_bad_row: Literal["raise", "skip"] = "raise"
  skip_attachments: bool = False


@dataclasses.dataclass(frozen=True)
class WebQuestion:
  """One web question.

  Attributes:
    record: id, question, answers and source (`webwalkerqa`, `gaia`, `plain`); no gold paragraphs (the evidence is
      on the web).
    root_url: WebWalkerQA's website to start from ("" elsewhere).
    level: GAIA's difficulty level 1-3 (0 elsewhere).
    attachment: GAIA's attached file as a path beside the metadata file ("" when none).
    metadata: the remaining fields (WebWalkerQA `info`, GAIA `Annotator Metadata`) as sorted (key, JSON text) pairs.
  """

  record: QARecord
  root_url: str = ""
  level: int = 0
  attachment: str = ""
  metadata: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class WebDataset:
  questions: tuple[WebQuestion, ...]
  num_skipped: int = 0


def _record(qid: str, question: str, answers: tuple[str, ...], source: str) -> QARecord:
  return QARecord(id=qid, question=question, answers=answers, gold=(), supporting_facts=(), source=source)


def _either(row: Any, keys: tuple[str, str], kind: type) -> Any:
  """The field under its lower-case key or its original capitalised one."""
  if isinstance(row, dict) and keys[0] not in row and keys[1] in row:
    return _field(row, keys[1], kind)
  return _field(row, keys[0], kind)


def _metadata(value: Any) -> tuple[tuple[str, str], ...]:
  if value is None:
    return ()
  if not isinstance(value, dict):
    raise _BadRow(f"metadata should be an object, got {type(value).__name__}")
  return tuple(sorted((str(k), json.dumps(v, ensure_ascii=False, default=str)) for k, v in value.items()))


def _webwalker_row(row: Any, index: int, path: str) -> WebQuestion | None:
  question = _either(row, ("question", "Question"), str)
  answer = _either(row, ("answer", "Answer"), str)
  root_url = _either(row, ("root_url", "Root_Url"), str)
  info = row.get("info", row.get("Info"))
  qid = row.get("id", f"webwalkerqa-{index}")
  if not isinstance(qid, str):
    raise _BadRow(f"field 'id' should be str, got {type(qid).__name__}")
  return WebQuestion(record=_record(qid, question, (answer,), "webwalkerqa"), root_url=root_url,
                     metadata=_metadata(info))


def _gaia_row(row: Any, index: int, path: str) -> WebQuestion | None:
  del index
  qid = _field(row, "task_id", str)
  question = _field(row, "Question", str)
  level = _field(row, "Level", (int, str))
  if isinstance(level, str) and not level.strip().isdigit():
    raise _BadRow(f"field 'Level' should be an integer, got {level!r}")
  answer = _field(row, "Final answer", str)
  file_name = _field(row, "file_name", str) if row.get("file_name") is not None else ""
  attachment = os.path.join(os.path.dirname(os.path.abspath(path)), file_name) if file_name else ""
  answers = () if answer.strip() == GAIA_HIDDEN_ANSWER else (answer,)
  return WebQuestion(record=_record(qid, question, answers, "gaia"), level=int(level), attachment=attachment,
                     metadata=_metadata(row.get("Annotator Metadata")))


def _plain_row(row: Any, index: int, path: str) -> WebQuestion | None:
  del path
  question = _field(row, "question", str)
  answers = tuple(_string_list(_field(row, "answers", list), "field 'answers'"))
  qid = row.get("id", f"plain-{index}")
  if not isinstance(qid, str):
    raise _BadRow(f"field 'id' should be str, got {type(qid).__name__}")
  root_url = _field(row, "root_url", str) if "root_url" in row else ""
  return WebQuestion(record=_record(qid, question, answers, "plain"), root_url=root_url)


def _parquet_rows(path: str) -> list[tuple[int, Any]]:
  try:
    import pyarrow.parquet as pq
  except ImportError as err:  # pragma: no cover - pyarrow is a pinned dependency
    raise DataFormatError(f"{path}: reading parquet needs pyarrow ({err})") from None
  try:
    rows = pq.read_table(path).to_pylist()
  except Exception as err:  # pyarrow raises its own error types for a corrupt file
    raise DataFormatError(f"{path}: not a readable parquet file ({err})") from None
  if not rows:
    raise DataFormatError(f"{path}: the parquet file holds no rows")
  return list(enumerate(rows))


def _json_or_lines(path: str) -> tuple[list[tuple[int, Any]], str]:
  """(rows, "row" | "line"): a JSON list if the file starts with `[`, JSON lines otherwise."""
  if not os.path.isfile(path):
    raise DataFormatError(f"{path}: file does not exist")
  with open(path, encoding="utf-8") as f:
    json_list = f.read(4096).lstrip().startswith("[")
  return _load_rows(path, json_lines=not json_list), "row" if json_list else "line"


_ROW_PARSERS = {"webwalkerqa": _webwalker_row, "gaia": _gaia_row, "plain": _plain_row}


def read_web_dataset(dataset: str, path: str, config: WebReaderConfig = WebReaderConfig()) -> WebDataset:
  """Reads a WebWalkerQA / GAIA / plain file (see the module docstring)."""
  if dataset not in _ROW_PARSERS:
    raise ValueError(f"unknown web dataset {dataset!r}; known: {WEB_DATASETS}")
  if path.endswith(".parquet"):
    rows, unit = _parquet_rows(path), "row"
  else:
    rows, unit = _json_or_lines(path)
  parse = _ROW_PARSERS[dataset]
  questions, num_skipped = [], 0
  for index, row in rows:
    try:
      if isinstance(row, _BadRow):
        raise row
      question = parse(row, index, path)
    except _BadRow as e:
      if config.on_bad_row == "skip":
        num_skipped += 1
        continue
      raise DataFormatError(f"{path}: {unit} {index}: {e}") from None
    if config.skip_attachments and question.attachment:
      continue
    questions.append(question)
  if not questions:
    raise DataFormatError(f"{path}: no usable questions ({num_skipped} malformed rows skipped)")
  return WebDataset(questions=tuple(questions), num_skipped=num_skipped)


def read_webwalkerqa(path: str, config: WebReaderConfig = WebReaderConfig()) -> WebDataset:
  return read_web_dataset("webwalkerqa", path, config)


def read_gaia(path: str, config: WebReaderConfig = WebReaderConfig()) -> WebDataset:
  return read_web_dataset("gaia", path, config)


def read_plain_questions(path: str, config: WebReaderConfig = WebReaderConfig()) -> WebDataset:
  return read_web_dataset("plain", path, config)
