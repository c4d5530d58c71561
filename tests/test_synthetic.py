"""The synthetic task, checked by a solver that reads only the generated text (documents and questions)."""
import re

import pytest

from atommem_jax.data import long_context, synthetic

_SENTENCE_PATTERNS = [
    (re.compile(r"^(\w+) was born in (\d+)\.$"), "born_year"),
    (re.compile(r"^(\w+) was born in (\w+)\.$"), "born_in"),
    (re.compile(r"^(\w+) is located in (\w+)\.$"), "located_in"),
    (re.compile(r"^(\w+) was founded by (\w+)\.$"), "founded_by"),
    (re.compile(r"^(\w+) is owned by (\w+)\.$"), "owned_by"),
]
_CHAINS = [
    (re.compile(r"^In which city was the founder of (\w+) born\?$"), ("founded_by", "born_in")),
    (re.compile(r"^In which year was the founder of (\w+) born\?$"), ("founded_by", "born_year")),
    (re.compile(r"^In which country was the founder of the owner of (\w+) born\?$"),
     ("owned_by", "founded_by", "born_in", "located_in")),
    (re.compile(r"^In which country was the founder of (\w+) born\?$"), ("founded_by", "born_in", "located_in")),
    (re.compile(r"^In which country was (\w+) born\?$"), ("born_in", "located_in")),
]
_EARLIER = re.compile(r"^Who was born earlier, (\w+) or (\w+)\?$")


def read_facts(documents):
  """(subject, relation) -> set of objects, from the sentences of `documents`."""
  facts = {}
  for doc in documents:
    for sentence in re.split(r"(?<=\.) ", doc.text):
      for pattern, relation in _SENTENCE_PATTERNS:
        match = pattern.match(sentence)
        if match:
          facts.setdefault((match.group(1), relation), set()).add(match.group(2))
          break
      else:
        raise AssertionError(f"unparsed sentence {sentence!r}")
  return facts


def solve(question, facts):
  """Every answer the facts support (an empty set: not answerable from these facts)."""
  match = _EARLIER.match(question)
  if match:
    years = [facts.get((name, "born_year"), set()) for name in match.groups()]
    if not all(len(y) == 1 for y in years) or years[0] == years[1]:
      return set()
    return {min(match.groups(), key=lambda name: int(next(iter(facts[(name, "born_year")]))))}
  for pattern, relations in _CHAINS:
    match = pattern.match(question)
    if match:
      entities = {match.group(1)}
      for relation in relations:
        entities = set().union(*(facts.get((e, relation), set()) for e in entities))
      return entities
  raise AssertionError(f"unparsed question {question!r}")


@pytest.fixture(scope="module")
def task():
  return synthetic.generate(synthetic.SyntheticConfig(seed=11, num_documents=200, num_questions=150))


def test_answers_are_unique_and_need_two_documents(task):
  world_facts = read_facts(task.documents)
  assert all(len(objects) == 1 for objects in world_facts.values())  # every relation is a function
  kinds = set()
  for question in task.questions:
    record = question.record
    kinds.add(question.kind)
    assert solve(record.question, world_facts) == {record.answers[0]}, record.question
    assert len(record.answers) == 1 and re.fullmatch(r"\w+", record.answers[0])
    assert len(record.gold) >= 2
    assert solve(record.question, read_facts(record.gold)) == {record.answers[0]}
    for missing in record.gold:
      remaining = [d for d in task.documents if d != missing]
      assert solve(record.question, read_facts(remaining)) == set(), (record.question, missing.title)
    # The facts an oracle stores are sentences of the gold documents.
    assert all(any(fact in doc.text for doc in record.gold) for fact in record.supporting_facts)
  assert kinds == set(synthetic.QUESTION_KINDS)
  assert len({q.record.question for q in task.questions}) == len(task.questions)
  assert len({q.record.id for q in task.questions}) == len(task.questions)


def test_hop_counts_and_short_documents(task):
  hops = {"founder_city": 2, "founder_year": 2, "birth_country": 2, "founder_country": 3, "owner_country": 4,
          "earlier": 2}
  for question in task.questions:
    assert len(question.record.gold) == hops[question.kind]
    assert len(question.facts) == hops[question.kind]
  assert all(1 <= doc.text.count(". ") + 1 <= 2 for doc in task.documents)
  words = {w for doc in task.documents for w in re.findall(r"[A-Za-z]+", doc.text)}
  assert len(words) <= 230  # names plus a handful of relation words: a small vocabulary


def test_deterministic_any_size_and_builder_compatible(task):
  assert synthetic.generate(synthetic.SyntheticConfig(seed=11, num_documents=200, num_questions=150)) == task
  assert synthetic.generate(synthetic.SyntheticConfig(seed=12, num_documents=200, num_questions=150)) != task
  for num_documents in (8, 33, 1000, 5000):
    small = synthetic.generate(synthetic.SyntheticConfig(seed=0, num_documents=num_documents, num_questions=4))
    assert len(small.documents) == num_documents == len(set(small.documents))
  corpus = task.corpus()
  examples = long_context.build_examples(corpus, long_context.LongContextConfig(num_docs=30, seed=2))
  assert len(examples) == 150 and all(e.num_docs == 30 for e in examples)
  for example, record in zip(examples, corpus.records):
    assert solve(record.question, read_facts(example.documents)) == {record.answers[0]}
  with pytest.raises(ValueError, match="only .* distinct questions"):
    synthetic.generate(synthetic.SyntheticConfig(num_documents=8, num_questions=500))
