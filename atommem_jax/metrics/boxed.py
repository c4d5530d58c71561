"""The reward: exact match of the last `\\boxed{...}` in a response against the gold answers.

Normalisation for the reward is deliberately looser on spacing than SQuAD's: lower-case and every whitespace
character removed ("New York" == "newyork"), nothing else. LaTeX text wrappers inside the box (`\\text{...}`,
`\\textbf{...}`, `\\mathrm{...}`, `\\mbox{...}`) are unwrapped first, since models box plain-text answers that way.
"""
from __future__ import annotations

import re
from typing import Sequence

_BOX_OPEN = "\\boxed{"
_BRACE_TOKEN_RE = re.compile(r"\\boxed\{|[{}]")
_TEXT_WRAPPER_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox)\{([^{}]*)\}")


def last_boxed(text: str) -> str | None:
  """The content of the last `\\boxed{...}` whose braces balance, or None if there is none. An unclosed box (a
  truncated response) does not hide an earlier complete one. One pass over the braces with a stack, so the time is
  linear in the text's length however many boxes are left open."""
  open_braces: list[int] = []  # per open brace: where its `\\boxed{` starts, or -1 for a plain `{`
  last_start, last_end = -1, -1
  for token in _BRACE_TOKEN_RE.finditer(text):
    if token.group() != "}":
      open_braces.append(token.start() if len(token.group()) > 1 else -1)
    elif open_braces:
      start = open_braces.pop()
      if start > last_start:
        last_start, last_end = start, token.start()
  return text[last_start + len(_BOX_OPEN):last_end] if last_start >= 0 else None


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
