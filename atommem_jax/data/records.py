"""The one record type every dataset reader (and the synthetic task) produces.

A `QARecord` is one question with its answers and its gold paragraphs; a `Corpus` is the records of one file together
with that file's paragraph pool (every paragraph of the file, deduplicated by (title, text)), which is where the
long-context builder draws its distractors from.
"""
from __future__ import annotations

import dataclasses


class DataFormatError(ValueError):
  """A data file that is missing, empty, or holds a row the reader cannot interpret (the message names which)."""


@dataclasses.dataclass(frozen=True, order=True)
class Paragraph:
  """A titled paragraph; two paragraphs are the same document iff title and text are equal."""

  title: str
  text: str

  def render(self, index: int) -> str:
    """The long-context rendering: `Document i:\\ntitle\\ntext` (i is 1-based)."""
    return f"Document {index}:\n{self.title}\n{self.text}"


@dataclasses.dataclass(frozen=True)
class QARecord:
  """One question of a multi-hop QA dataset, in a dataset-independent form.

  Attributes:
    id: the dataset's question id (`_id` / `id`).
    question: the question text.
    answers: every accepted answer; the first is the dataset's main answer (MuSiQue aliases follow it).
    gold: the paragraphs the question needs (supporting-fact titles, or MuSiQue's `is_supporting`), in file order.
    supporting_facts: the sentences the dataset marks as evidence, as text (HotpotQA / 2Wiki supporting-fact
      sentences, MuSiQue's supporting paragraphs, the synthetic task's facts); what an oracle would store.
    source: the dataset name (`hotpotqa`, `2wiki`, `musique`, `synthetic`).
    context: every paragraph the dataset gives with the question (HotpotQA's 10, hard distractors included;
      MuSiQue's 20; 2Wiki's context), deduplicated, in file order; () when the question comes with its gold
      paragraphs only (the synthetic task).
  """

  id: str
  question: str
  answers: tuple[str, ...]
  gold: tuple[Paragraph, ...]
  supporting_facts: tuple[str, ...]
  source: str
  context: tuple[Paragraph, ...] = ()

  @property
  def own_paragraphs(self) -> tuple[Paragraph, ...]:
    """The question's own paragraphs: its context, or its gold paragraphs where it has no context of its own."""
    return self.context or self.gold


@dataclasses.dataclass(frozen=True)
class Corpus:
  """The records of one file and its paragraph pool.

  Attributes:
    records: the questions, in file order (rows skipped as bad are absent).
    pool: every paragraph of the file (gold and distractor alike), deduplicated by (title, text), in first-seen
      order.
    num_paragraphs: paragraphs read before deduplication (the size of the file's contexts added up).
    num_skipped: rows dropped because they were malformed (only with `on_bad_row="skip"`).
  """

  records: tuple[QARecord, ...]
  pool: tuple[Paragraph, ...]
  num_paragraphs: int
  num_skipped: int = 0
