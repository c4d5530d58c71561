"""A scripted policy for synthetic worlds served as websites (`tools.build_corpus synthetic`): it searches, fetches,
stores the facts it needs and answers, as the web environment's packaged templates show it the task.

It knows each question's supporting facts (`data.synthetic.SyntheticQuestion`, keyed by the question and the
website it is asked about, since worlds reuse names) and reads everything else from the observation: the
`Question:` and `Website:` lines, the `Memory i:` entries shown, and the previous step's tool call and response.
Each step it:
- stores (`<add_memory>`) every needed fact that the page it just fetched states and that is not already shown,
  in reasoning order (the page's link targets left out);
- answers once every needed fact is in view (shown, or stored in this response): the facts restated in reasoning
  order, then `<final_answer>\\boxed{...}</final_answer>` derived from them, never read from the gold answer;
- otherwise calls one tool for the first missing fact: `fetch_url` on its subject's page when the previous response
  shows that page's url (a link on the page just read, or a search hit titled with the subject), else `search` for
  the subject on the question's website;
- on the last step, with the tools withdrawn, answers from what it has (or boxes "unknown").
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Sequence
from urllib.parse import urlparse

from atommem_jax import op_table
from atommem_jax.agent.envs.web import Episode
from atommem_jax.agent.oracle import derive_answer
from atommem_jax.data import synthetic
from atommem_jax.data.synthetic import Fact, SyntheticQuestion
from atommem_jax.tools import build_corpus

_QUESTION_RE = re.compile(r"^Question: (.*)$", re.MULTILINE)
_WEBSITE_RE = re.compile(r"^Website: (.*)$", re.MULTILINE)
_MEMORY_LINE_RE = re.compile(r"^Memory \d+: (.*)$", re.MULTILINE)
_PREVIOUS_RE = re.compile(r"\nYour last step:\n(.*)\n\nStep \d+ of \d+", re.DOTALL)
_LINK_RE = re.compile(r" \((https?://[^)\s]*)\)")
_PAGE_URL_RE = re.compile(r"^URL: (\S+)$", re.MULTILINE)
_HIT_RE = re.compile(r"^\d+\. (.*)\nURL: (\S+)$", re.MULTILINE)
LAST_STEP_MARK = "this is your last step"


def synthetic_sites(config: synthetic.SyntheticConfig, num_worlds: int) -> list[tuple[int, synthetic.SyntheticTask]]:
  """`(seed, world)` for worlds `config.seed`, `config.seed + 1`, ...; the seed names the world's website
  (`build_corpus.world_url`). The trainer's held-out worlds and the evaluation's `synthetic_web` are built here."""
  return [(config.seed + w, synthetic.generate(dataclasses.replace(config, seed=config.seed + w)))
          for w in range(num_worlds)]


def site_episodes(seed: int, world: synthetic.SyntheticTask) -> list[tuple[Episode, SyntheticQuestion]]:
  """The world's questions as web episodes asked about its website, each with its question (the oracle's key)."""
  site = build_corpus.world_url(seed)
  return [(Episode(id=q.record.id, questions=(q.record.question,), answers=(tuple(q.record.answers),),
                   root_url=site), q) for q in world.questions]


def write_sites_corpus(worlds: Sequence[tuple[int, synthetic.SyntheticTask]], path: str) -> str:
  """The worlds' websites as one corpus file; an existing one is kept (a pure function of the worlds, and the index
  beside it is reused)."""
  if not os.path.exists(path):
    build_corpus.write_jsonl((row for seed, world in worlds for row in build_corpus.synthetic_world_rows(world, seed)),
                             path)
  return path


def tool_call(name: str, **arguments: str) -> str:
  return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}</tool_call>"


def search_query(subject: str, website: str) -> str:
  """The website's host, then the subject: every page of a synthetic site names its host, so BM25 prefers that
  world's page among the worlds that reuse the name (and the name keeps its leading space, the token it is in the
  question)."""
  host = urlparse(website).hostname if website.startswith("http") else ""
  return f"{host} {subject}" if host else subject


class WebOraclePolicy:
  """`policy(prompts) -> responses` for web episodes over these synthetic questions; `websites[i]` is the site
  question i is asked about (`build_corpus.world_url` of its world's seed)."""

  def __init__(self, questions: Sequence[SyntheticQuestion], websites: Sequence[str]):
    if len(questions) != len(websites):
      raise ValueError(f"{len(questions)} questions but {len(websites)} websites")
    self.questions = {(q.record.question, site): q for q, site in zip(questions, websites)}

  def __call__(self, prompts: list[str]) -> list[str]:
    return [self.respond(p) for p in prompts]

  def respond(self, observation: str) -> str:
    # The first Question / Website lines are the task's (the previous step's slot comes later and may quote any).
    question_text = _first(_QUESTION_RE, observation)
    website = _first(_WEBSITE_RE, observation)
    question = self.questions.get((question_text, website))
    if question is None:
      raise ValueError(f"the oracle does not know {question_text!r} on {website!r}")
    shown = _MEMORY_LINE_RE.findall(observation)
    previous_match = _PREVIOUS_RE.search(observation)
    previous = previous_match.group(1) if previous_match else ""
    stored = [f for f in question.facts if any(f.sentence in entry for entry in shown)]
    page = _page_text(previous)
    new = [f for f in question.facts if f not in stored and f.sentence in page]
    missing = [f for f in question.facts if f not in stored and f not in new]
    adds = "".join(op_table.tag(op_table.ADD_MEMORY, f.sentence) for f in new)
    if not missing:
      # The facts in reasoning order, then the answer: each step of the chain a lookup in view.
      reasoning = " ".join(f.sentence for f in question.facts)
      answer = derive_answer(question.kind, question.facts)
      return adds + reasoning + op_table.tag(op_table.FINAL_ANSWER, f"\\boxed{{{answer}}}")
    if LAST_STEP_MARK in observation:
      return adds + op_table.tag(op_table.FINAL_ANSWER, "\\boxed{unknown}")
    return adds + self._next_call(missing[0], previous, website)

  def _next_call(self, fact: Fact, previous: str, website: str) -> str:
    url = _url_of(fact.title, previous, website)
    if url is not None:
      return tool_call("fetch_url", url=url)
    return tool_call("search", query=search_query(fact.title, website))


def _first(pattern: re.Pattern, text: str) -> str:
  found = pattern.search(text)
  return found.group(1) if found else ""


def _page_text(previous: str) -> str:
  """The fetched page's text in the previous step's slot, links left out ("" when the step fetched no page)."""
  if not previous.startswith("You called fetch_url "):
    return ""
  return _LINK_RE.sub("", previous)


def _url_of(title: str, previous: str, website: str) -> str | None:
  """The url of the page titled `title` that the previous response shows: a search hit on the question's website
  (other worlds' sites reuse the names), or a link on a page."""
  for hit_title, url in _HIT_RE.findall(previous):
    if hit_title == title and url.startswith(website):
      return url
  for url in _LINK_RE.findall(previous):
    if url.rstrip("/").rsplit("/", 1)[-1] == title:
      return url
  return None
