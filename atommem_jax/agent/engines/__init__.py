"""Rollout engines: run B episodes x G samples of an environment with a policy, turn by turn, to the end.

  host   `host.rollout(episodes, policy, ...)`: observations, parsing and actions on the host, one jitted transition
         per turn on device; any environment, any text policy or the model.
"""
