"""Writes long-context examples as JSON lines.

  python -m atommem_jax.data.build --dataset hotpotqa --input hotpot_dev_distractor_v1.json \\
      --num_docs 200 --seed 0 --output hotpot_200doc.jsonl
  python -m atommem_jax.data.build --dataset synthetic --num_docs 50 --seed 0 --output synthetic_50doc.jsonl

The released builder's examples (every question's own context paragraphs, half of the examples bundling 2..10
questions):

  python -m atommem_jax.data.build --dataset hotpotqa --input hotpot_dev_distractor_v1.json --num_docs 200 \\
      --gold all_context --single_question_fraction 0.5 --output hotpot_200doc_released.jsonl

Each line is `LongContextExample.to_json()`: `id, num_docs, questions, answers (list of lists), question_ids,
gold_documents, supporting_facts, context`. The file is written to a temporary name and renamed, so a failed run
leaves no partial output. The same flags give a byte-identical file. `--output` may not be `--input`, and an
existing `--output` is replaced only with `--overwrite`.
"""
from __future__ import annotations

from typing import Sequence

from absl import app, flags

from atommem_jax import atomic_files, cli
from atommem_jax.data import long_context, readers, synthetic
from atommem_jax.data.records import Corpus

_DATASET = flags.DEFINE_enum("dataset", None, [*readers.DATASETS, "synthetic"], "Which dataset format to read.")
_INPUT = flags.DEFINE_string("input", None, "The native dataset file (unused for synthetic).")
_NUM_DOCS = flags.DEFINE_integer("num_docs", 200, "Documents per example.")
_SEED = flags.DEFINE_integer("seed", 0, "Global seed for bundling, distractors and document order.")
_OUTPUT = flags.DEFINE_string("output", None, "The JSONL file to write.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --output if it exists.")
_SINGLE_FRACTION = flags.DEFINE_float("single_question_fraction", 1.0,
                                      "Fraction of single-question examples (released: 0.5).")
_MIN_BUNDLE = flags.DEFINE_integer("min_bundle_size", 2, "Smallest multi-question bundle.")
_MAX_BUNDLE = flags.DEFINE_integer("max_bundle_size", 10, "Largest multi-question bundle.")
_GOLD = flags.DEFINE_enum("gold", "supporting", ["all_context", "supporting"],
                          "A question's paragraphs put in: its supporting paragraphs, or its whole context "
                          "(hard distractors included; released: all_context).")
_ON_BAD_ROW = flags.DEFINE_enum("on_bad_row", "raise", ["raise", "skip"], "What to do with a malformed row.")
_SYNTHETIC_QUESTIONS = flags.DEFINE_integer("synthetic_num_questions", 64, "Questions in the synthetic world.")
_SYNTHETIC_DOCUMENTS = flags.DEFINE_integer(
    "synthetic_num_documents", 0, "Documents in the synthetic world; 0 means max(2 * num_docs, 64).")

flags.mark_flags_as_required(["dataset", "output"])


def load_corpus(dataset: str, path: str | None, *, seed: int, num_docs: int, on_bad_row: str = "raise",
                synthetic_num_questions: int = 64, synthetic_num_documents: int = 0) -> Corpus:
  """The corpus a build reads: a native file, or a synthetic world large enough for `num_docs`."""
  if dataset == "synthetic":
    num_documents = synthetic_num_documents or max(2 * num_docs, 64)
    return synthetic.generate(synthetic.SyntheticConfig(
        seed=seed, num_documents=num_documents, num_questions=synthetic_num_questions)).corpus()
  if not path:
    raise ValueError(f"--input is required for dataset {dataset!r}")
  return readers.read_dataset(dataset, path, readers.ReaderConfig(on_bad_row=on_bad_row))


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  atomic_files.check_output(_OUTPUT.value, overwrite=_OVERWRITE.value, inputs={"--input": _INPUT.value})
  # A bad input (DataFormatError included) is one line naming the file, row or example: `cli.run`.
  corpus = load_corpus(_DATASET.value, _INPUT.value, seed=_SEED.value, num_docs=_NUM_DOCS.value,
                       on_bad_row=_ON_BAD_ROW.value, synthetic_num_questions=_SYNTHETIC_QUESTIONS.value,
                       synthetic_num_documents=_SYNTHETIC_DOCUMENTS.value)
  config = long_context.LongContextConfig(num_docs=_NUM_DOCS.value, seed=_SEED.value,
                                          single_question_fraction=_SINGLE_FRACTION.value,
                                          min_bundle_size=_MIN_BUNDLE.value, max_bundle_size=_MAX_BUNDLE.value,
                                          gold=_GOLD.value)
  examples = long_context.build_examples(corpus, config)
  atomic_files.check_output(_OUTPUT.value, overwrite=_OVERWRITE.value)  # still free: nothing appeared meanwhile
  atomic_files.write_jsonl(_OUTPUT.value, [e.to_json() for e in examples])
  print(f"wrote {len(examples)} examples ({len(corpus.records)} questions, pool {len(corpus.pool)} paragraphs, "
        f"{corpus.num_skipped} rows skipped) to {_OUTPUT.value}")


if __name__ == "__main__":
  cli.run(main)
