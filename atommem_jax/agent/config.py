"""`AgentConfig`: the environment, the method (AtomMem or a baseline) and its ablations, in one frozen dataclass;
`RolloutConfig`: that, the memory, and the samples per episode, for a rollout engine."""
from __future__ import annotations

import dataclasses
from typing import Literal

from atommem_jax.agent import envs
from atommem_jax.memory.config import MemoryConfig

# The long-context reader's methods: the rows of `envs.long_context.METHODS` (a test holds the two equal).
Method = Literal["atommem", "memagent", "rag", "full_context"]
# The rewards a config may name: the keys of `rewards.REWARDS` (a test holds the two equal).
Reward = Literal["per_question", "released_union"]


@dataclasses.dataclass(frozen=True)
class AgentConfig:
  """Defaults are the released full-size settings; tests and the tiny default shrink them.

  env: the environment, a name of `agent.envs.ENVIRONMENTS`.
  method: the long-context reader's method, a name of `envs.long_context.METHODS`: "atommem"; "memagent" (one
    overwritten memory, always advance); "rag" (top-K chunks retrieved for the question, answered once);
    "full_context" (the document cut to `context_tokens`, answered once).
  query_limit_action: what a Read beyond `query_limit` in a row does: "give_up" the current question (the released
    behaviour) or "force_forward" to the next chunk (in the answer phase there is no chunk, so it also gives up).
  use_scratchpad / use_storage / allow_update / allow_delete: ablations; disabled ops become counted invalid no-ops.
  The retrieval width K and the op width O are the memory's (`MemoryConfig.top_k`, `.max_ops_per_turn`); RAG shows
  K chunks.
  template_dir: a directory of prompt files replacing ours; "" = the packaged templates, "compact" = the packaged
    variant with a short system prompt, "released" = the variant that shows every value the released prompt shows
    (the reads in a row included) (`protocol.PACKAGED_VARIANTS`).
  chunking: the reader's windows of the (token ids of the) document: "released" (chunk i spans
    [i*C - o, (i+1)*C + o), stride C with o tokens of overlap on each side) or "stride" (windows of C tokens
    starting every C - o tokens).
  truncation: a document longer than `max_chunks` chunks is cut: "middle" (its middle removed, so the first and
    last parts are read; the released behaviour) or "tail" (the chunks past `max_chunks` dropped).
  reward: the reward function a rollout scores trajectories with, a name of `agent.rewards.REWARDS`:
    "per_question" (each question's answer against its own gold answers, averaged) or "released_union" (every
    accepted answer against the union of the episode's gold answers, summed and divided by the questions).
  The released experiment files set `chunking="released"`, `truncation="middle"`, `template_dir="released"`; the
  defaults here keep the embedded default's numbers.
  """

  method: Method = "atommem"
  chunk_tokens: int = 4000
  overlap_tokens: int = 100
  max_chunks: int = 40
  max_steps: int = 40
  query_limit: int = 3
  query_limit_action: Literal["give_up", "force_forward"] = "give_up"
  use_scratchpad: bool = True
  use_storage: bool = True
  allow_update: bool = True
  allow_delete: bool = True
  context_tokens: int = 32768
  template_dir: str = ""
  env: str = "long_context"
  chunking: Literal["released", "stride"] = "stride"
  truncation: Literal["middle", "tail"] = "tail"
  reward: Reward = "per_question"

  def __post_init__(self):
    if self.env not in envs.ENVIRONMENTS:
      raise ValueError(f"AgentConfig.env {self.env!r} is not one of {sorted(envs.ENVIRONMENTS)}")
    if self.chunk_tokens < 1 or not 0 <= self.overlap_tokens < self.chunk_tokens:
      raise ValueError(f"AgentConfig: need chunk_tokens >= 1 and 0 <= overlap_tokens < chunk_tokens, got "
                       f"chunk_tokens={self.chunk_tokens}, overlap_tokens={self.overlap_tokens}")
    for name in ("max_chunks", "max_steps", "query_limit", "context_tokens"):
      if getattr(self, name) < 1:
        raise ValueError(f"AgentConfig.{name} must be >= 1, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  agent: AgentConfig = AgentConfig()
  memory: MemoryConfig = MemoryConfig()
  num_samples: int = 1  # G
  seed: int = 0
