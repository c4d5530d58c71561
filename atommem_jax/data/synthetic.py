"""A synthetic multi-hop QA task small enough for a tiny model on CPU, in the readers' record format.

A world of invented entities (one-word names built from a small syllable set) with functional relations:

  person  --born_in-->     city        "Kalomi was born in Tesuna."
  person  --born_year-->   year        "Kalomi was born in 1875."
  city    --located_in-->  country     "Tesuna is located in Vorika."
  company --founded_by-->  person      "Rativo was founded by Kalomi."
  company --owned_by-->    company     "Rativo is owned by Dabesu."

Every person, city and company has one document titled with its name holding its facts (1-2 short sentences);
countries have none. Questions chain 2-4 of those documents, or compare two people:

  founder_city     (2 docs)  In which city was the founder of C born?
  founder_year     (2 docs)  In which year was the founder of C born?
  birth_country    (2 docs)  In which country was P born?
  founder_country  (3 docs)  In which country was the founder of C born?
  owner_country    (4 docs)  In which country was the founder of the owner of C born?
  earlier          (2 docs)  Who was born earlier, P or Q?

Each fact lives in exactly one document and every relation is a function, so each answer is unique, a single word,
and cannot be derived once any of its supporting documents is removed. The documents not supporting a question are
its distractors. Generation is a pure function of `SyntheticConfig`.
"""
from __future__ import annotations

import dataclasses
import random

from atommem_jax.data.records import Corpus, Paragraph, QARecord

SYLLABLES = ("ka", "lo", "mi", "ra", "te", "su", "no", "vi", "da", "pe", "zu", "ri", "ba", "fo", "ne", "ti")
QUESTION_KINDS = ("founder_city", "founder_year", "birth_country", "founder_country", "owner_country", "earlier")
# The 256 two-syllable names. Worlds needing at most half of them use only these, and the tiny tokenizer holds each
# (with and without a leading space) as one token, so a tiny model copies a name in one step.
SHORT_NAMES = tuple(sorted((a + b).capitalize() for a in SYLLABLES for b in SYLLABLES))
MIN_DOCUMENTS = 8
MAX_DOCUMENTS = 30000  # names are 2-4 syllables; beyond this the 16**3 + 16**4 names of large worlds run short
YEARS = (1700, 2000)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """The size and seed of a synthetic world.

  Attributes:
    seed: everything (names, facts, questions) is a function of it.
    num_documents: the world's documents (the paragraph pool), split about 45% people, 15% cities, 40% companies.
    num_questions: distinct questions drawn from the world.
    question_kinds: which question templates to draw from (see the module docstring).
  """

  seed: int = 0
  num_documents: int = 256
  num_questions: int = 64
  question_kinds: tuple[str, ...] = QUESTION_KINDS

  def __post_init__(self):
    if not MIN_DOCUMENTS <= self.num_documents <= MAX_DOCUMENTS:
      raise ValueError(f"num_documents must be in [{MIN_DOCUMENTS}, {MAX_DOCUMENTS}], got {self.num_documents}")
    unknown = sorted(set(self.question_kinds) - set(QUESTION_KINDS))
    if unknown or not self.question_kinds:
      raise ValueError(f"question_kinds {unknown or '()'} invalid; choose from {QUESTION_KINDS}")


@dataclasses.dataclass(frozen=True)
class Fact:
  """One relation instance and the sentence (in the document titled `title`) that states it."""

  subject: str
  relation: str
  object: str
  title: str
  sentence: str


@dataclasses.dataclass(frozen=True)
class SyntheticQuestion:
  """A question with the facts that answer it, in reasoning order."""

  record: QARecord
  kind: str
  facts: tuple[Fact, ...]


@dataclasses.dataclass(frozen=True)
class SyntheticTask:
  """The world (facts, documents) and the questions asked about it."""

  facts: tuple[Fact, ...]
  documents: tuple[Paragraph, ...]
  questions: tuple[SyntheticQuestion, ...]

  def corpus(self) -> Corpus:
    """The task as the readers' `Corpus`: the long-context builder takes it unchanged."""
    return Corpus(records=tuple(q.record for q in self.questions), pool=self.documents,
                  num_paragraphs=len(self.documents))


def _names(rng: random.Random, count: int) -> list[str]:
  names: set[str] = set()
  while len(names) < count:
    # Longer names only as the world grows, so small worlds keep short names (and a tiny model short tokens).
    length = (2 if count <= len(SHORT_NAMES) // 2 else
              rng.choice((2, 2, 3) if count < 150 else (2, 3, 3) if count < 3500 else (3, 4, 4)))
    names.add("".join(rng.choice(SYLLABLES) for _ in range(length)).capitalize())
  return sorted(names)  # sorted, then shuffled: independent of set iteration order


