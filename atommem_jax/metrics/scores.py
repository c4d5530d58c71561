"""Per-answer and per-row scores: the boxed-EM reward next to SQuAD EM / F1 / sub-EM.

EM, F1 and sub-EM score the content of the last `\\boxed{...}` when the prediction has one (with LaTeX text wrappers
unwrapped), and the whole prediction otherwise; boxed EM is 0 without a box. A row (one episode) with several
questions scores the mean over its questions.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from atommem_jax.metrics import boxed, squad


@dataclasses.dataclass(frozen=True)
class AnswerScores:
  em: float
  f1: float
  sub_em: float
  boxed_em: float

  def as_dict(self) -> dict[str, float]:
    return dataclasses.asdict(self)


def answer_text(prediction: str) -> str:
  """What EM / F1 / sub-EM compare: the last box's content if there is a box, else the prediction itself."""
  content = boxed.last_boxed(prediction)
  return prediction if content is None else boxed.unwrap_text_commands(content)


def score_answer(prediction: str, golds: Sequence[str]) -> AnswerScores:
  text = answer_text(prediction)
  return AnswerScores(em=squad.max_over_gold(squad.exact_match, text, golds),
                      f1=squad.max_over_gold(squad.f1, text, golds),
                      sub_em=squad.max_over_gold(squad.sub_exact_match, text, golds),
                      boxed_em=boxed.boxed_exact_match(prediction, golds))


def mean_scores(scores: Sequence[AnswerScores]) -> AnswerScores:
  if not scores:
    raise ValueError("mean of no scores")
  return AnswerScores(*(sum(getattr(s, f.name) for s in scores) / len(scores)
                        for f in dataclasses.fields(AnswerScores)))


def score_row(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> AnswerScores:
  """The mean over a row's questions; `predictions[i]` answers the question whose gold answers are `answers[i]`."""
  if len(predictions) != len(answers):
    raise ValueError(f"{len(predictions)} predictions for {len(answers)} questions")
  return mean_scores([score_answer(p, a) for p, a in zip(predictions, answers)])


def trajectory_reward(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> float:
  """The GRPO reward: mean boxed EM over the questions (an unanswered question counts as the empty string)."""
  return score_row(predictions, answers).boxed_em
