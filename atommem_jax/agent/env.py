"""Former home of the long-context step, now `envs.long_context`; kept only while `agent/device_loop.py` imports
these names from here."""
from __future__ import annotations

from atommem_jax.agent.envs.long_context import EnvParams, EnvState, StepResult  # pylint: disable=unused-import
from atommem_jax.agent.envs.long_context import chunk_document  # pylint: disable=unused-import
from atommem_jax.agent.envs.long_context import initial_state as init_env  # pylint: disable=unused-import
