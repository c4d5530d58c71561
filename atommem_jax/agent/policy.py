"""Policies a rollout engine samples from: the model (`SamplerPolicy`), or any `policy(list[str]) -> list[str]`."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

# Receives the chat-formatted prompts of the trajectories still running, in row order; returns one response each.
TextPolicy = Callable[[list[str]], list[str]]


@dataclasses.dataclass
class Response:
  text: str
  ids: list[int]
  logprobs: list[float]


class SamplerPolicy:
  """The model as a policy: one `Sampler.generate` call per turn over the running rows."""

  def __init__(self, sampler: Any, seed: int = 0, row_offset: int = 0):
    if sampler.tokenizer is None:
      raise ValueError("SamplerPolicy needs a Sampler built with a tokenizer (responses are parsed as text)")
    self.sampler = sampler
    self.seed = seed
    self.row_offset = row_offset  # the first row's index in the global batch (a process's share starts there)

  def respond(self, prompt_ids: list[list[int]], rows: list[int], turn: int) -> list[Response]:
    # The row's index in the global batch (not its batch position, not the process) seeds each trajectory, so a
    # trajectory samples the same way in any batch and on any number of processes.
    out = self.sampler.generate(prompt_ids, num_samples=1, seed=self.seed + turn,
                                row_ids=[self.row_offset + r for r in rows])
    return [Response(text=out.texts[i], ids=out.token_ids(i),
                     logprobs=out.logprobs_RxN[i, :int(out.lengths_R[i])].astype(float).tolist())
            for i in range(len(rows))]


def text_responses(policy: TextPolicy, prompts: list[str], tokenizer: Any) -> list[Response]:
  """A text policy's answers, tokenized as the model would have written them (ending in eos, logprob 0)."""
  texts = policy(prompts)
  if not isinstance(texts, (list, tuple)) or len(texts) != len(prompts):
    size = len(texts) if hasattr(texts, "__len__") else "?"
    raise ValueError(f"policy returned {type(texts).__name__} of length {size} for {len(prompts)} observations; it "
                     f"must return one string per observation")
  out = []
  for text in texts:
    if not isinstance(text, str):
      raise ValueError(f"policy returned a {type(text).__name__}, expected str")
    ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    out.append(Response(text=text, ids=ids, logprobs=[0.0] * len(ids)))
  return out
