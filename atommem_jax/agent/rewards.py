"""Rewards: functions of a finished trajectory, injected into the rollout engines (`reward_fn=`).

A reward is any `reward_fn(trajectory) -> float` (the trajectory holds its questions, gold answers, accepted answers
and every turn), so exact match, F1, a variant scored on the last response, or a judge plug in without touching an
engine or an environment.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from atommem_jax.metrics.boxed import boxed_exact_match

RewardFn = Callable[[Any], float]


def episode_reward(answers: Sequence[str | None], golds: Sequence[Sequence[str]]) -> float:
  """Boxed exact match per question, averaged; an unanswered question scores 0."""
  scores = [boxed_exact_match(f"\\boxed{{{a}}}", g) if a is not None else 0.0 for a, g in zip(answers, golds)]
  return float(np.mean(scores))


def per_question_boxed_em(trajectory: Any) -> float:
  """The default reward: `episode_reward` of the trajectory's accepted answers against each question's golds."""
  return episode_reward(trajectory.answers, trajectory.gold_answers)
