"""`rollout.engine` is a key of every training and evaluation config; "device" is refused, with one clear error,
until it is wired."""
import pathlib

import pytest

from atommem_jax import configlib, rollout_engine
from atommem_jax.agent import rollout as rollout_lib
from atommem_jax.eval.config import eval_config_from_dict
from atommem_jax.train.config import TrainConfig

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def _configs():
  for path in sorted(EXPERIMENTS.glob("*.py")):
    module = configlib.load_config_file(path)
    if hasattr(module, "get_config"):
      for arg in ("", "tiny"):
        yield path.stem, arg, module.get_config(arg)


def test_every_experiment_names_its_rollout_engine_and_training_its_embedder():
  seen = 0
  for name, arg, config in _configs():
    assert config.rollout.engine == "host", (name, arg)
    if name.startswith("eval_"):
      config.checkpoint = "ckpt"
      config.embedder = config.embedder or "hashing"
      assert eval_config_from_dict(config).rollout.engine == "host"
    else:
      assert configlib.from_dict(TrainConfig, config).embedder == "hashing", (name, arg)
    seen += 1
  assert seen >= 10


def test_the_host_engine_is_the_host_rollout_and_the_device_engine_is_refused_until_wired():
  assert rollout_engine.rollout_fn(rollout_engine.RolloutEngineConfig()) is rollout_lib.rollout
  with pytest.raises(configlib.ConfigError, match=r"rollout.engine='device' is not wired yet for this run"):
    rollout_engine.rollout_fn(rollout_engine.RolloutEngineConfig(engine="device"))
  with pytest.raises(configlib.ConfigError, match=r"rollout.engine: 'gpu' is not one of \('host', 'device'\)"):
    configlib.from_dict(TrainConfig, {"rollout": {"engine": "gpu"}})
