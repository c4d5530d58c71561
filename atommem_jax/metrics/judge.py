"""Web-task rewards, each a plain `reward_fn(question, final_response, answers) -> float` to inject.

- `web_boxed_reward` (the default): the released web reward. The last `\\boxed{}` within the final turn's last
  `WEB_ANSWER_WINDOW` (300) characters, lower-cased with whitespace removed, against each gold answer normalised the
  same way (`metrics.boxed`, which also unwraps `\\text{...}`).
- `LLMJudge`: an OpenAI-compatible chat endpoint (`POST {url}/chat/completions`) grades the answer with a pass/fail
  rubric and answers `{"pass": true|false}`. A transport error, an HTTP error, a timeout, or a reply with no readable
  verdict scores 0 and is counted in `LLMJudge.counts["errors"]` (with the last message in `last_error`); it never
  raises, so one bad judge reply cannot stop a training run.

`make_reward_fn(RewardConfig)` picks one by name.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import re
import threading
import urllib.request
from typing import Callable, Literal, Sequence

from atommem_jax.metrics.boxed import boxed_exact_match, last_boxed

WEB_ANSWER_WINDOW = 300
RewardFn = Callable[[str, str, Sequence[str]], float]

RUBRIC = """You grade answers to questions. Compare the response's final answer with the gold answers.
Pass it if it states the same fact as any gold answer (the same entity, number or date; wording, capitalisation,
abbreviations and reasonable rounding may differ). Fail it if it is wrong, missing, hedged between several answers,
or only partly right.

Question: {question}
Gold answers: {answers}
Response's final answer: {prediction}

Reply with JSON only: {{"pass": true}} or {{"pass": false}}."""

_VERDICT_RE = re.compile(r'"?pass"?\s*:\s*(true|false)', re.IGNORECASE)


def web_boxed_reward(question: str, final_response: str, answers: Sequence[str]) -> float:
  """1.0 if the last box in the final response's last 300 characters matches a gold answer (see module doc)."""
  del question
  return boxed_exact_match(final_response[-WEB_ANSWER_WINDOW:], answers)


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
  """An OpenAI-compatible endpoint: `url` is the API base (`http://host:port/v1`) or the full
  `.../chat/completions` address; `api_key` is sent as a bearer token when non-empty."""

  url: str = ""
  model: str = ""
  api_key: str = ""
  timeout_s: float = 60.0
  max_tokens: int = 32
  max_concurrency: int = 16

  def __post_init__(self):
    if self.timeout_s <= 0 or self.max_tokens < 1 or self.max_concurrency < 1:
      raise ValueError(f"JudgeConfig: timeout_s, max_tokens and max_concurrency must be positive: {self}")


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  """`kind`: "boxed_em" (the released reward) or "llm_judge" (needs `judge.url` and `judge.model`)."""

  kind: Literal["boxed_em", "llm_judge"] = "boxed_em"
  judge: JudgeConfig = JudgeConfig()


def parse_verdict(content: str) -> bool | None:
  """The judge's verdict from its reply text: the JSON `pass` field, else the last `pass: true|false`; None if
  there is neither."""
  text = content.strip()
  if text.startswith("```"):
    text = text.strip("`").removeprefix("json").strip()
  try:
    value = json.loads(text)
    if isinstance(value, dict) and isinstance(value.get("pass"), bool):
      return value["pass"]
  except (ValueError, RecursionError):
    pass
  matches = _VERDICT_RE.findall(content)
  return matches[-1].lower() == "true" if matches else None


class LLMJudge:
  """`judge(question, final_response, answers) -> float` and `judge_batch(...)` against a chat endpoint."""

  def __init__(self, config: JudgeConfig):
    if not config.url or not config.model:
      raise ValueError("LLMJudge needs judge.url and judge.model")
    url = config.url.rstrip("/")
    self.endpoint = url if url.endswith("/chat/completions") else url + "/chat/completions"
    self.config = config
    self.counts = {"calls": 0, "passes": 0, "errors": 0}
    self.last_error = ""
    self._lock = threading.Lock()

  def _prediction(self, final_response: str) -> str:
    """What the judge grades: the final box's content if there is one in the answer window, else the window."""
    window = final_response[-WEB_ANSWER_WINDOW:]
    box = last_boxed(window)
    return (box if box is not None else window).strip()

  def _request(self, question: str, prediction: str, answers: Sequence[str]) -> bool:
    prompt = RUBRIC.format(question=question, answers=json.dumps(list(answers), ensure_ascii=False),
                           prediction=prediction or "(none)")
    body = json.dumps({"model": self.config.model, "messages": [{"role": "user", "content": prompt}],
                       "temperature": 0.0, "max_tokens": self.config.max_tokens}).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if self.config.api_key:
      headers["Authorization"] = f"Bearer {self.config.api_key}"
    request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=self.config.timeout_s) as reply:
      payload = json.loads(reply.read().decode("utf-8"))
    content = payload["choices"][0]["message"]["content"]
    verdict = parse_verdict(content if isinstance(content, str) else "")
    if verdict is None:
      raise ValueError(f"no verdict in the judge's reply {str(content)[:200]!r}")
    return verdict

  def __call__(self, question: str, final_response: str, answers: Sequence[str]) -> float:
    prediction = self._prediction(final_response)
    try:
      passed = self._request(question, prediction, answers)
      error = ""
    except Exception as err:  # the endpoint is outside our control: any failure is a counted 0, never a crash
      passed, error = False, f"{type(err).__name__}: {err}"
    with self._lock:
      self.counts["calls"] += 1
      self.counts["passes"] += int(passed)
      if error:
        self.counts["errors"] += 1
        self.last_error = error
    return float(passed)

  def judge_batch(self, questions: Sequence[str], final_responses: Sequence[str],
                  answers: Sequence[Sequence[str]]) -> list[float]:
    """One score per episode, the requests sent concurrently (at most `max_concurrency` at once)."""
    if not len(questions) == len(final_responses) == len(answers):
      raise ValueError(f"{len(questions)} questions, {len(final_responses)} responses, {len(answers)} answer lists")
    with concurrent.futures.ThreadPoolExecutor(self.config.max_concurrency) as pool:
      return list(pool.map(self, questions, final_responses, answers))


def make_reward_fn(config: RewardConfig) -> RewardFn:
  if config.kind == "boxed_em":
    return web_boxed_reward
  if config.kind == "llm_judge":
    return LLMJudge(config.judge)
  raise ValueError(f"unknown reward kind {config.kind!r}; choose boxed_em or llm_judge")
