"""The rows every rollout engine runs, set up and recorded the same way: B episodes x G samples as rows (row
`b * G + g` is sample g of episode b) with their contexts, initial memory and environment state; each row's
trajectory, its turns appended and its end recorded."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from atommem_jax import op_table
from atommem_jax.agent import memory_view, rewards
from atommem_jax.agent import transition as transition_lib
from atommem_jax.agent.config import RolloutConfig
from atommem_jax.agent.trajectory import Trajectory, Turn


@dataclasses.dataclass
class Rows:
  episodes: list[Any]  # per row
  contexts: list[Any]  # per row (shared by an episode's G rows)
  episode_contexts: list[Any]  # per episode
  memory: Any  # the memory state (device)
  state: Any  # the environment state (device)
  trajectories: list[Trajectory]


def prepare(episodes: Sequence[Any], env: Any, tokenizer: Any, embed_fn: Any, config: RolloutConfig) -> Rows:
  """Rows at their start: the first query set and retrieved with where the environment has one."""
  g = config.num_samples
  row_episodes = [episodes[r // g] for r in range(len(episodes) * g)]
  contexts = env.prepare(episodes, tokenizer, embed_fn, config.memory)
  row_contexts = [contexts[r // g] for r in range(len(row_episodes))]
  memory = transition_lib.init_memory(config.memory, len(row_episodes))
  queries = env.initial_queries(row_episodes)
  if queries is not None:
    memory = memory_view.set_initial_query(memory, queries, tokenizer, embed_fn, config.memory)
  trajectories = [Trajectory(episode_id=ep.id, sample=r % g, questions=list(ep.questions),
                             gold_answers=[list(a) for a in ep.answers], answers=[None] * len(ep.questions),
                             reward=0.0, done=False, turns=[], scratchpad="", query="", storage=[])
                  for r, ep in enumerate(row_episodes)]
  return Rows(episodes=row_episodes, contexts=row_contexts, episode_contexts=list(contexts), memory=memory,
              state=env.init_state(row_episodes, row_contexts), trajectories=trajectories)


def record_turn(trajectory: Trajectory, *, step: int, observation: Any, prompt: str, prompt_ids: list[int],
                retrieved: Sequence[str], response: Any, ops: Sequence[Any], accepted_O: Sequence[bool],
                answered_O: Sequence[int], storage_size: int, action: Any = None, action_result: Any = None) -> None:
  """Appends one turn: `ops` (the parsed `protocol.Op`s, at most O) with the environment's verdicts (`accepted_O`,
  `answered_O`: the row of the step result); an accepted answer goes to its question."""
  ops = [op if not op.valid or accepted_O[o] else op.refused("refused by the environment (query limit or episode over)")
         for o, op in enumerate(ops)]
  for o, op in enumerate(ops):
    if answered_O[o] >= 0:
      trajectory.answers[int(answered_O[o])] = op.text
  trajectory.turns.append(Turn(
      step=step, phase=observation.phase, chunk_index=observation.chunk_index,
      question_index=observation.question_index, observation=observation.user, prompt=prompt, prompt_ids=prompt_ids,
      retrieved=list(retrieved), response=response.text, response_ids=response.ids,
      response_logprobs=response.logprobs,
      ops=[{"type": op.name, "text": op.text, "target": op.target, "valid": op.valid, "reason": op.reason}
           for op in ops],
      op_counts={name: sum(op.valid and op.name == name for op in ops) for name in op_table.KIND_NAMES[1:]},
      invalid_ops=sum(not op.valid for op in ops), storage_size=storage_size, action=action,
      action_result=action_result))


def finish(trajectories: list[Trajectory], done: Sequence[bool], memory: Any, tokenizer: Any,
           reward_fn: rewards.RewardFn, storage: Callable[[int], list[str]] | None = None) -> list[Trajectory]:
  """Final memory (a host copy) and reward of every trajectory (`rewards.score`: one call for the rollout where the
  reward scores batches); `storage(row)`: the row's stored entries where the memory has a host tier too (default:
  the device store's, in creation order)."""
  for r, trajectory in enumerate(trajectories):
    trajectory.done = bool(done[r])
    trajectory.scratchpad, trajectory.query = memory_view.scratchpad_and_query(memory, r, tokenizer)
    trajectory.storage = (storage(r) if storage is not None else
                          memory_view.storage_in_creation_order(memory, r, tokenizer))
  for trajectory, reward in zip(trajectories, rewards.score(reward_fn, trajectories)):
    trajectory.reward = reward
  return trajectories
