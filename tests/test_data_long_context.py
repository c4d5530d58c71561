"""The long-context builder on the real HotpotQA sample and on the synthetic task, and its CLI."""
import collections
import json
import os
import subprocess
import sys

import pytest

from atommem_jax.data import long_context, readers, synthetic
from atommem_jax.data.long_context import LongContextConfig

HOTPOT_SAMPLE = os.path.join(os.path.dirname(__file__), "data", "hotpotqa_dev_sample.json")


@pytest.fixture(scope="module")
def hotpot():
  return readers.read_hotpotqa(HOTPOT_SAMPLE)


def _check_example(example, records_by_id, num_docs):
  assert example.num_docs == num_docs == len(example.documents)
  assert len(set(example.documents)) == num_docs, "duplicate documents"
  counts = collections.Counter(example.documents)
  for qid, gold_numbers in zip(example.question_ids, example.gold_documents):
    gold = records_by_id[qid].gold
    assert all(counts[p] == 1 for p in gold), "a gold paragraph is missing or repeated"
    assert {example.documents[i - 1] for i in gold_numbers} == set(gold)
  blocks = example.context.split("\n\n")
  assert len(blocks) == num_docs  # HotpotQA paragraphs hold no blank lines
  for i, (block, doc) in enumerate(zip(blocks, example.documents)):
    assert block == f"Document {i + 1}:\n{doc.title}\n{doc.text}"


def test_hotpot_examples(hotpot):
  config = LongContextConfig(num_docs=50, seed=3)
  examples = long_context.build_examples(hotpot, config)
  records_by_id = {r.id: r for r in hotpot.records}
  assert [e.id for e in examples] == [r.id for r in hotpot.records]
  for example in examples:
    _check_example(example, records_by_id, 50)
  # Gold paragraphs land at different places in different examples.
  assert len({e.gold_documents[0] for e in examples}) > 40
  assert long_context.build_examples(hotpot, config) == examples
  other_seed = long_context.build_examples(hotpot, LongContextConfig(num_docs=50, seed=4))
  assert [e.documents for e in other_seed] != [e.documents for e in examples]
  assert long_context.LongContextExample.from_json(json.loads(json.dumps(examples[0].to_json()))) == examples[0]


def test_whole_pool_orders_differ_per_example(hotpot):
  # With num_docs == pool size every example holds the same set of documents, so only the order can differ.
  examples = long_context.build_examples(hotpot, LongContextConfig(num_docs=len(hotpot.pool), seed=0))
  assert all(set(e.documents) == set(hotpot.pool) for e in examples)
  assert len({e.documents for e in examples}) == len(examples)


def test_pool_too_small_and_too_many_gold(hotpot):
  with pytest.raises(ValueError, match=r"pool holds 521 distinct paragraphs, fewer than num_docs=600"):
    long_context.build_examples(hotpot, LongContextConfig(num_docs=600))
  with pytest.raises(ValueError, match=r"has 2 gold paragraphs, more than num_docs=1"):
    long_context.build_examples(hotpot, LongContextConfig(num_docs=1))


def test_bundles_hold_every_question_gold():
  corpus = synthetic.generate(synthetic.SyntheticConfig(seed=1, num_documents=120, num_questions=60)).corpus()
  config = LongContextConfig(num_docs=60, seed=5, single_question_fraction=0.3, min_bundle_size=2,
                             max_bundle_size=10)
  examples = long_context.build_examples(corpus, config)
  sizes = [len(e.questions) for e in examples]
  assert all(s == 1 or 2 <= s <= 10 for s in sizes[:-1]) and 1 in sizes and max(sizes) > 2
  question_ids = [q for e in examples for q in e.question_ids]
  assert sorted(question_ids) == sorted(r.id for r in corpus.records)  # each question exactly once
  records_by_id = {r.id: r for r in corpus.records}
  for example in examples:
    _check_example(example, records_by_id, 60)
    assert example.id == "|".join(example.question_ids)
    assert list(example.answers) == [records_by_id[q].answers for q in example.question_ids]
  assert long_context.build_examples(corpus, config) == examples


def _run_build(tmp_path, name, *flags):
  output = tmp_path / name
  subprocess.run([sys.executable, "-m", "atommem_jax.data.build", *flags, f"--output={output}"], check=True,
                 capture_output=True, text=True)
  return output.read_bytes()


def test_cli_is_byte_identical_for_a_seed(tmp_path):
  if not os.path.exists(HOTPOT_SAMPLE):
    pytest.skip("the shared HotpotQA sample is not present")
  flags = ["--dataset=hotpotqa", f"--input={HOTPOT_SAMPLE}", "--num_docs=100", "--seed=7"]
  first, second = _run_build(tmp_path, "a.jsonl", *flags), _run_build(tmp_path, "b.jsonl", *flags)
  assert first == second
  rows = [json.loads(line) for line in first.decode().splitlines()]
  assert len(rows) == 53
  assert all(set(r) >= {"id", "context", "questions", "answers", "num_docs"} and r["num_docs"] == 100 for r in rows)
  assert all(isinstance(r["answers"], list) and isinstance(r["answers"][0], list) for r in rows)
  assert rows[0]["context"].startswith("Document 1:\n")

  result = subprocess.run([sys.executable, "-m", "atommem_jax.data.build", "--dataset=hotpotqa",
                           f"--input={HOTPOT_SAMPLE}", "--num_docs=1000", f"--output={tmp_path / 'c.jsonl'}"],
                          capture_output=True, text=True)
  assert result.returncode != 0 and "fewer than num_docs=1000" in result.stderr
  assert not (tmp_path / "c.jsonl").exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
