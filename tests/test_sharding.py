import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from atommem_jax import sharding


def test_table_maps_logical_axes():
  rules = sharding.DEFAULT_RULES
  assert rules.spec(("batch", "length", "act_embed")) == P(("data", "fsdp"), None, None)
  assert rules.spec(("vocab", "embed")) == P("tensor", "fsdp")
  assert rules.spec((None, "mlp")) == P(None, "tensor")


def test_table_refuses_two_logical_axes_on_one_mesh_axis():
  with pytest.raises(ValueError, match="'batch' and 'embed' both map to mesh axis 'fsdp'"):
    sharding.DEFAULT_RULES.spec(("batch", "embed"))
  with pytest.raises(KeyError, match="not in the sharding table"):
    sharding.DEFAULT_RULES.spec(("no_such_axis",))


def test_mesh_and_constrain_on_eight_devices():
  assert jax.device_count() == 8
  mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  x = jnp.arange(8 * 4 * 6, dtype=jnp.float32).reshape(8, 4, 6)

  @jax.jit
  def double(x):
    return sharding.constrain(x * 2, ("batch", "length", "act_heads"))

  with jax.set_mesh(mesh):
    y = double(x)
  assert y.sharding.spec == P(("data", "fsdp"), None, "tensor")
  np.testing.assert_array_equal(np.asarray(y), np.asarray(x) * 2)
  np.testing.assert_array_equal(np.asarray(double(x)), np.asarray(x) * 2)  # no mesh: a no-op


def test_mesh_size_must_match_devices():
  with pytest.raises(ValueError, match="needs 4 devices, 8 are available"):
    sharding.make_mesh(sharding.MeshConfig(data=4))