class _World:
  """The entities and their facts, indexed for question generation."""

  def __init__(self, rng: random.Random, num_documents: int):
    num_people = max(2, round(0.45 * num_documents))
    num_cities = max(1, round(0.15 * num_documents))
    num_companies = max(2, num_documents - num_people - num_cities)
    num_people = num_documents - num_cities - num_companies
    num_countries = max(2, num_cities // 3)
    names = _names(rng, num_people + num_cities + num_companies + num_countries)
    rng.shuffle(names)
    self.people, rest = names[:num_people], names[num_people:]
    self.cities, rest = rest[:num_cities], rest[num_cities:]
    self.companies, self.countries = rest[:num_companies], rest[num_companies:]
    self.country_of = {c: rng.choice(self.countries) for c in self.cities}
    self.city_of = {p: rng.choice(self.cities) for p in self.people}
    self.year_of = {p: rng.randrange(*YEARS) for p in self.people}
    self.founder_of = {c: rng.choice(self.people) for c in self.companies}
    # Ownership points to an earlier company in list order, so it can never form a cycle.
    self.owner_of = {c: rng.choice(self.companies[:i]) for i, c in enumerate(self.companies)
                     if i > 0 and rng.random() < 0.5}

    self.facts: dict[tuple[str, str], Fact] = {}
    documents = []

    def state(subject: str, relation: str, obj: str, sentence: str) -> Fact:
      fact = Fact(subject, relation, obj, subject, sentence)
      self.facts[(subject, relation)] = fact
      return fact

    for p in self.people:
      documents.append((p, [state(p, "born_in", self.city_of[p], f"{p} was born in {self.city_of[p]}."),
                            state(p, "born_year", str(self.year_of[p]), f"{p} was born in {self.year_of[p]}.")]))
    for c in self.cities:
      documents.append((c, [state(c, "located_in", self.country_of[c], f"{c} is located in {self.country_of[c]}.")]))
    for c in self.companies:
      facts = [state(c, "founded_by", self.founder_of[c], f"{c} was founded by {self.founder_of[c]}.")]
      if c in self.owner_of:
        facts.append(state(c, "owned_by", self.owner_of[c], f"{c} is owned by {self.owner_of[c]}."))
      documents.append((c, facts))
    rng.shuffle(documents)
    self.documents = [Paragraph(title, " ".join(f.sentence for f in facts)) for title, facts in documents]
    self.document_of = {p.title: p for p in self.documents}

  def chain(self, start: str, relations: tuple[str, ...]) -> tuple[Fact, ...]:
    facts, entity = [], start
    for relation in relations:
      fact = self.facts[(entity, relation)]
      facts.append(fact)
      entity = fact.object
    return tuple(facts)

  def draw(self, rng: random.Random, kind: str) -> tuple[str, tuple[Fact, ...], str] | None:
    """(question, supporting facts, answer) of the given kind, or None if this world has no instance of it."""
    if kind == "earlier":
      p, q = rng.sample(self.people, 2)
      if self.year_of[p] == self.year_of[q]:
        return None
      facts = (self.facts[(p, "born_year")], self.facts[(q, "born_year")])
      return f"Who was born earlier, {p} or {q}?", facts, min((p, q), key=self.year_of.__getitem__)
    if kind == "birth_country":
      p = rng.choice(self.people)
      facts = self.chain(p, ("born_in", "located_in"))
      return f"In which country was {p} born?", facts, facts[-1].object
    if kind == "owner_country":
      if not self.owner_of:
        return None
      c = rng.choice(sorted(self.owner_of))
      facts = self.chain(c, ("owned_by", "founded_by", "born_in", "located_in"))
      return f"In which country was the founder of the owner of {c} born?", facts, facts[-1].object
    c = rng.choice(self.companies)
    relations, template = {
        "founder_city": (("founded_by", "born_in"), "In which city was the founder of {} born?"),
        "founder_year": (("founded_by", "born_year"), "In which year was the founder of {} born?"),
        "founder_country": (("founded_by", "born_in", "located_in"), "In which country was the founder of {} born?"),
    }[kind]
    facts = self.chain(c, relations)
    return template.format(c), facts, facts[-1].object


def generate(config: SyntheticConfig = SyntheticConfig()) -> SyntheticTask:
  """A world of `config.num_documents` documents and `config.num_questions` distinct questions about it."""
  rng = random.Random(config.seed)
  world = _World(rng, config.num_documents)
  questions: dict[str, SyntheticQuestion] = {}
  attempts = 0
  while len(questions) < config.num_questions:
    attempts += 1
    if attempts > 50 * config.num_questions + 1000:
      raise ValueError(f"a world of {config.num_documents} documents yields only {len(questions)} distinct "
                       f"questions of kinds {config.question_kinds}; {config.num_questions} were asked for")
    kind = rng.choice(config.question_kinds)
    drawn = world.draw(rng, kind)
    if drawn is None or drawn[0] in questions:
      continue
    question, facts, answer = drawn
    gold = tuple(dict.fromkeys(world.document_of[f.title] for f in facts))
    record = QARecord(id=f"synthetic-{config.seed}-{len(questions)}", question=question, answers=(answer,),
                      gold=gold, supporting_facts=tuple(f.sentence for f in facts), source="synthetic")
    questions[question] = SyntheticQuestion(record=record, kind=kind, facts=facts)
  return SyntheticTask(facts=tuple(world.facts.values()), documents=tuple(world.documents),
                       questions=tuple(questions.values()))
