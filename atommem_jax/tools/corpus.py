"""A web corpus: pages read from JSON lines, their text, and how that text is cut into parts and passages.

Corpus file: one JSON object per line, `{"url": str, "title": str, "html": str}` or `{"url", "title", "text"}`
(exactly one of `html` / `text`). HTML becomes text with resiliparse's extractor (visible text with block structure,
link targets kept as `anchor (url)` so a reader can follow them). URLs are unique. A bad row raises one
`DataFormatError` naming the file and the 1-based line.

Token budgets are counted with a `PageTokenizer`: a `tokenizer.json` (Hugging Face `tokenizers`) when given, else a
regex that counts every word and every punctuation mark as one token. Both give character offsets, so parts and
passages are exact slices of the page's text.

- Parts (what `fetch_url` returns): part i holds tokens [i*B - 100, (i+1)*B + 100) of the page, B the budget: the
  released chunking, with 100 tokens of overlap on each side.
- Passages (what search indexes and quotes as snippets): consecutive, non-overlapping runs of `passage_tokens`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Iterator

import numpy as np

from atommem_jax.data.records import DataFormatError

PART_OVERLAP_TOKENS = 100
_WORD_RE = re.compile(r"\w+|[^\w\s]")


@dataclasses.dataclass(frozen=True)
class Page:
  url: str
  title: str
  text: str


def html_to_text(html: str) -> str:
  """Visible text of an HTML page, paragraphs on their own lines, links as `anchor (url)`."""
  from resiliparse.extract.html2text import extract_plain_text

  return extract_plain_text(html, preserve_formatting=True, main_content=False, links=True, list_bullets=True,
                            alt_texts=False).strip()


def _page_from_row(row: object) -> Page:
  if not isinstance(row, dict):
    raise ValueError(f"expected a JSON object, got {type(row).__name__}")
  for key in ("url", "title"):
    if not isinstance(row.get(key), str):
      raise ValueError(f"field {key!r} is missing or not a string")
  if not row["url"].strip():
    raise ValueError("field 'url' is empty")
  has_html, has_text = "html" in row, "text" in row
  if has_html == has_text:
    raise ValueError("a row needs exactly one of 'html' and 'text'")
  body = row["html"] if has_html else row["text"]
  if not isinstance(body, str):
    raise ValueError(f"field {'html' if has_html else 'text'!r} is not a string")
  text = html_to_text(body) if has_html else body.strip()
  return Page(url=row["url"].strip(), title=row["title"].strip(), text=text)


def iter_corpus(path: str | os.PathLike) -> Iterator[Page]:
  """The pages of a corpus file, in file order; a bad row raises `DataFormatError` naming file and line."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataFormatError(f"{path}: corpus file does not exist")
  first_line_of: dict[str, int] = {}
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        page = _page_from_row(json.loads(line))
      except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        message = f"not valid JSON ({err.msg})" if isinstance(err, json.JSONDecodeError) else str(err)
        raise DataFormatError(f"{path}:{line_no}: {message}") from None
      if page.url in first_line_of:
        raise DataFormatError(f"{path}:{line_no}: url {page.url!r} already appears on line {first_line_of[page.url]}")
      first_line_of[page.url] = line_no
      yield page
  if not first_line_of:
    raise DataFormatError(f"{path}: the corpus holds no pages")


def read_corpus(path: str | os.PathLike) -> list[Page]:
  return list(iter_corpus(path))


class PageTokenizer:
  """Token character spans of a text: a Hugging Face `tokenizer.json` file (or a directory holding one), or the
  word-and-punctuation regex when `path` is empty."""

  def __init__(self, path: str = ""):
    self.path = path
    self._tokenizer = None
    if path:
      from tokenizers import Tokenizer

      file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
      if not os.path.isfile(file):
        raise FileNotFoundError(f"page tokenizer {path}: no tokenizer.json")
      self._tokenizer = Tokenizer.from_file(file)

  def spans(self, text: str) -> np.ndarray:
    """(N, 2) int64 character [start, end) of each token, in order."""
    if self._tokenizer is None:
      return np.array([m.span() for m in _WORD_RE.finditer(text)], np.int64).reshape(-1, 2)
    offsets = self._tokenizer.encode(text, add_special_tokens=False).offsets
    return np.array(offsets, np.int64).reshape(-1, 2)

  def spans_batch(self, texts: list[str]) -> list[np.ndarray]:
    if self._tokenizer is None:
      return [self.spans(t) for t in texts]
    return [np.array(e.offsets, np.int64).reshape(-1, 2)
            for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]


def part_bounds(spans: np.ndarray, text_length: int, budget: int,
                overlap: int = PART_OVERLAP_TOKENS) -> list[tuple[int, int]]:
  """Character [start, end) of each part: tokens [i*budget - overlap, (i+1)*budget + overlap), clipped."""
  if budget < 1:
    raise ValueError(f"part budget must be >= 1 token, got {budget}")
  n = len(spans)
  if n <= budget:
    return [(0, text_length)]
  bounds = []
  for i in range(-(-n // budget)):
    first, last = max(0, i * budget - overlap), min(n, (i + 1) * budget + overlap) - 1
    # The first part starts at the text's start and the last ends at its end, so nothing is ever dropped.
    start = 0 if first == 0 else int(spans[first, 0])
    end = text_length if last == n - 1 else int(spans[last, 1])
    bounds.append((start, end))
  return bounds


def passage_bounds(spans: np.ndarray, text_length: int, passage_tokens: int) -> list[tuple[int, int]]:
  """Character [start, end) of consecutive passages of `passage_tokens` tokens (one passage for an empty text)."""
  n = len(spans)
  if n <= passage_tokens:
    return [(0, text_length)]
  bounds = []
  for first in range(0, n, passage_tokens):
    last = min(n, first + passage_tokens) - 1
    bounds.append((0 if first == 0 else int(spans[first, 0]), text_length if last == n - 1 else int(spans[last, 1])))
  return bounds
