"""Long-context examples: a question's gold paragraphs hidden among random distractors from the file's pool.

An example holds one question or a bundle of 2..10 questions; its context is exactly `num_docs` distinct documents:
every bundled question's gold paragraphs plus distractors drawn from the pool (never a gold paragraph a second
time), in an order shuffled by a seed derived from the global seed and the example id, rendered
`Document i:\\ntitle\\ntext` and joined by blank lines. Which paragraphs are gold is `LongContextConfig.gold`:
"supporting" (the paragraphs the question's answer rests on) or "all_context" (every paragraph the dataset gives
with the question, hard distractors included: HotpotQA's 10, MuSiQue's 20; the released builder's choice). Everything is a function of (corpus, config): the same seed
gives the same examples byte for byte.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Any, Literal, Sequence

from atommem_jax.data import synthetic
from atommem_jax.data.records import Corpus, DataFormatError, Paragraph, QARecord


@dataclasses.dataclass(frozen=True)
class LongContextConfig:
  """How examples are assembled.

  Attributes:
    num_docs: documents per example (gold + distractors).
    seed: the global seed; bundling and every example's distractors and order derive from it.
    single_question_fraction: the probability that an example holds one question; otherwise it bundles a number
      of questions drawn uniformly from [min_bundle_size, max_bundle_size].
    min_bundle_size: the smallest multi-question bundle.
    max_bundle_size: the largest multi-question bundle.
    gold: which of a question's paragraphs are put in: "supporting" (its gold paragraphs) or "all_context" (every
      paragraph of its own context, hard distractors included; the released setting).
  The released run: `single_question_fraction=0.5`, bundles of 2..10, `gold="all_context"` (set by the released
  experiment files; the defaults here are the embedded default's).
  """

  num_docs: int = 200
  seed: int = 0
  single_question_fraction: float = 1.0
  min_bundle_size: int = 2
  max_bundle_size: int = 10
  gold: Literal["all_context", "supporting"] = "supporting"

  def __post_init__(self):
    if self.num_docs < 1:
      raise ValueError(f"num_docs must be >= 1, got {self.num_docs}")
    if not 0.0 <= self.single_question_fraction <= 1.0:
      raise ValueError(f"single_question_fraction must be in [0, 1], got {self.single_question_fraction}")
    if not 2 <= self.min_bundle_size <= self.max_bundle_size:
      raise ValueError(f"need 2 <= min_bundle_size <= max_bundle_size, got {self.min_bundle_size}, "
                       f"{self.max_bundle_size}")
    if self.gold not in ("all_context", "supporting"):
      raise ValueError(f"gold must be 'all_context' or 'supporting', got {self.gold!r}")


@dataclasses.dataclass(frozen=True)
class LongContextExample:
  """One rollout episode's data.

  Attributes:
    id: the question id, or the bundled ids joined by "|".
    documents: the `num_docs` documents in context order.
    questions: the bundled questions, in the order they are asked.
    question_ids: their dataset ids.
    answers: each question's accepted answers.
    supporting_facts: each question's evidence sentences (what an oracle stores).
    gold_documents: each question's gold paragraphs (as `LongContextConfig.gold` selects them) as 1-based document
      numbers in this context.
  """

  id: str
  documents: tuple[Paragraph, ...]
  questions: tuple[str, ...]
  question_ids: tuple[str, ...]
  answers: tuple[tuple[str, ...], ...]
  supporting_facts: tuple[tuple[str, ...], ...]
  gold_documents: tuple[tuple[int, ...], ...]

  @property
  def context(self) -> str:
    return "\n\n".join(doc.render(i + 1) for i, doc in enumerate(self.documents))

  @property
  def num_docs(self) -> int:
    return len(self.documents)

  def to_json(self) -> dict[str, Any]:
    """The JSONL row `python -m atommem_jax.data.build` writes (lists instead of tuples)."""
    return {
        "id": self.id,
        "num_docs": self.num_docs,
        "questions": list(self.questions),
        "answers": [list(a) for a in self.answers],
        "question_ids": list(self.question_ids),
        "gold_documents": [list(g) for g in self.gold_documents],
        "supporting_facts": [list(f) for f in self.supporting_facts],
        "context": self.context,
    }

  @classmethod
  def from_json(cls, row: dict[str, Any]) -> "LongContextExample":
    """Reads a row written by `to_json` back (documents are re-split from the rendered context)."""
    context, documents, i = row["context"], [], 1
    if not context.startswith("Document 1:\n"):
      raise DataFormatError(f"example {row['id']!r}: context does not start with 'Document 1:'")
    start = len("Document 1:\n")
    while start <= len(context):
      # Documents are found by the next header rather than by splitting on blank lines: paragraph text may hold
      # blank lines of its own.
      marker = f"\n\nDocument {i + 1}:\n"
      end = context.find(marker, start)
      block = context[start:] if end < 0 else context[start:end]
      title, _, text = block.partition("\n")
      documents.append(Paragraph(title, text))
      if end < 0:
        break
      start, i = end + len(marker), i + 1
    if len(documents) != row["num_docs"]:
      raise DataFormatError(f"example {row['id']!r}: context holds {len(documents)} documents, num_docs says "
                            f"{row['num_docs']}")
    return cls(id=row["id"], documents=tuple(documents), questions=tuple(row["questions"]),
               question_ids=tuple(row["question_ids"]), answers=tuple(tuple(a) for a in row["answers"]),
               supporting_facts=tuple(tuple(f) for f in row["supporting_facts"]),
               gold_documents=tuple(tuple(g) for g in row["gold_documents"]))


def example_rng(seed: int, example_id: str) -> random.Random:
  """A generator private to one example: stable across runs, processes and Python hash seeds."""
  digest = hashlib.sha256(f"{seed}\x00{example_id}".encode()).digest()
  return random.Random(int.from_bytes(digest[:8], "little"))


def bundle_records(records: Sequence[QARecord], config: LongContextConfig) -> list[tuple[QARecord, ...]]:
  """Groups records into single questions and bundles; with only singles, file order is kept.

  Bundles take records in a seeded random order; the last one is shorter when the records run out.
  """
  if config.single_question_fraction >= 1.0:
    return [(r,) for r in records]
  rng = random.Random(config.seed)
  order = list(records)
  rng.shuffle(order)
  groups, start = [], 0
  while start < len(order):
    size = 1 if rng.random() < config.single_question_fraction else rng.randint(config.min_bundle_size,
                                                                                config.max_bundle_size)
    groups.append(tuple(order[start:start + size]))
    start += size
  return groups


def gold_paragraphs(record: QARecord, gold: str) -> tuple[Paragraph, ...]:
  """The paragraphs of `record` an example must hold (`LongContextConfig.gold`)."""
  return record.own_paragraphs if gold == "all_context" else record.gold


def _bundle_gold(group: Sequence[QARecord], gold: str) -> list[Paragraph]:
  return list(dict.fromkeys(p for r in group for p in gold_paragraphs(r, gold)))


def build_example(group: Sequence[QARecord], pool: Sequence[Paragraph], pool_index: dict[Paragraph, int],
                  config: LongContextConfig) -> LongContextExample:
  """One example from a bundle of records; `pool_index` maps each pool paragraph to its position."""
  example_id = "|".join(r.id for r in group)
  gold = _bundle_gold(group, config.gold)
  num_distractors = config.num_docs - len(gold)
  if num_distractors < 0:
    raise ValueError(f"example {example_id!r} has {len(gold)} gold paragraphs, more than num_docs="
                     f"{config.num_docs}")
  excluded = {pool_index[p] for p in gold if p in pool_index}
  if len(pool) - len(excluded) < num_distractors:
    raise ValueError(f"the paragraph pool holds {len(pool)} paragraphs; example {example_id!r} needs "
                     f"{num_distractors} distractors besides its {len(gold)} gold paragraphs (num_docs="
                     f"{config.num_docs}); lower num_docs or read a larger file")
  rng = example_rng(config.seed, example_id)
  # Over-draw by the number of excluded paragraphs so filtering them out still leaves enough, without ever
  # materialising the (possibly million-paragraph) candidate list.
  drawn = rng.sample(range(len(pool)), min(len(pool), num_distractors + len(excluded)))
  distractors = [pool[i] for i in drawn if i not in excluded][:num_distractors]
  unshuffled = gold + distractors
  # Shuffling indices (not paragraphs) tells where each gold paragraph went without hashing all N documents.
  order = list(range(len(unshuffled)))
  rng.shuffle(order)
  documents = [unshuffled[i] for i in order]
  position = [0] * len(order)
  for new, old in enumerate(order):
    position[old] = new + 1
  gold_slot = {p: i for i, p in enumerate(gold)}
  return LongContextExample(
      id=example_id,
      documents=tuple(documents),
      questions=tuple(r.question for r in group),
      question_ids=tuple(r.id for r in group),
      answers=tuple(r.answers for r in group),
      supporting_facts=tuple(r.supporting_facts for r in group),
      gold_documents=tuple(tuple(sorted(position[gold_slot[p]] for p in gold_paragraphs(r, config.gold)))
                           for r in group),
  )


def build_examples(corpus: Corpus, config: LongContextConfig) -> list[LongContextExample]:
  """Every record of `corpus`, single or bundled, as a `num_docs`-document example.

  Every bundle is checked before any is built, so too small an N is one error naming the largest bundle."""
  if len(corpus.pool) < config.num_docs:
    raise ValueError(f"the paragraph pool holds {len(corpus.pool)} distinct paragraphs, fewer than num_docs="
                     f"{config.num_docs}")
  groups = bundle_records(corpus.records, config)
  sizes = [len(_bundle_gold(group, config.gold)) for group in groups]
  too_many = [i for i, size in enumerate(sizes) if size > config.num_docs]
  if too_many:
    worst = max(too_many, key=lambda i: sizes[i])
    raise ValueError(f"example {'|'.join(r.id for r in groups[worst])!r} has {sizes[worst]} gold paragraphs, more "
                     f"than num_docs={config.num_docs} ({len(too_many)} of {len(groups)} examples do; gold="
                     f"{config.gold!r}, {len(groups[worst])} question(s) bundled): raise num_docs to at least "
                     f"{sizes[worst]}, bundle fewer questions or use gold='supporting'")
  pool_index = {p: i for i, p in enumerate(corpus.pool)}
  return [build_example(group, corpus.pool, pool_index, config) for group in groups]


def build_synthetic_world(world: synthetic.SyntheticConfig, bundling: LongContextConfig, index: int
                          ) -> tuple[list[LongContextExample], tuple[synthetic.SyntheticQuestion, ...]]:
  """World `index` of a many-world synthetic task, as `(examples, questions)`: generated with seed
  `world.seed + index` and bundled on its own with seed `bundling.seed + index`, so no example mixes two worlds
  (worlds reuse names). The trainer's held-out worlds and the evaluation's `synthetic_worlds` are both built here."""
  task = synthetic.generate(dataclasses.replace(world, seed=world.seed + index))
  return build_examples(task.corpus(), dataclasses.replace(bundling, seed=bundling.seed + index)), task.questions
