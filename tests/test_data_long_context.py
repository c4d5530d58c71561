"""The long-context builder on the real HotpotQA sample and on the synthetic task, and its CLI."""
import collections
import json
import os
import subprocess
import sys

import pytest

from atommem_jax.data import long_context, readers, synthetic
from atommem_jax.data.long_context import LongContextConfig
from atommem_jax.data.records import Paragraph, QARecord

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


def _raw_contexts():
  """Each question's context paragraphs straight from the dataset file, (title, "".join(sentences)) as the
  dataset's own format defines a paragraph."""
  with open(HOTPOT_SAMPLE, encoding="utf-8") as f:
    return {row["_id"]: {(title, "".join(sentences)) for title, sentences in row["context"]} for row in json.load(f)}


def test_released_builder_puts_each_questions_whole_context_in_once(tmp_path):
  rows = [json.loads(line) for line in _run_build(
      tmp_path, "released.jsonl", "--dataset=hotpotqa", f"--input={HOTPOT_SAMPLE}", "--num_docs=120", "--seed=2",
      "--gold=all_context", "--single_question_fraction=0.5").decode().splitlines()]
  contexts = _raw_contexts()
  assert sorted(q for r in rows for q in r["question_ids"]) == sorted(contexts)  # every question, once
  assert sum(len(c) == 10 for c in contexts.values()) == 52  # the sample's questions carry 10 paragraphs (one: 2)
  for row in rows:
    assert set(row) >= {"num_docs", "context", "questions", "answers"} and row["num_docs"] == 120
    example = long_context.LongContextExample.from_json(row)
    counts = collections.Counter((d.title, d.text) for d in example.documents)
    assert len(example.documents) == 120 and max(counts.values()) == 1
    for qid, gold_numbers in zip(example.question_ids, example.gold_documents):
      assert all(counts[p] == 1 for p in contexts[qid])  # hard distractors included, each exactly once
      assert {(example.documents[i - 1].title, example.documents[i - 1].text) for i in gold_numbers} == contexts[qid]
  sizes = collections.Counter(len(r["questions"]) for r in rows)
  assert sizes[1] and set(sizes) - {1} and max(sizes) <= 10  # singles and bundles both occur

  # Supporting-only examples hold just the supporting titles' paragraphs as gold.
  supporting = [json.loads(line) for line in _run_build(
      tmp_path, "supporting.jsonl", "--dataset=hotpotqa", f"--input={HOTPOT_SAMPLE}", "--num_docs=20",
      "--gold=supporting").decode().splitlines()]
  assert len(supporting) == 53 and all(len(r["gold_documents"][0]) == 2 for r in supporting)


def test_bundle_sizes_follow_the_configured_distribution():
  paragraphs = [Paragraph(f"t{i}", f"text {i}") for i in range(4000)]
  records = tuple(QARecord(id=f"q{i}", question=f"q{i}?", answers=("a",), gold=(p,), supporting_facts=(),
                           source="synthetic") for i, p in enumerate(paragraphs))
  config = LongContextConfig(num_docs=20, seed=11, single_question_fraction=0.5)
  groups = long_context.bundle_records(records, config)
  assert sorted(r.id for g in groups for r in g) == sorted(r.id for r in records)
  sizes = collections.Counter(len(g) for g in groups[:-1])  # the last bundle is cut short when records run out
  drawn = sum(sizes.values())
  assert abs(sizes[1] / drawn - 0.5) < 0.06  # 4 standard deviations at ~1100 draws
  assert set(sizes) <= set(range(1, 11))
  for size in range(2, 11):  # uniform over 2..10: ~61 each
    assert 30 < sizes[size] < 95, (size, sizes)
  # Everything single: file order kept; no bundle above the maximum either way.
  assert long_context.bundle_records(records[:5], LongContextConfig()) == [(r,) for r in records[:5]]


def test_too_small_n_for_the_bundles_gold_is_one_error_naming_both_numbers(hotpot):
  config = LongContextConfig(num_docs=30, seed=2, single_question_fraction=0.5, gold="all_context")
  with pytest.raises(ValueError, match=r"has (\d+) gold paragraphs, more than num_docs=30 .*at least \1") as err:
    long_context.build_examples(hotpot, config)
  assert str(err.value).count("gold paragraphs") == 1
  # The same N is fine for single questions with their 10 paragraphs each.
  single = long_context.build_examples(hotpot, LongContextConfig(num_docs=30, gold="all_context"))
  assert len(single) == 53
  with pytest.raises(ValueError, match="gold must be"):
    LongContextConfig(gold="context")
