"""Training in the web environment: the synthetic websites' task (held-out worlds never trained on), the config's
checks, and a short run through the train CLI's function that serves the corpus itself, fine-tunes on the web
oracle's turns, runs GRPO rollouts with tool calls and evaluates."""
import json
import pathlib

import pytest

from atommem_jax import configlib
from atommem_jax.data import synthetic
from atommem_jax.train import web_inputs
from atommem_jax.train.config import TaskConfig, TrainConfig

REPO = pathlib.Path(__file__).resolve().parent.parent


def tiny_web(**changes):
  config = configlib.load_config_file(REPO / "experiments" / "grpo_web.py").get_config("tiny")
  for key, value in changes.items():
    target = config
    *path, last = key.split(".")
    for part in path:
      target = target[part]
    target[last] = value
  return config


def test_held_out_worlds_are_never_trained_on(tmp_path):
  task = web_inputs.build_task(TaskConfig(
      dataset="web_synthetic", synthetic_worlds=5, num_eval_episodes=6,
      synthetic=synthetic.SyntheticConfig(num_documents=16, num_questions=4, question_kinds=("birth_country",))),
      tmp_path)
  held_out_sites = {e.root_url for e in task.eval_episodes}
  assert len(task.eval_episodes) == 6 and held_out_sites == {"https://world0.example", "https://world1.example"}
  # World 1's last two questions are neither held out nor trained on.
  assert len(task.train_examples) == 12 and not held_out_sites & {e.root_url for e in task.train_examples}
  assert [q.record.question for q in task.oracle_questions] == [e.questions[0] for e in task.train_examples]
  rows = [json.loads(line) for line in pathlib.Path(task.corpus).read_text().splitlines()]
  assert len(rows) == 5 * 16 and rows[0]["url"] == "https://world0.example/wiki/" + rows[0]["title"]
  assert task.eval_sets(4) == [(0, task.eval_episodes[:4])]


def test_dataset_and_environment_must_match():
  with pytest.raises(ValueError, match="do not match"):
    configlib.from_dict(TrainConfig, tiny_web(**{"agent.env": "long_context"}))
  with pytest.raises(ValueError, match="do not match"):
    configlib.from_dict(TrainConfig, tiny_web(**{"task.dataset": "synthetic"}))
  with pytest.raises(ValueError, match="sft.drill='copy'"):
    configlib.from_dict(TrainConfig, tiny_web(**{"sft.drill": "recite"}))
  with pytest.raises(ValueError, match="TaskConfig.path"):
    configlib.from_dict(TrainConfig, tiny_web(**{"task.dataset": "webwalkerqa"}))


def test_the_device_engine_is_refused_before_the_corpus_is_written_or_served(tmp_path):
  from atommem_jax.train.loop import train_and_evaluate
  config = configlib.from_dict(TrainConfig, tiny_web(**{
      "rollout.engine": "device", "mesh.data": 8, "task.synthetic_worlds": 3, "task.num_eval_episodes": 2}))
  with pytest.raises(configlib.ConfigError, match=r"rollout.engine='device'.*agent.env='web'"):
    train_and_evaluate(config, tmp_path)
  assert not (tmp_path / web_inputs.CORPUS_FILE).exists() and not (tmp_path / web_inputs.SERVER_LOG).exists()


@pytest.mark.slow  # about 4 minutes on an idle 2-core machine (13 on a busy one): compiles every program of a run
def test_a_short_web_run_serves_its_corpus_fine_tunes_on_the_oracle_and_runs_grpo(tmp_path):
  from atommem_jax.train.loop import train_and_evaluate
  config = configlib.from_dict(TrainConfig, tiny_web(**{
      "task.synthetic_worlds": 3, "task.num_eval_episodes": 2, "eval.num_episodes": 2, "total_steps": 2,
      "checkpoint_every": 2, "sft.steps": 1, "sft.drill_steps": 0, "sft.drill_every": 0, "sft.oracle_episodes": 4,
      "sft.batch_size": 8, "mesh.data": 8, "grpo.prompts_per_rollout": 1, "grpo.loss.num_generations": 2, "grpo.microbatch_rows": 8,
      "agent.web.max_steps": 5, "grpo.sampler.max_new_tokens": 8, "eval.max_new_tokens": 8}))
  final = train_and_evaluate(config, tmp_path)
  assert set(final) == {0}
  pairs = [json.loads(line) for line in (tmp_path / "sft_pairs.jsonl").read_text().splitlines()]
  # The oracle's 4 episodes, 4 steps each: search, fetch, store + fetch, store + answer; the tools in every prompt.
  assert len(pairs) == 16 and all("Tools: search(query, num_results)" in p["prompt"] for p in pairs)
  assert sum('<tool_call>{"name": "search"' in p["completion"] for p in pairs) == 4
  metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [m["phase"] for m in metrics] == ["sft", "grpo"] and "reward_mean" in metrics[1]
  evals = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
  assert [e["label"] for e in evals] == ["start", "after_sft", "final"]
  assert "corpus server: 48 pages" in (tmp_path / web_inputs.SERVER_LOG).read_text()
  assert (tmp_path / "params" ).is_dir() and (tmp_path / "params_sft").is_dir()


def test_the_released_web_experiments_build_with_their_paths_and_server():
  from atommem_jax.eval import config as eval_config
  config = configlib.load_config_file(REPO / "experiments" / "grpo_web.py").get_config("")
  config.task.path = "WebWalkerQA.jsonl"
  config.agent.web.server_url = "http://127.0.0.1:8000/mcp"
  train = configlib.from_dict(TrainConfig, config)
  assert (train.agent.env, train.task.dataset, train.agent.web.max_steps, train.agent.web.tools) == (
      "web", "webwalkerqa", 10, ("search", "fetch_url"))
  evaluation = configlib.load_config_file(REPO / "experiments" / "eval_web.py").get_config("")
  evaluation.checkpoint = "CKPT"
  evaluation.embedder = "hashing"
  evaluation.datasets.webwalkerqa.path = "WebWalkerQA.jsonl"
  evaluation.datasets.gaia.path = "metadata.jsonl"
  evaluation.agent.web.server_url = "http://127.0.0.1:8000/mcp"
  evaluation = eval_config.eval_config_from_dict(evaluation)
  assert list(evaluation.datasets) == ["webwalkerqa", "gaia"] and evaluation.agent.env == "web"
  assert evaluation.agent.web.max_steps == 10 and not evaluation.judge.url
