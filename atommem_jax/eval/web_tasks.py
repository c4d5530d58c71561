"""Web datasets in an evaluation: their episodes, the tool server each is answered with, and the per-episode web
figures (tool calls by name, the LLM judge's verdicts).

`webwalkerqa`, `gaia` and `web_plain` files are read with `data.web_readers`; their tools come from the server the
run's `agent.web` names (a URL, a stdio command, or a corpus file our corpus server serves on localhost for the
run). `synthetic_web` is `synthetic_worlds` synthetic worlds served as websites: their corpus is written to the
output directory (`NAME_corpus.jsonl`, its index beside it) once every input has been checked, and served for the
dataset's episodes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import tempfile
from typing import Any, Iterator, Sequence

from etils import epath

from atommem_jax import storage
from atommem_jax.agent import web_oracle
from atommem_jax.agent.config import AgentConfig
from atommem_jax.agent.envs import web
from atommem_jax.data import synthetic, web_readers
from atommem_jax.eval.config import DatasetSpec, EvalConfig, EvalError, dataset_format, dataset_label

NATIVE_FORMATS = {"webwalkerqa": "webwalkerqa", "gaia": "gaia", "web_plain": "plain"}


@dataclasses.dataclass(frozen=True)
class WebTask:
  """One web dataset: its episodes, and the synthetic worlds to serve (empty: the run's `agent.web` server)."""

  dataset: str
  episodes: tuple[web.Episode, ...]
  worlds: tuple[tuple[int, synthetic.SyntheticTask], ...] = ()
  num_docs: int = 0  # the tables' column key: web episodes have no document count


def prepare(name: str, spec: DatasetSpec, config: EvalConfig) -> WebTask:
  """The dataset's episodes (a file that does not read is the reader's `DataFormatError`)."""
  fmt = dataset_format(name, spec)
  worlds: tuple[tuple[int, synthetic.SyntheticTask], ...] = ()
  if fmt == "synthetic_web":
    world = synthetic.SyntheticConfig(seed=spec.seed, num_documents=spec.synthetic_num_documents or 64,
                                      num_questions=spec.synthetic_num_questions,
                                      question_kinds=spec.synthetic_question_kinds or synthetic.QUESTION_KINDS)
    worlds = tuple(web_oracle.synthetic_sites(world, spec.synthetic_worlds))
    episodes = [e for seed, task in worlds for e, _ in web_oracle.site_episodes(seed, task)]
  else:
    web_config = config.agent.web
    if not (web_config.server_url or web_config.server_command or web_config.corpus):
      raise EvalError(f"dataset {name} ({fmt}) needs its tools: set agent.web.server_url, agent.web.server_command "
                      f"or agent.web.corpus")
    dataset = web_readers.read_web_dataset(NATIVE_FORMATS[fmt], spec.path)
    episodes = [web.Episode.from_question(q) for q in dataset.questions]
  if spec.max_examples:
    episodes = episodes[:spec.max_examples]
  if not episodes:
    raise EvalError(f"dataset {name} has no questions")
  return WebTask(dataset=dataset_label(name, spec), episodes=tuple(episodes), worlds=worlds)


def web_agent(agent: AgentConfig) -> AgentConfig:
  """A variant's agent config as it runs a web dataset."""
  return dataclasses.replace(agent, env="web")


@contextlib.contextmanager
def environment(agent: AgentConfig, task: WebTask, workdir: epath.Path) -> Iterator[web.WebEnv]:
  """The web environment for `task`'s episodes: its worlds' corpus served, or the run's server. The corpus server
  reads local files, so with a workdir elsewhere (gs://...) the worlds' corpus and its log live in a local temporary
  directory for the evaluation's time."""
  agent = web_agent(agent)
  log_path = ""
  local = contextlib.ExitStack()
  if task.worlds and not storage.is_local(workdir):
    workdir = pathlib.Path(local.enter_context(tempfile.TemporaryDirectory(prefix="atommem_web_")))
  if task.worlds:
    corpus = workdir / f"{task.dataset}_corpus.jsonl"
    workdir.mkdir(parents=True, exist_ok=True)
    web_oracle.write_sites_corpus(task.worlds, str(corpus))
    agent = dataclasses.replace(agent, web=dataclasses.replace(agent.web, server_url="", server_command="",
                                                               corpus=str(corpus)))
    log_path = str(workdir / f"{task.dataset}_corpus_server.log")
  with local, web.serving(agent.web, log_path=log_path) as served:
    with web.make(dataclasses.replace(agent, web=served)) as env:
      yield env


def tool_calls(trajectory: Any) -> dict[str, int]:
  """The calls that ran in the episode, per tool name."""
  counts: dict[str, int] = {}
  for turn in trajectory.turns:
    if turn.action is not None:
      counts[turn.action["name"]] = counts.get(turn.action["name"], 0) + 1
  return counts


def judge_scores(judge: Any, trajectories: Sequence[Any]) -> list[tuple[float, ...]]:
  """Per trajectory, the judge's verdict on each question's accepted answer (as the protocol boxes it); an
  unanswered question scores 0 without a request. The requests of a batch go out concurrently."""
  asked = [(t, i) for t in trajectories for i, a in enumerate(t.answers) if a is not None]
  verdicts = judge.judge_batch([t.questions[i] for t, i in asked], [f"\\boxed{{{t.answers[i]}}}" for t, i in asked],
                               [t.gold_answers[i] for t, i in asked])
  scores = {(id(t), i): v for (t, i), v in zip(asked, verdicts)}
  return [tuple(scores.get((id(t), i), 0.0) for i in range(len(t.questions))) for t in trajectories]
