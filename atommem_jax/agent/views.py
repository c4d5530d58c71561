"""Former home of the observation helpers, now `memory_view` and `envs.long_context`; kept only while
`agent/device_loop.py` imports these names from here."""
from __future__ import annotations

from atommem_jax.agent.envs.long_context import DISABLED, EMPTY, EpisodeDocument  # pylint: disable=unused-import
from atommem_jax.agent.memory_view import (scratchpad_and_query, set_initial_query,  # pylint: disable=unused-import
                                           shown_entries, storage_in_creation_order)
