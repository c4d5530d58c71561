"""Scores against worked cases and against the official SQuAD v1.1 evaluation script's logic."""
import collections
import json
import re
import string
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from atommem_jax import metrics
from atommem_jax.metrics import boxed, scores, squad


# --- The official SQuAD v1.1 evaluation script (evaluate-v1.1.py), its scoring functions as released. ---
def official_normalize_answer(s):
  def remove_articles(text):
    return re.sub(r'\b(a|an|the)\b', ' ', text)

  def white_space_fix(text):
    return ' '.join(text.split())

  def remove_punc(text):
    exclude = set(string.punctuation)
    return ''.join(ch for ch in text if ch not in exclude)

  def lower(text):
    return text.lower()

  return white_space_fix(remove_articles(remove_punc(lower(s))))


def official_f1_score(prediction, ground_truth):
  prediction_tokens = official_normalize_answer(prediction).split()
  ground_truth_tokens = official_normalize_answer(ground_truth).split()
  common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
  num_same = sum(common.values())
  if num_same == 0:
    return 0
  precision = 1.0 * num_same / len(prediction_tokens)
  recall = 1.0 * num_same / len(ground_truth_tokens)
  f1 = (2 * precision * recall) / (precision + recall)
  return f1


def official_exact_match_score(prediction, ground_truth):
  return (official_normalize_answer(prediction) == official_normalize_answer(ground_truth))


def official_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
  scores_for_ground_truths = []
  for ground_truth in ground_truths:
    score = metric_fn(prediction, ground_truth)
    scores_for_ground_truths.append(score)
  return max(scores_for_ground_truths)
# --- end of the official logic ---

_PIECES = ["a", "an", "the", "The", "A", "AN", "theater", "answer", "Paris", "paris", "U.S.", "New", "York", ",",
           ".", "!", "'s", "-", "(", ")", " ", "  ", "\t", "\n", "é", "É", "Café", "“", "”", "–", "1875", "x", "ß",
           "İ"]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=8).map("".join)


@settings(max_examples=300, deadline=None)
@given(prediction=_TEXT, golds=st.lists(_TEXT, min_size=1, max_size=3))
def test_matches_official_squad_logic(prediction, golds):
  assert squad.normalize_answer(prediction) == official_normalize_answer(prediction)
  assert squad.max_over_gold(squad.exact_match, prediction, golds) == float(
      official_metric_max_over_ground_truths(official_exact_match_score, prediction, golds))
  assert squad.max_over_gold(squad.f1, prediction, golds) == pytest.approx(
      official_metric_max_over_ground_truths(official_f1_score, prediction, golds), abs=1e-12)


F1_HALF = 2 * 0.5 * 1.0 / 1.5

# (prediction, gold answers, em, f1, sub_em, boxed_em)
WORKED_CASES = [
    # articles and case: SQuAD drops them, the reward (whitespace-only normalisation) does not
    ("The Eiffel Tower", ["eiffel tower"], 1, 1, 1, 0),
    ("\\boxed{Eiffel Tower}", ["the Eiffel Tower"], 1, 1, 1, 0),
    ("\\boxed{an apple}", ["Apple"], 1, 1, 1, 0),
    # "the" inside a word stays (so SQuAD compares "theater" with "ater"); the reward only removes the space
    ("\\boxed{Theater}", ["the ater"], 0, 0, 1, 1),
    # punctuation
    ("U.S.A.", ["USA"], 1, 1, 1, 0),
    ("\\boxed{U.S.A.}", ["U.S.A."], 1, 1, 1, 1),
    ("\\boxed{O'Neil}", ["ONeil"], 1, 1, 1, 0),
    # whitespace and case
    ("\\boxed{ New \t York\n}", ["new york"], 1, 1, 1, 1),
    ("\\boxed{NewYork}", ["New York"], 0, 0, 0, 1),
    ("\\boxed{PARIS}", ["paris"], 1, 1, 1, 1),
    # unicode: lower-cased, accents and non-ASCII punctuation kept (as the official script does)
    ("\\boxed{CAFÉ}", ["café"], 1, 1, 1, 1),
    ("\\boxed{Café}", ["Cafe"], 0, 0, 0, 0),
    ("“Paris”", ["Paris"], 0, 0, 1, 0),
    ("\\boxed{São Paulo}", ["são paulo"], 1, 1, 1, 1),
    # several gold answers: the best one counts
    ("\\boxed{NYC}", ["New York City", "NYC"], 1, 1, 1, 1),
    ("\\boxed{York}", ["New York City", "York City"], 0, 2 * 1 * 0.5 / 1.5, 1, 0),
    # partial overlap
    ("Kalomi Tesuna", ["Kalomi"], 0, F1_HALF, 1, 0),
    # empty predictions
    ("", ["Paris"], 0, 0, 0, 0),
    ("\\boxed{}", ["Paris"], 0, 0, 0, 0),
    ("the", ["the Paris"], 0, 0, 0, 0),  # normalises to "": sub-EM needs both sides non-empty
    # nested braces and LaTeX wrappers
    ("\\boxed{\\text{x}}", ["x"], 1, 1, 1, 1),
    ("\\boxed{\\textbf{\\text{Rome}}}", ["rome"], 1, 1, 1, 1),
    ("\\boxed{\\frac{1}{2}}", ["\\frac{1}{2}"], 1, 1, 1, 1),
    ("\\boxed{a{b}c}", ["a{b}c"], 1, 1, 1, 1),
    # the last complete box counts; an unclosed trailing box is ignored
    ("\\boxed{Rome} no, \\boxed{Paris}", ["Paris"], 1, 1, 1, 1),
    ("\\boxed{Paris} then \\boxed{Ro", ["Paris"], 1, 1, 1, 1),
    ("<final_answer>\\boxed{1875}</final_answer>", ["1875"], 1, 1, 1, 1),
]


