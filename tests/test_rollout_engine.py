"""`rollout.engine` is a key of every training and evaluation config; each name is its engine's rollout, and an
engine that cannot serve a run's settings is refused with one clear error naming them."""
import pathlib

import pytest

from atommem_jax import configlib, rollout_engine
from atommem_jax.agent.config import AgentConfig, RolloutConfig
from atommem_jax.agent.engines import device, host
from atommem_jax.data.tokenizer import load_tiny_tokenizer
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.eval.config import eval_config_from_dict
from atommem_jax.train.config import TrainConfig

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def _configs():
  for path in sorted(EXPERIMENTS.glob("*.py")):
    module = configlib.load_config_file(path)
    if hasattr(module, "get_config"):
      for arg in ("", "tiny"):
        try:
          config = module.get_config(arg)
        except ValueError:  # a file without a `tiny` shrink
          continue
        yield path.stem, arg, config


def test_every_experiment_names_its_rollout_engine_and_training_its_embedder():
  seen = 0
  for name, arg, config in _configs():
    engine = configlib.from_dict(rollout_engine.RolloutEngineConfig, config.rollout, where=f"{name}:{arg}.rollout")
    assert engine.engine == "host", (name, arg)
    if not name.startswith("eval_"):
      assert config.embedder == "hashing", (name, arg)
    seen += 1
  assert seen >= 9
  tiny = configlib.load_config_file(EXPERIMENTS / "grpo_hotpot.py").get_config("tiny")
  assert configlib.from_dict(TrainConfig, tiny).rollout.engine == "host"
  evaluation = configlib.load_config_file(EXPERIMENTS / "eval_hotpot.py").get_config("tiny")
  evaluation.checkpoint = "CKPT"
  assert eval_config_from_dict(evaluation).rollout.engine == "host"


def test_each_name_is_its_engine_and_an_engine_that_cannot_serve_the_run_is_refused_by_setting():
  assert rollout_engine.rollout_fn(rollout_engine.RolloutEngineConfig()) is host.rollout
  assert rollout_engine.rollout_fn(rollout_engine.RolloutEngineConfig(engine="device")) is device.rollout
  tokenizer = load_tiny_tokenizer()
  tiny = configlib.from_dict(TrainConfig, configlib.load_config_file(EXPERIMENTS / "grpo_hotpot.py").get_config("tiny"))
  served = RolloutConfig(agent=tiny.agent, memory=tiny.memory)
  for engine in ("host", "device"):  # the tiny default's settings are served by both
    rollout_engine.check(rollout_engine.RolloutEngineConfig(engine=engine), tokenizer=tokenizer,
                         rollout_config=served, sampler=None)
  spilling = RolloutConfig(agent=AgentConfig(), memory=MemoryConfig(spill="scann"))
  rollout_engine.check(rollout_engine.RolloutEngineConfig(engine="host"), tokenizer=tokenizer,
                       rollout_config=spilling, sampler=None)
  with pytest.raises(configlib.ConfigError, match=r"rollout.engine='device'.*memory.spill"):
    rollout_engine.check(rollout_engine.RolloutEngineConfig(engine="device"), tokenizer=tokenizer,
                         rollout_config=spilling, sampler=None)
  with pytest.raises(configlib.ConfigError, match=r"rollout.engine: 'gpu' is not one of \('host', 'device'\)"):
    configlib.from_dict(TrainConfig, {"rollout": {"engine": "gpu"}})
