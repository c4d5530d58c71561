"""The host engine: B episodes x G samples advance turn by turn until every trajectory is done.

Each turn, on the host: observations are rendered by the environment from a host copy of its state and of the
memory (entry tokens decoded to text), the policy answers, the environment parses the responses into ops (and
actions). On the device, one jitted `transition.transition` runs the environment's step, the accepted memory ops and
retrieval. Back on the host, the environment runs the actions its step accepted (tool calls), and answers go to
their questions. See `envs.base` for the interface and the order of the calls.

With `MemoryConfig.spill="scann"` the memory has a host storage tier behind the device store
(`agent.memory_tiers`): evicted entries move there, the entries shown merge both tiers, and the tier is updated on
the host from what each transition returns.

The policy is either a `policy.SamplerPolicy` (the model) or any callable `policy(prompts: list[str]) -> list[str]`,
which receives the chat-formatted prompts of the trajectories still running, in row order.

Rows are episode-major: row `b * G + g` is sample g of episode b.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax

from atommem_jax.agent import envs, memory_tiers, memory_view, protocol, rewards
from atommem_jax.agent import transition as transition_lib
from atommem_jax.agent.engines import rows as rows_lib
from atommem_jax.agent.config import RolloutConfig
from atommem_jax.agent.envs.base import Environment, Interaction, MemoryView
from atommem_jax.agent.policy import SamplerPolicy, TextPolicy, text_responses
from atommem_jax.agent.trajectory import Trajectory
from atommem_jax.memory import state as memory_state
from atommem_jax.memory import transitions


def rollout(episodes: Sequence[Any], policy: TextPolicy | SamplerPolicy, *, tokenizer: Any,
            embed_fn: transitions.EmbedFn, config: RolloutConfig, env: Environment | None = None,
            reward_fn: rewards.RewardFn | None = None,
            templates: protocol.Templates | None = None, max_turns: int | None = None,
            after_turn: Callable[[memory_state.MemoryState, Any], None] | None = None) -> list[Trajectory]:
  """Runs every episode G times to the end (or the environment's turn cap); see the module docstring.

  `env` defaults to the one `config.agent.env` names (with `templates`, if given). `reward_fn(trajectory)` scores
  each finished trajectory (default: the reward `config.agent.reward` names). `max_turns` stops the loop early (a replayed transcript that runs out of responses);
  trajectories then end with `done=False`. `after_turn(memory, env_state)` sees the host copies of the state after
  every turn (for checks).
  """
  env = env if env is not None else envs.make(config.agent, templates)
  reward_fn = reward_fn if reward_fn is not None else rewards.for_agent(config.agent)
  memory_config = config.memory
  start = rows_lib.prepare(episodes, env, tokenizer, embed_fn, config)
  row_episodes, row_contexts, memory, state = start.episodes, start.contexts, start.memory, start.state
  trajectories = start.trajectories
  num_rows = len(row_episodes)
  tiers = memory_tiers.TieredMemory(memory_config, tokenizer) if memory_config.spill == "scann" else None
  if tiers is not None:
    tiers.refresh(jax.device_get(memory), range(num_rows))
  params = env.params()
  previous: dict[int, Interaction] = {}
  width = memory_config.max_ops_per_turn
  turn_limit = env.max_turns if max_turns is None else min(env.max_turns, max_turns)
  for turn_index in range(turn_limit):
    state_host, memory_host = jax.device_get((state, memory))
    done = env.done(state_host)
    rows = [r for r in range(num_rows) if not done[r]]
    if not rows:
      break
    memory_views: dict[int, MemoryView] = {
        r: tiers.view(memory_host, r) if tiers else memory_view.memory_view(memory_host, r, tokenizer) for r in rows}
    observations = {r: env.observe(row_episodes[r], row_contexts[r], state_host, r, memory_views[r], previous.get(r))
                    for r in rows}
    prompts = [protocol.chat_prompt(tokenizer, observations[r].system, observations[r].user,
                                    tools=observations[r].tools) for r in rows]
    prompt_ids = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    if isinstance(policy, SamplerPolicy):
      responses = policy.respond(prompt_ids, rows, turn_index)
    else:
      responses = text_responses(policy, prompts, tokenizer)

    parsed = {r: env.parse(response.text, memory_views[r], state_host, r) for r, response in zip(rows, responses)}
    ops = {r: transition_lib.fit_width(list(parsed[r].ops), width) for r in rows}
    device_ops, on_device = ops, None
    if tiers is not None:  # "Memory i" as the device resolves it; ops on spilled entries stay on the host
      routed = {r: tiers.route(r, ops[r]) for r in rows}
      device_ops, on_device = {r: routed[r][0] for r in rows}, {r: routed[r][1] for r in rows}
    acted = [r in parsed and parsed[r].action is not None for r in range(num_rows)]
    op_batch, turn_ops = transition_lib.turn_arrays(
        [device_ops.get(r, []) for r in range(num_rows)], acted, tokenizer, memory_config,
        None if on_device is None else [on_device.get(r, []) for r in range(num_rows)])
    if tiers is None:
      memory, state, result = transition_lib.transition(memory, state, op_batch, turn_ops, params, step=env.step,
                                                        memory_config=memory_config, embed_fn=embed_fn)
      result, memory_after = jax.device_get((result, memory))
    else:
      memory, state, result, tier = transition_lib.transition_with_tier(
          memory, state, op_batch, turn_ops, params, step=env.step, memory_config=memory_config, embed_fn=embed_fn)
      result, memory_after, tier = jax.device_get((result, memory, tier))
      tiers.apply(rows, device_ops, on_device, result.accepted_BxO, tier)
      tiers.refresh(memory_after, rows)
    if after_turn is not None:
      after_turn(memory_after, jax.device_get(state))

    acting = [r for r in rows if result.act_B[r]]
    outcomes = {}
    if acting:  # the memory ops are in; now the accepted actions run, all at once
      outcomes = dict(zip(acting, env.act([parsed[r].action for r in acting], [row_contexts[r] for r in acting])))
    for r, response, prompt, ids in zip(rows, responses, prompts, prompt_ids):
      action = parsed[r].action if r in outcomes else None
      previous[r] = Interaction(response=response.text, action=action, result=outcomes.get(r))
      rows_lib.record_turn(
          trajectories[r], step=turn_index, observation=observations[r], prompt=prompt, prompt_ids=ids,
          retrieved=memory_views[r].entries, response=response, ops=ops[r], accepted_O=result.accepted_BxO[r],
          answered_O=result.answered_question_BxO[r],
          storage_size=tiers.size(memory_after, r) if tiers else int(memory_after.valid_BxM[r].sum()),
          action=action, action_result=outcomes.get(r))

  state_host, memory_host = jax.device_get((state, memory))
  return rows_lib.finish(trajectories, env.done(state_host), memory_host, tokenizer, reward_fn,
                         storage=(lambda r: tiers.storage(memory_host, r)) if tiers else None)
