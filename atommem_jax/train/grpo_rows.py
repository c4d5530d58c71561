"""From rollout trajectories to GRPO training rows and rollout metrics.

Every turn of every trajectory becomes one row (its prompt ids + response ids); the row carries its trajectory's
group advantage. Trajectories are episode-major (row `b * G + g` is sample g of episode b), so rewards reshape to
`[B, G]` groups.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from atommem_jax import op_table
from atommem_jax.metrics import scores
from atommem_jax.train import batching, grpo

# Metric name -> agent op type name (`op_rate/<metric>`), from the op table.
OP_RATE_NAMES = op_table.metric_names()


@dataclasses.dataclass
class TurnRows:
  """Every turn of a rollout batch, flat, with the advantage and validity of its trajectory."""

  prompt_ids: list[list[int]]
  response_ids: list[list[int]]
  response_logprobs: list[list[float]]
  advantages: list[float]
  valid: list[bool]

  def __len__(self) -> int:
    return len(self.prompt_ids)


def turn_rows(trajectories: Sequence[Any], config: grpo.GRPOConfig) -> tuple[TurnRows, np.ndarray]:
  """Rows of every turn with a response, and the `[B, G]` advantages."""
  g = config.num_generations
  if len(trajectories) % g:
    raise ValueError(f"{len(trajectories)} trajectories do not form groups of {g}")
  rewards_PxG = np.asarray([t.reward for t in trajectories], np.float32).reshape(-1, g)
  advantages_PxG, valid_PxG = grpo.group_advantages(jnp.asarray(rewards_PxG), config)
  advantages = np.asarray(advantages_PxG).reshape(-1)
  valid = np.asarray(valid_PxG).reshape(-1)
  rows = TurnRows([], [], [], [], [])
  for trajectory, advantage, ok in zip(trajectories, advantages, valid):
    for turn in trajectory.turns:
      if not turn.response_ids:
        continue
      rows.prompt_ids.append(list(turn.prompt_ids))
      rows.response_ids.append(list(turn.response_ids))
      rows.response_logprobs.append(list(turn.response_logprobs))
      rows.advantages.append(float(advantage))
      rows.valid.append(bool(ok))
  return rows, np.asarray(advantages_PxG)


def _num_microbatches(rows: int, microbatch_rows: int) -> int:
  """The power of two of micro-batches that holds `rows`, so a handful of shapes cover every rollout size."""
  count = 1
  while count * microbatch_rows < rows:
    count *= 2
  return count


def minibatches(rows: TurnRows, num_updates: int, *, buckets: Sequence[int], pad_id: int,
                microbatch_rows: int) -> tuple[list[batching.TrainBatch], dict[str, int]]:
  """Splits the rows (in order) into `num_updates` mini-batches of one shape `[M, microbatch_rows, T]`."""
  if len(rows) < num_updates:
    raise ValueError(f"{len(rows)} turn rows cannot feed {num_updates} updates")
  bounds = np.linspace(0, len(rows), num_updates + 1).astype(int)
  num_microbatches = _num_microbatches(int(max(np.diff(bounds))), microbatch_rows)
  num_rows = num_microbatches * microbatch_rows
  out, truncated = [], 0
  for lo, hi in zip(bounds[:-1], bounds[1:]):
    batch, stats = batching.pack_rows(rows.prompt_ids[lo:hi], rows.response_ids[lo:hi], buckets=buckets,
                                      pad_id=pad_id, num_rows=num_rows,
                                      response_logprobs=rows.response_logprobs[lo:hi],
                                      advantages=rows.advantages[lo:hi], row_valid=rows.valid[lo:hi])
    truncated += stats["truncated_rows"]
    out.append(batching.split_microbatches(batch, num_microbatches))
  return out, {"truncated_rows": truncated, "rows_per_update": num_rows, "microbatches": num_microbatches}


def rollout_metrics(trajectories: Sequence[Any], tool_names: Sequence[str] = ()) -> dict[str, float]:
  """Reward, SQuAD EM / F1, memory-op rates per turn, storage size, lengths; with `tool_names` (an environment with
  tools: `tool_names(env)`), the calls that ran per turn, `tool_rate/<name>` for each and `tool_rate/all`."""
  rewards = np.asarray([t.reward for t in trajectories], np.float64)
  answer_scores = [scores.score_answer("" if a is None else f"\\boxed{{{a}}}", golds)
                   for t in trajectories for a, golds in zip(t.answers, t.gold_answers)]
  mean = scores.mean_scores(answer_scores)
  turns = [turn for t in trajectories for turn in t.turns]
  num_turns = max(len(turns), 1)
  metrics = {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()), "em": mean.em,
             "f1": mean.f1, "sub_em": mean.sub_em,
             "turns_per_trajectory": len(turns) / max(len(trajectories), 1),
             "response_tokens_mean": float(np.mean([len(t.response_ids) for t in turns])) if turns else 0.0,
             "invalid_op_rate": sum(t.invalid_ops for t in turns) / num_turns,
             "storage_size_mean": float(np.mean([t.turns[-1].storage_size if t.turns else 0 for t in trajectories])),
             "done_fraction": float(np.mean([t.done for t in trajectories]))}
  for name, op_type in OP_RATE_NAMES.items():
    metrics[f"op_rate/{name}"] = sum(t.op_counts.get(op_type, 0) for t in turns) / num_turns
  if tool_names:
    called = [t.action["name"] for t in turns if t.action is not None]
    for name in tool_names:
      metrics[f"tool_rate/{name}"] = called.count(name) / num_turns
    metrics["tool_rate/all"] = len(called) / num_turns
  return metrics


def tool_names(env: Any) -> tuple[str, ...]:
  """The tools an environment offers the model (its chat-template schemas), in order; () for one without tools."""
  return tuple(tool["function"]["name"] for tool in getattr(env, "tools", ()))
