"""What a rollout engine returns: every turn of every trajectory, and the file a person reads."""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Sequence

from atommem_jax import atomic_files


@dataclasses.dataclass
class Turn:
  """One turn of one trajectory: what the model saw and wrote, and what the environment made of it."""

  step: int
  phase: str  # the environment's (the long-context reader's: "read" | "answer")
  chunk_index: int
  question_index: int
  observation: str  # the user message
  prompt: str  # the system + user message through the chat template: the exact text the model was given
  prompt_ids: list[int]
  retrieved: list[str]
  response: str
  response_ids: list[int]
  response_logprobs: list[float]
  ops: list[dict[str, Any]]
  op_counts: dict[str, int]
  invalid_ops: int
  storage_size: int
  action: Any = None  # the action the environment accepted from this response (a tool call), if any
  action_result: Any = None  # what the action returned (shown in the next observation)

  @property
  def loss_mask(self) -> list[int]:
    """Aligned with `prompt_ids + response_ids`: observation tokens never carry loss."""
    return [0] * len(self.prompt_ids) + [1] * len(self.response_ids)


@dataclasses.dataclass
class Trajectory:
  episode_id: str
  sample: int
  questions: list[str]
  gold_answers: list[list[str]]
  answers: list[str | None]  # None: never answered (given up, or the episode ended first)
  reward: float
  done: bool
  turns: list[Turn]
  scratchpad: str
  query: str
  storage: list[str]  # in creation order

  def to_json(self) -> dict[str, Any]:
    """For people: every turn's observation, response and parsed ops; token ids and the repeated system prompt
    are left out, and so are the action fields of a turn that took no action."""
    row = dataclasses.asdict(self)
    for turn_row in row["turns"]:
      for key in ("prompt", "prompt_ids", "response_ids", "response_logprobs"):
        turn_row.pop(key)
      if turn_row["action"] is None and turn_row["action_result"] is None:
        del turn_row["action"], turn_row["action_result"]
    return row


def write_jsonl(trajectories: Sequence[Trajectory], path: str | pathlib.Path) -> None:
  """One trajectory per line: every turn's observation, response, parsed ops and storage size (no token ids)."""
  atomic_files.write_jsonl(path, (trajectory.to_json() for trajectory in trajectories))
