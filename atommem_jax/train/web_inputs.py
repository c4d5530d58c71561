"""What a web run reads before its first step: the web task's episodes (held-out worlds apart), the corpus its tool
server serves, the web environment, and the web oracle's SFT pairs.

The embedded web default (`task.dataset="web_synthetic"`): `task.synthetic_worlds` synthetic worlds, each served as
a website (`tools.build_corpus.synthetic_world_rows`: one page per entity, linked pages, the site's host on every
page), all in one corpus file written to the workdir (`web_corpus.jsonl`, its index built beside it on the first
launch and reused on resume). The held-out questions are whole worlds (the first ones) never trained on. A native
web dataset (`webwalkerqa`, `gaia`, `web_plain`: `data.web_readers`) is shuffled and split like the long-context
ones, and its tools come from the server `agent.web` names.

The trainer starts one corpus server per process (`envs.web.serving`) when `agent.web` names a corpus (or the task
wrote one), and every rollout of the run shares that environment.
"""
from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import random
from typing import Any, Iterator, Sequence

import jax

from atommem_jax.agent import oracle
from atommem_jax.agent.config import AgentConfig, RolloutConfig
from atommem_jax.agent.engines import host
from atommem_jax.agent.envs import web
from atommem_jax.agent import web_oracle
from atommem_jax.data import pipeline, synthetic, web_readers
from atommem_jax.train import oracle_pairs, sft
from atommem_jax.train.config import TaskConfig, TrainConfig

CORPUS_FILE = "web_corpus.jsonl"
SERVER_LOG = "corpus_server.log"
SFT_PAIRS_FILE = "sft_pairs.jsonl"
# `TaskConfig.dataset` -> the `data.web_readers` format of a native web dataset.
NATIVE_FORMATS = {"webwalkerqa": "webwalkerqa", "gaia": "gaia", "web_plain": "plain"}


@dataclasses.dataclass(frozen=True)
class WebTask:
  """The web counterpart of `inputs.Task` (the loop reads the same fields)."""

  train_examples: tuple[web.Episode, ...]
  eval_episodes: tuple[web.Episode, ...]
  corpus: str = ""  # the corpus file this run wrote ("" for a native dataset: `agent.web` names the server)
  # Per training episode, its synthetic question (the web oracle's answer key); empty for native datasets.
  oracle_questions: tuple[synthetic.SyntheticQuestion, ...] = ()

  @property
  def rollout_examples(self) -> tuple[web.Episode, ...]:
    return self.train_examples

  def eval_sets(self, limit: int) -> list[tuple[int, tuple[web.Episode, ...]]]:
    """One set (key 0: a web episode has no document count): the first `limit` held-out episodes."""
    return [(0, self.eval_episodes[:limit])] if self.eval_episodes[:limit] else []


def build_task(config: TaskConfig, workdir: pathlib.Path) -> WebTask:
  """The web episodes of `config.dataset`, the first `num_eval_episodes` held out (whole worlds when synthetic)."""
  if config.dataset in NATIVE_FORMATS:
    dataset = web_readers.read_web_dataset(NATIVE_FORMATS[config.dataset], config.path)
    episodes = [web.Episode.from_question(q) for q in dataset.questions]
    random.Random(config.synthetic.seed).shuffle(episodes)
    held_out, train = episodes[:config.num_eval_episodes], episodes[config.num_eval_episodes:]
    if not train or len(held_out) < config.num_eval_episodes:
      raise ValueError(f"{len(episodes)} web questions in {config.path} leave nothing to train on after holding out "
                       f"{config.num_eval_episodes}")
    return WebTask(train_examples=tuple(train), eval_episodes=tuple(held_out))
  worlds = web_oracle.synthetic_sites(config.synthetic, config.synthetic_worlds)
  keyed = [web_oracle.site_episodes(seed, world) for seed, world in worlds]
  held_out, w = [], 0
  while len(held_out) < config.num_eval_episodes and w < len(keyed):
    held_out += keyed[w]
    w += 1
  train = [pair for pairs in keyed[w:] for pair in pairs]
  if not train or len(held_out) < config.num_eval_episodes:
    raise ValueError(f"{config.synthetic_worlds} synthetic worlds leave nothing to train on after holding out "
                     f"{config.num_eval_episodes} questions")
  random.Random(config.synthetic.seed).shuffle(train)
  return WebTask(train_examples=tuple(e for e, _ in train),
                 eval_episodes=tuple(e for e, _ in held_out[:config.num_eval_episodes]),
                 corpus=_corpus(worlds, workdir / CORPUS_FILE),
                 oracle_questions=tuple(q for _, q in train))


def _corpus(worlds: Sequence[tuple[int, synthetic.SyntheticTask]], path: pathlib.Path) -> str:
  if jax.process_index() == 0:
    web_oracle.write_sites_corpus(worlds, str(path))
  return str(path)


def agent_config(agent: AgentConfig, task: WebTask) -> AgentConfig:
  """`agent` with the task's corpus served, unless it names a server or a corpus itself."""
  named = agent.web.server_url or agent.web.server_command or agent.web.corpus
  if named or not task.corpus:
    if not named:
      raise ValueError("a native web dataset needs its tools: set agent.web.server_url, agent.web.server_command "
                       "or agent.web.corpus")
    return agent
  return dataclasses.replace(agent, web=dataclasses.replace(agent.web, corpus=task.corpus))


@contextlib.contextmanager
def environment(agent: AgentConfig, task: WebTask, log_path: pathlib.Path) -> Iterator[web.WebEnv]:
  """The run's one web environment (and corpus server, when a corpus is to be served), closed on exit."""
  agent = agent_config(agent, task)
  with web.serving(agent.web, log_path=str(log_path)) as served:
    with web.make(dataclasses.replace(agent, web=served)) as env:
      yield env


def sft_pairs(config: TrainConfig, task: WebTask, env: web.WebEnv, tokenizer: Any, embed_fn: Any,
              workdir: pathlib.Path, batch_episodes: int = 256) -> list[pipeline.SftPair]:
  """The SFT data: `sft.pairs_path`, or the web oracle's good trajectories on training episodes (cached in the
  workdir, as the long-context task's are)."""
  path = pathlib.Path(config.sft.pairs_path) if config.sft.pairs_path else workdir / SFT_PAIRS_FILE
  if config.sft.pairs_path or path.exists():
    return [pipeline.SftPair(prompt=p, completion=c, id=f"{path.name}:{i + 1}")
            for i, (p, c) in enumerate(sft.read_sft_pairs(path))]
  if not task.oracle_questions:
    raise ValueError("sft.pairs_path is required: the web oracle only plays the synthetic websites")
  n = config.sft.oracle_episodes
  episodes, questions = task.train_examples[:n], task.oracle_questions[:n]
  policy = web_oracle.WebOraclePolicy(questions, [e.root_url for e in episodes])
  rollout_config = RolloutConfig(agent=config.agent, memory=config.memory, num_samples=1, seed=config.seed)
  trajectories = []
  for start in range(0, len(episodes), batch_episodes):
    trajectories += host.rollout(list(episodes[start:start + batch_episodes]), policy, tokenizer=tokenizer,
                                 embed_fn=embed_fn, config=rollout_config, env=env)
  pairs = oracle.oracle_sft_pairs(trajectories, tokenizer, min_reward=config.sft.min_reward)
  if not pairs:
    raise ValueError(f"no web oracle trajectory reached reward {config.sft.min_reward}; nothing to fine-tune on")
  return oracle_pairs.keep_pairs(pairs, trajectories, path, "web oracle")
