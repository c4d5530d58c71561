"""Readers for HotpotQA, 2WikiMultihopQA and MuSiQue in their native files, all producing a `Corpus`.

Formats (as released by the dataset authors):
- HotpotQA: a JSON list of `{_id, question, answer, supporting_facts: [[title, sent_idx]], context: [[title,
  [sentences]]], ...}`. Sentences carry their own leading spaces, so a paragraph is `"".join(sentences)`.
- 2WikiMultihopQA: a JSON list of `{_id, type, question, context, supporting_facts, evidences, answer}` with
  HotpotQA's context layout; its sentences usually lack the leading space, so they are joined with one space
  wherever neither side of the boundary already has whitespace.
- MuSiQue: JSON lines of `{id, paragraphs: [{idx, title, paragraph_text, is_supporting}], question,
  question_decomposition, answer, answer_aliases, answerable}`; answers are `[answer, *answer_aliases]`.

Gold paragraphs are the paragraphs whose title is a supporting-fact title (HotpotQA, 2Wiki) or that are marked
`is_supporting` (MuSiQue); a record's `context` is every paragraph its row gives (what the released builder puts in
with `gold="all_context"`). A row that lacks a field or holds a wrong type raises one `DataFormatError` naming the
file and the row index, or is skipped and counted when `ReaderConfig.on_bad_row == "skip"`; a skipped row adds
nothing to the pool.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Literal

from atommem_jax.data.records import Corpus, DataFormatError, Paragraph, QARecord

DATASETS = ("hotpotqa", "2wiki", "musique")


@dataclasses.dataclass(frozen=True)
class ReaderConfig:
  """How a reader treats rows it cannot use.

  Attributes:
    on_bad_row: "raise" stops at the first malformed row with an error naming file and row; "skip" drops it and
      counts it in `Corpus.num_skipped`.
    keep_unanswerable: MuSiQue-full rows with `answerable: false` are kept only if True (the answer-F1 setting of
      the paper uses the answerable questions).
  """

  on_bad_row: Literal["raise", "skip"] = "raise"
  keep_unanswerable: bool = False


class _BadRow(Exception):
  """A problem inside one row; the reader adds the file and row index."""


def _field(row: Any, key: str, kind: type | tuple[type, ...]) -> Any:
  if not isinstance(row, dict):
    raise _BadRow(f"expected a JSON object, got {type(row).__name__}")
  if key not in row:
    raise _BadRow(f"missing field {key!r}")
  value = row[key]
  if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
    names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
    raise _BadRow(f"field {key!r} should be {names}, got {type(value).__name__}")
  return value


def _string_list(value: Any, where: str) -> list[str]:
  if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
    raise _BadRow(f"{where} should be a list of strings")
  return value


def _join_spaced(sentences: list[str]) -> str:
  text = ""
  for sentence in sentences:
    if text and sentence and not text[-1].isspace() and not sentence[0].isspace():
      text += " "
    text += sentence
  return text


def _wiki_style_row(row: Any, source: str, join: Callable[[list[str]], str]) -> tuple[QARecord, list[Paragraph]]:
  """HotpotQA and 2Wiki share the `context` / `supporting_facts` layout."""
  qid = _field(row, "_id", str)
  question = _field(row, "question", str)
  answer = _field(row, "answer", str)
  context = _field(row, "context", list)
  supporting = _field(row, "supporting_facts", list)
  paragraphs, sentences_by_title = [], {}
  for j, item in enumerate(context):
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
      raise _BadRow(f"context[{j}] should be [title, [sentences]]")
    sentences = _string_list(item[1], f"context[{j}][1]")
    paragraphs.append(Paragraph(item[0], join(sentences)))
    sentences_by_title.setdefault(item[0], sentences)
  gold_titles, facts = [], []
  for j, fact in enumerate(supporting):
    if not (isinstance(fact, list) and len(fact) == 2 and isinstance(fact[0], str) and isinstance(fact[1], int)):
      raise _BadRow(f"supporting_facts[{j}] should be [title, sentence_index]")
    title, sent_idx = fact
    if title not in sentences_by_title:
      raise _BadRow(f"supporting_facts[{j}] names title {title!r}, which is not in the context")
    if title not in gold_titles:
      gold_titles.append(title)
    # The released HotpotQA files hold a few supporting facts whose sentence index is past the paragraph's end;
    # the title is still gold, there is just no sentence text to report.
    if 0 <= sent_idx < len(sentences_by_title[title]):
      facts.append(sentences_by_title[title][sent_idx].strip())
  gold = tuple(dict.fromkeys(p for p in paragraphs if p.title in gold_titles))
  record = QARecord(id=qid, question=question, answers=(answer,), gold=gold, supporting_facts=tuple(facts),
                    source=source, context=tuple(dict.fromkeys(paragraphs)))
  return record, paragraphs


def _hotpotqa_row(row: Any) -> tuple[QARecord, list[Paragraph]]:
  return _wiki_style_row(row, "hotpotqa", "".join)


def _2wiki_row(row: Any) -> tuple[QARecord, list[Paragraph]]:
  _field(row, "type", str)
  _field(row, "evidences", list)
  return _wiki_style_row(row, "2wiki", _join_spaced)


def _musique_row(row: Any) -> tuple[QARecord, list[Paragraph]]:
  qid = _field(row, "id", str)
  question = _field(row, "question", str)
  answer = _field(row, "answer", str)
  aliases = _string_list(_field(row, "answer_aliases", list), "field 'answer_aliases'")
  _field(row, "answerable", bool)
  _field(row, "question_decomposition", list)
  paragraphs, gold = [], []
  for j, item in enumerate(_field(row, "paragraphs", list)):
    try:
      _field(item, "idx", int)
      paragraph = Paragraph(_field(item, "title", str), _field(item, "paragraph_text", str))
      supporting = _field(item, "is_supporting", bool)
    except _BadRow as e:
      raise _BadRow(f"paragraphs[{j}]: {e}") from None
    paragraphs.append(paragraph)
    if supporting and paragraph not in gold:
      gold.append(paragraph)
  record = QARecord(id=qid, question=question, answers=tuple(dict.fromkeys([answer, *aliases])), gold=tuple(gold),
                    supporting_facts=tuple(p.text for p in gold), source="musique",
                    context=tuple(dict.fromkeys(paragraphs)))
  return record, paragraphs


def _load_rows(path: str, json_lines: bool) -> list[tuple[int, Any]]:
  """(row index, parsed row) pairs; the row index is the list position or the 0-based line number."""
  if not os.path.isfile(path):
    raise DataFormatError(f"{path}: file does not exist")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if not text.strip():
    raise DataFormatError(f"{path}: file is empty")
  if json_lines:
    rows = []
    for line_no, line in enumerate(text.splitlines()):
      if not line.strip():
        continue
      try:
        rows.append((line_no, json.loads(line)))
      except json.JSONDecodeError as e:
        rows.append((line_no, _BadRow(f"not valid JSON ({e.msg})")))
    return rows
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise DataFormatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
  if not isinstance(data, list):
    raise DataFormatError(f"{path}: expected a JSON list of questions, got {type(data).__name__}")
  if not data:
    raise DataFormatError(f"{path}: the list of questions is empty")
  return list(enumerate(data))


_ROW_PARSERS = {"hotpotqa": _hotpotqa_row, "2wiki": _2wiki_row, "musique": _musique_row}


def read_dataset(dataset: str, path: str, config: ReaderConfig = ReaderConfig()) -> Corpus:
  """Reads a native HotpotQA / 2Wiki / MuSiQue file into a `Corpus`."""
  if dataset not in _ROW_PARSERS:
    raise ValueError(f"unknown dataset {dataset!r}; known: {DATASETS}")
  parse = _ROW_PARSERS[dataset]
  unit = "line" if dataset == "musique" else "row"
  records, pool, num_paragraphs, num_skipped = [], {}, 0, 0
  for index, row in _load_rows(path, json_lines=dataset == "musique"):
    try:
      if isinstance(row, _BadRow):
        raise row
      record, paragraphs = parse(row)
    except _BadRow as e:
      if config.on_bad_row == "skip":
        num_skipped += 1
        continue
      raise DataFormatError(f"{path}: {unit} {index}: {e}") from None
    if dataset == "musique" and not row["answerable"] and not config.keep_unanswerable:
      continue
    records.append(record)
    num_paragraphs += len(paragraphs)
    pool.update(dict.fromkeys(paragraphs))
  if not records:
    raise DataFormatError(f"{path}: no usable questions ({num_skipped} malformed rows skipped)")
  return Corpus(records=tuple(records), pool=tuple(pool), num_paragraphs=num_paragraphs, num_skipped=num_skipped)


def read_hotpotqa(path: str, config: ReaderConfig = ReaderConfig()) -> Corpus:
  return read_dataset("hotpotqa", path, config)


def read_2wiki(path: str, config: ReaderConfig = ReaderConfig()) -> Corpus:
  return read_dataset("2wiki", path, config)


def read_musique(path: str, config: ReaderConfig = ReaderConfig()) -> Corpus:
  return read_dataset("musique", path, config)