@pytest.mark.parametrize("prediction,golds,em,f1,sub_em,boxed_em", WORKED_CASES)
def test_worked_cases(prediction, golds, em, f1, sub_em, boxed_em):
  result = scores.score_answer(prediction, golds)
  assert result.em == em and result.sub_em == sub_em and result.boxed_em == boxed_em
  assert result.f1 == pytest.approx(f1)
  # EM and F1 are the official ones applied to what is compared (the box content, else the prediction).
  compared = scores.answer_text(prediction)
  assert result.em == float(official_metric_max_over_ground_truths(official_exact_match_score, compared, golds))
  assert result.f1 == pytest.approx(official_metric_max_over_ground_truths(official_f1_score, compared, golds))


def test_last_boxed_extraction():
  assert boxed.last_boxed("no box here") is None
  assert boxed.last_boxed("\\boxed{unclosed") is None
  assert boxed.last_boxed("\\boxed{a} \\boxed{{b}}") == "{b}"
  assert boxed.last_boxed("\\boxed{\\text{a}}") == "\\text{a}"


def test_row_mean_and_reward():
  row = scores.score_row(["\\boxed{Paris}", "\\boxed{Rome}", "nothing"], [["Paris"], ["Milan"], ["nothing"]])
  assert row.boxed_em == pytest.approx(1 / 3) and row.em == pytest.approx(2 / 3)
  assert metrics.trajectory_reward(["\\boxed{Paris}", "\\boxed{Milan}"], [["paris"], ["Rome", "Milan"]]) == 1.0
  with pytest.raises(ValueError, match="2 predictions for 1 questions"):
    scores.score_row(["a", "b"], [["a"]])


def test_score_cli(tmp_path):
  path = tmp_path / "predictions.jsonl"
  path.write_text("".join(json.dumps({"prediction": p, "answers": g}) + "\n" for p, g, *_ in WORKED_CASES))
  result = subprocess.run([sys.executable, "-m", "atommem_jax.score", f"--predictions={path}"], check=True,
                          capture_output=True, text=True)
  printed = json.loads(result.stdout)
  n = len(WORKED_CASES)
  assert printed["n"] == n
  for index, key in enumerate(["em", "f1", "sub_em", "boxed_em"], start=2):
    assert printed[key] == pytest.approx(sum(case[index] for case in WORKED_CASES) / n)
    assert 0.0 <= printed[key] <= 1.0

  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"prediction": "x", "answers": ["x"]}) + "\n" + json.dumps({"prediction": 3}) + "\n")
  result = subprocess.run([sys.executable, "-m", "atommem_jax.score", f"--predictions={bad}"], capture_output=True,
                          text=True)
  assert result.returncode != 0
  assert "bad.jsonl: line 2: 'prediction' should be a string, got int" in result.stderr
