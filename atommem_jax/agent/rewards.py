"""Rewards: functions of a finished trajectory, injected into the rollout engines (`reward_fn=`).

A reward is any `reward_fn(trajectory) -> float` (the trajectory holds its questions, gold answers, accepted answers
and every turn), so exact match, F1, a variant scored on the last response, or a judge plug in without touching an
engine or an environment. A config names one of `REWARDS` (`AgentConfig.reward`); an engine given no `reward_fn`
uses that one. A reward may also score a whole rollout at once, `reward_fn.batch(trajectories) -> [float]` (`score`
uses it when present): the LLM judge's reward does, so a rollout's judge requests go out together.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from atommem_jax import op_table
from atommem_jax.metrics.boxed import boxed_exact_match
from atommem_jax.metrics.judge import JudgeConfig, LLMJudge, web_boxed_reward

RewardFn = Callable[[Any], float]
# `fn(question, final_response, answers) -> float`: the web rewards of `metrics.judge` (boxed window, LLM judge).
ResponseRewardFn = Callable[[str, str, Sequence[str]], float]
_ANSWER_NAMES = frozenset(spec.name for spec in op_table.OPS if spec.role == "answer")


def episode_reward(answers: Sequence[str | None], golds: Sequence[Sequence[str]]) -> float:
  """Boxed exact match per question, averaged; an unanswered question scores 0."""
  scores = [boxed_exact_match(f"\\boxed{{{a}}}", g) if a is not None else 0.0 for a, g in zip(answers, golds)]
  return float(np.mean(scores))


def per_question_boxed_em(trajectory: Any) -> float:
  """The default reward: `episode_reward` of the trajectory's accepted answers against each question's golds."""
  return episode_reward(trajectory.answers, trajectory.gold_answers)


def score(reward_fn: RewardFn, trajectories: Sequence[Any]) -> list[float]:
  """`reward_fn` over a rollout's trajectories: in one call where the reward scores batches (`reward_fn.batch`)."""
  batch = getattr(reward_fn, "batch", None)
  scores = batch(trajectories) if batch is not None else [reward_fn(t) for t in trajectories]
  return [float(s) for s in scores]


def per_question_response_reward(fn: ResponseRewardFn) -> RewardFn:
  """A reward on a final response (`metrics.judge.make_reward_fn`: the released boxed window or an LLM judge) as a
  trajectory reward: each question's accepted answer is given to `fn` as the protocol boxes it, averaged over the
  questions; an unanswered question scores 0 without calling `fn` (no judge request for an empty answer). Where `fn`
  grades many answers at once (`LLMJudge.judge_batch`, concurrent requests), the reward's `batch` sends every
  answered question of the rollout in one such call."""

  def reward(trajectory: Any) -> float:
    return batch([trajectory])[0]

  def batch(trajectories: Sequence[Any]) -> list[float]:
    asked = [(r, i) for r, t in enumerate(trajectories) for i, a in enumerate(t.answers) if a is not None]
    args = ([trajectories[r].questions[i] for r, i in asked],
            [f"\\boxed{{{trajectories[r].answers[i]}}}" for r, i in asked],
            [trajectories[r].gold_answers[i] for r, i in asked])
    judge_batch = getattr(fn, "judge_batch", None)
    verdicts = judge_batch(*args) if judge_batch is not None else [fn(*a) for a in zip(*args)]
    graded = dict(zip(asked, verdicts))
    return [float(np.mean([graded.get((r, i), 0.0) for i in range(len(t.questions))]))
            for r, t in enumerate(trajectories)]

  reward.batch = batch
  return reward


def accepted_answers(trajectory: Any) -> list[str]:
  """Every answer the environment accepted, in the order written (each turn's valid answer ops)."""
  return [op["text"] for turn in trajectory.turns for op in turn.ops if op["valid"] and op["type"] in _ANSWER_NAMES]


def released_union_boxed_em(trajectory: Any) -> float:
  """The released reward: every accepted answer of the episode scored (boxed EM) against the union of all of the
  episode's gold answers, the sum divided by the number of questions. An answer to one question that matches
  another question's gold counts; for a single question it is `per_question_boxed_em`."""
  union = list(dict.fromkeys(g for golds in trajectory.gold_answers for g in golds))
  hits = sum(boxed_exact_match(f"\\boxed{{{answer}}}", union) for answer in accepted_answers(trajectory))
  return float(hits) / len(trajectory.questions)


REWARDS: dict[str, RewardFn | None] = {
    "per_question": per_question_boxed_em,
    "released_union": released_union_boxed_em,
    # The released web reward: each answer boxed, scored in the released window (`metrics.judge.web_boxed_reward`).
    "web_boxed": per_question_response_reward(web_boxed_reward),
    # An LLM judge's pass / fail per question (`metrics.judge.LLMJudge`), built from the config's judge endpoint.
    "llm_judge": None,
}


def by_name(name: str, judge: JudgeConfig | None = None, format_penalty: float = 0.0) -> RewardFn:
  """The reward `name` names; "llm_judge" calls the endpoint `judge` names (`AgentConfig.judge`). With
  `format_penalty` > 0 it is `with_format_penalty` of that reward."""
  if name not in REWARDS:
    raise ValueError(f"unknown reward {name!r}; known: {sorted(REWARDS)}")
  if name == "llm_judge":
    if judge is None or not (judge.url and judge.model):
      raise ValueError("reward llm_judge needs a judge endpoint: set agent.judge.url and agent.judge.model")
    return with_format_penalty(per_question_response_reward(LLMJudge(judge)), format_penalty)
  return with_format_penalty(REWARDS[name], format_penalty)


def for_agent(agent: Any) -> RewardFn:
  """The reward an `AgentConfig` names (`reward`, `judge`, `format_penalty`): what an engine or the trainer uses when
  given no `reward_fn`."""
  return by_name(agent.reward, agent.judge, agent.format_penalty)


def malformed_turn_share(trajectory: Any) -> float:
  """The share of the trajectory's turns that hold at least one invalid op (malformed or refused)."""
  return sum(turn.invalid_ops > 0 for turn in trajectory.turns) / max(len(trajectory.turns), 1)


def with_format_penalty(reward_fn: RewardFn, coef: float) -> RewardFn:
  """`reward_fn` minus `coef` x `malformed_turn_share`: within a GRPO group, samples that break the tag format
  score below those that do not even when none answers right, so a climbing malformed-op rate is pushed back.
  `reward_fn` itself when `coef` is 0."""
  if not coef:
    return reward_fn

  def reward(trajectory: Any) -> float:
    return batch([trajectory])[0]

  def batch(trajectories: Sequence[Any]) -> list[float]:
    return [s - coef * malformed_turn_share(t) for s, t in zip(score(reward_fn, trajectories), trajectories)]

  reward.batch = batch
  return reward
