"""SQuAD-style answer scores: exact match, token F1 and substring match, each maximised over the gold answers.

The normalisation is the official SQuAD v1.1 evaluation script's: lower-case, drop ASCII punctuation
(`string.punctuation`), drop the articles a / an / the as whole words, collapse whitespace. Like the official script,
non-ASCII punctuation and accents are kept as they are.
"""
from __future__ import annotations

import collections
import re
import string
from typing import Callable, Sequence

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
  text = text.lower()
  text = "".join(ch for ch in text if ch not in _PUNCTUATION)
  text = _ARTICLES_RE.sub(" ", text)
  return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
  prediction_tokens = normalize_answer(prediction).split()
  gold_tokens = normalize_answer(gold).split()
  num_same = sum((collections.Counter(prediction_tokens) & collections.Counter(gold_tokens)).values())
  if num_same == 0:
    return 0.0
  precision = num_same / len(prediction_tokens)
  recall = num_same / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def sub_exact_match(prediction: str, gold: str) -> float:
  """1 if either normalised string contains the other; an empty side never matches."""
  prediction, gold = normalize_answer(prediction), normalize_answer(gold)
  if not prediction or not gold:
    return 0.0
  return float(gold in prediction or prediction in gold)


def max_over_gold(metric: Callable[[str, str], float], prediction: str, golds: Sequence[str]) -> float:
  """The best score against any gold answer; 0 when there is no gold answer."""
  return max((metric(prediction, gold) for gold in golds), default=0.0)
