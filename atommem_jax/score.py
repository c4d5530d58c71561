"""Scores a predictions file and prints one JSON object.

  python -m atommem_jax.score --predictions predictions.jsonl
  {"em": 0.5, "f1": 0.61, "sub_em": 0.5, "boxed_em": 0.5, "n": 2}

Each line is `{"prediction": str, "answers": [str, ...]}`. `boxed_em` is the reward: the content of the last
`\\boxed{...}` (balanced braces) lower-cased with all whitespace removed, equal to some gold answer normalised the same
way, and 0 when there is no box. `em`, `f1` and `sub_em` are SQuAD v1.1 style (lower-case, ASCII punctuation and
articles removed, whitespace collapsed; sub-EM: one normalised string contains the other, neither empty), maximised
over the gold answers; they score the boxed content when the prediction has a box and the whole prediction
otherwise. All four are means over the lines, fractions in [0, 1]; `n` is the number of lines.
"""
from __future__ import annotations

import json
from typing import Sequence

from absl import app, flags

from atommem_jax import atomic_files, cli
from atommem_jax.metrics import scores

_PREDICTIONS = flags.DEFINE_string("predictions", None, "JSONL file of {prediction, answers} lines.")
flags.mark_flag_as_required("predictions")


class PredictionsError(ValueError):
  """A predictions file that is missing, empty or holds a malformed line (the message names which)."""


def read_predictions(path: str) -> list[tuple[str, list[str]]]:
  rows = []
  for line_no, row in atomic_files.read_jsonl(path, PredictionsError):
    prediction, answers = row.get("prediction"), row.get("answers")
    if not isinstance(prediction, str):
      raise PredictionsError(f"{path}: line {line_no}: 'prediction' should be a string, got "
                             f"{type(prediction).__name__}")
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
      raise PredictionsError(f"{path}: line {line_no}: 'answers' should be a non-empty list of strings")
    rows.append((prediction, answers))
  if not rows:
    raise PredictionsError(f"{path}: file holds no predictions")
  return rows


def score_file(path: str) -> dict[str, float | int]:
  rows = read_predictions(path)
  mean = scores.mean_scores([scores.score_answer(prediction, answers) for prediction, answers in rows])
  return {**mean.as_dict(), "n": len(rows)}


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  print(json.dumps(score_file(_PREDICTIONS.value)))  # a PredictionsError is one line: `cli.run`


if __name__ == "__main__":
  cli.run(main)
