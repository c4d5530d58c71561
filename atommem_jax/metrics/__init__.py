"""Scores: boxed exact match (the reward) and SQuAD-style EM / F1 / sub-EM.

Public API:
  boxed.last_boxed(text) -> str | None            content of the last balanced `\\boxed{...}`
  boxed.boxed_exact_match(response, golds) -> float
  squad.normalize_answer / exact_match / f1 / sub_exact_match / max_over_gold
  scores.AnswerScores(em, f1, sub_em, boxed_em)
  scores.score_answer(prediction, golds), scores.score_row(predictions, answers), scores.mean_scores(list)
  scores.trajectory_reward(predictions, answers) -> float   mean boxed EM, the GRPO reward
  judge.web_boxed_reward(question, final_response, answers) -> float   the released web reward (last 300 chars)
  judge.LLMJudge(JudgeConfig(url, model)) -> the same signature, graded by an OpenAI-compatible chat endpoint
  judge.make_reward_fn(RewardConfig(kind="boxed_em" | "llm_judge"))
"""
from atommem_jax.metrics.boxed import boxed_exact_match, last_boxed
from atommem_jax.metrics.scores import AnswerScores, mean_scores, score_answer, score_row, trajectory_reward
from atommem_jax.metrics.squad import exact_match, f1, normalize_answer, sub_exact_match
