"""The init and optimizer keys the embedded default changes reach the model and Adam, as config keys."""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from atommem_jax import configlib, sharding
from atommem_jax.model.config import PRESETS, Qwen3Config
from atommem_jax.train import params_io, step
from atommem_jax.train.config import ModelInitConfig, TrainConfig

EXPERIMENT = pathlib.Path(__file__).parents[1] / "experiments" / "grpo_hotpot.py"


def _tiny(**overrides) -> TrainConfig:
  config = configlib.load_config_file(EXPERIMENT).get_config("tiny")
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for name in parents:
      node = node[name]
    node[leaf] = value  # as `--config.KEY=VALUE` does: the key must already exist
  return configlib.from_dict(TrainConfig, config)


def test_the_init_std_and_adams_betas_are_keys_of_the_embedded_default():
  config = _tiny()
  assert config.model.initializer_range == 0.0  # the preset's std
  assert (config.sft.optimizer.b1, config.sft.optimizer.b2, config.grpo.optimizer.b2) == (0.9, 0.999, 0.999)
  config = _tiny(**{"model.initializer_range": 0.1, "sft.optimizer.b2": 0.5})
  assert config.model.initializer_range == 0.1 and config.sft.optimizer.b2 == 0.5
  # 0 keeps the preset's std (HF's 0.02), which a checkpoint's config also carries through config.json.
  assert ModelInitConfig().runtime(PRESETS["tiny"]).initializer_range == 0.02
  assert Qwen3Config.from_hf(PRESETS["tiny"].replace(initializer_range=0.03).to_hf_dict()).initializer_range == 0.03
  assert Qwen3Config.from_hf({k: v for k, v in PRESETS["tiny"].to_hf_dict().items()
                              if k != "initializer_range"}).initializer_range == 0.02
  with pytest.raises(configlib.ConfigError, match="initializer_range"):
    PRESETS["tiny"].replace(initializer_range=0.0)


@pytest.mark.parametrize("std", [0.02, 0.1])
def test_the_init_std_reaches_every_matrix_of_a_random_init(std):
  mesh = sharding.make_mesh(sharding.MeshConfig(), jax.devices()[:1])
  init = ModelInitConfig(preset="tiny", initializer_range=std if std != 0.02 else 0.0)
  model_config, _, params, _ = params_io.init_model(init, seed=0, mesh=mesh)
  assert model_config.initializer_range == std
  matrices = {"embed": params["embed"], **{k: v for k, v in params["layers"].items() if not k.endswith("norm")}}
  assert len(matrices) >= 8
  for name, value in matrices.items():
    assert float(jnp.std(value)) == pytest.approx(std, rel=0.1), name
  for name in ("attn_norm", "mlp_norm", "q_norm", "k_norm"):
    np.testing.assert_array_equal(params["layers"][name], 1.0)  # norms start at 1 whatever the std


@pytest.mark.parametrize("b2", [0.95, 0.999])
def test_b2_is_adams_second_moment_decay(b2):
  config = step.OptimizerConfig(learning_rate=1e-3, warmup_steps=1, decay_steps=10, b2=b2, max_grad_norm=100.0)
  tx = step.make_optimizer(config)
  params = {"w": jnp.zeros((3,))}
  state = tx.init(params)
  g1, g2 = jnp.array([1.0, -2.0, 0.5]), jnp.array([3.0, 0.0, -1.0])
  for grad in (g1, g2):
    _, state = tx.update({"w": grad}, state, params)
  nu = optax.tree_utils.tree_get(state, "nu")["w"]
  np.testing.assert_allclose(nu, b2 * (1 - b2) * g1**2 + (1 - b2) * g2**2, rtol=1e-6)
