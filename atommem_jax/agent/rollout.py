"""Former home of the host rollout; its names now live in `engines.host`, `trajectory`, `policy`, `rewards`,
`transition` and `envs.long_context`.

Kept only while `agent/device_loop.py` and `bench/rollout.py` import them from here; new code imports the modules
above.
"""
from __future__ import annotations

from atommem_jax import op_table
from atommem_jax.agent import transition as transition_lib
from atommem_jax.agent.config import RolloutConfig  # pylint: disable=unused-import
from atommem_jax.agent.engines.host import rollout  # pylint: disable=unused-import
from atommem_jax.agent.envs import long_context
from atommem_jax.agent.envs.base import TurnOps
from atommem_jax.agent.envs.long_context import Episode  # pylint: disable=unused-import
from atommem_jax.agent.policy import Response, SamplerPolicy, TextPolicy  # pylint: disable=unused-import
from atommem_jax.agent.rewards import episode_reward  # pylint: disable=unused-import
from atommem_jax.agent.trajectory import Trajectory, Turn, write_jsonl  # pylint: disable=unused-import

_MEMORY_TYPE = {spec.kind: spec.memory_type for spec in op_table.OPS if spec.reaches_memory}
_init_memory = transition_lib.init_memory


def transition(memory, env, ops, kind_BxO, valid_BxO, *, params, memory_config, embed_fn):
  """The long-context reader's turn with the former signature (no actions)."""
  turn = TurnOps(kind_BxO=kind_BxO, valid_BxO=valid_BxO, acted_B=valid_BxO[:, 0] & False)
  return transition_lib.transition(memory, env, ops, turn, params, step=long_context.step,
                                   memory_config=memory_config, embed_fn=embed_fn)
