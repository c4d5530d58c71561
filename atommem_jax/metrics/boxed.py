"""The reward: exact match of the last `\\boxed{...}` in a response against the gold answers.

Normalisation for the reward is deliberately looser on spacing than SQuAD's: lower-case and every whitespace
character removed ("New York" == "newyork"), nothing else. LaTeX text wrappers inside the box (`\\text{...}`,
`\\textbf{...}`, `\\mathrm{...}`, `\\mbox{...}`) are unwrapped first, since models box plain-text answers that way.
"""
from __future__ import annotations

import re
from typing import Sequence

_BOX_OPEN = "\\boxed{"
_TEXT_WRAPPER_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox)\{([^{}]*)\}")


def _balanced_end(text: str, begin: int) -> int | None:
  """The index of the `}` closing the brace opened just before `begin`, or None if it never closes."""
  depth = 1
  for pos in range(begin, len(text)):
    if text[pos] == "{":
      depth += 1
    elif text[pos] == "}":
      depth -= 1
      if depth == 0:
        return pos
  return None


def last_boxed(text: str) -> str | None:
  """The content of the last `\\boxed{...}` whose braces balance, or None if there is none."""
  start = text.rfind(_BOX_OPEN)
  while start >= 0:
    end = _balanced_end(text, start + len(_BOX_OPEN))
    if end is not None:
      return text[start + len(_BOX_OPEN):end]
    # An unclosed box at the end (a truncated response) does not hide an earlier complete one.
    start = text.rfind(_BOX_OPEN, 0, start)
  return None


def unwrap_text_commands(text: str) -> str:
  previous = None
  while previous != text:  # innermost first, so nested wrappers unwrap completely
    previous, text = text, _TEXT_WRAPPER_RE.sub(r"\1", text)
  return text


def normalize_boxed(text: str) -> str:
  return "".join(unwrap_text_commands(text).lower().split())


def boxed_exact_match(response: str, golds: Sequence[str]) -> float:
  """1 if the last box's content equals some gold answer after `normalize_boxed`; 0 without a box or if empty."""
  content = last_boxed(response)
  if content is None:
    return 0.0
  content = normalize_boxed(content)
  if not content:
    return 0.0
  return float(any(content == normalize_boxed(gold) for gold in golds))
