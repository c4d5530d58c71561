"""`AgentConfig`: the environment, the method (AtomMem or a baseline) and its ablations, in one frozen dataclass
(the web environment's own settings in `WebConfig`, its `web` field); `RolloutConfig`: that, the memory, and the
samples per episode, for a rollout engine."""
from __future__ import annotations

import dataclasses
from typing import Literal

from atommem_jax.agent import envs
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.metrics.judge import JudgeConfig

# The long-context reader's methods: the rows of `envs.long_context.METHODS` (a test holds the two equal).
Method = Literal["atommem", "memagent", "rag", "full_context"]
# The rewards a config may name: the keys of `rewards.REWARDS` (a test holds the two equal).
Reward = Literal["per_question", "released_union", "web_boxed", "llm_judge"]


@dataclasses.dataclass(frozen=True)
class WebConfig:
  """The web environment (`envs.web`): its step cap, what it shows of a tool response, and where the tools are.

  max_steps: the step cap (10, as released); on the last step the tools are withdrawn. (`AgentConfig.max_steps` is
    the long-context reader's.)
  tool_response_tokens: the previous tool response (or response) is cut to this many tokens in the observation.
  tools: the server's tools offered to the model (a listed one the server lacks is left out).
  server_url / server_command: the MCP server, over streamable HTTP (`http://H:P/mcp`) or as a stdio child process
    (a shell-quoted command line). With neither, `corpus` (a corpus JSONL file) is served by our corpus server on a
    free localhost port for as long as the environment lives; `corpus_flags` are that server's extra flags.
  call_timeout_s: each tool call's limit; a call past it answers with a timeout message.
  """

  max_steps: int = 10
  tool_response_tokens: int = 4000
  tools: tuple[str, ...] = ("search", "fetch_url")
  server_url: str = ""
  server_command: str = ""
  corpus: str = ""
  corpus_flags: tuple[str, ...] = ()
  call_timeout_s: float = 60.0

  def __post_init__(self):
    if self.max_steps < 1 or self.tool_response_tokens < 1 or self.call_timeout_s <= 0:
      raise ValueError(f"WebConfig: max_steps, tool_response_tokens and call_timeout_s must be positive: {self}")
    if sum(map(bool, (self.server_url, self.server_command, self.corpus))) > 1:
      raise ValueError(f"WebConfig: give at most one of server_url, server_command and corpus, got "
                       f"{self.server_url!r}, {self.server_command!r}, {self.corpus!r}")
    if not self.tools:
      raise ValueError("WebConfig.tools is empty: offer at least one tool")


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
    accepted answer against the union of the episode's gold answers, summed and divided by the questions),
    "web_boxed" (the released web reward: each answer boxed, in the released 300-character window) or "llm_judge"
    (an OpenAI-compatible chat endpoint grades each answer pass / fail: `judge.url`, `judge.model`).
  judge: the endpoint the "llm_judge" reward calls (`metrics.judge.JudgeConfig`).
  The released experiment files set `chunking="released"`, `truncation="middle"`, `template_dir="released"`; the
  defaults here keep the embedded default's numbers.
  web: the web environment's settings (`WebConfig`); the ablation switches and `query_limit` apply there too.
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
  # Subtracted from the reward times the share of the trajectory's turns holding an invalid op (`rewards.by_name`).
  format_penalty: float = 0.0
  judge: JudgeConfig = JudgeConfig()
  web: WebConfig = WebConfig()

  def __post_init__(self):
    if self.env not in envs.ENVIRONMENTS:
      raise ValueError(f"AgentConfig.env {self.env!r} is not one of {sorted(envs.ENVIRONMENTS)}")
    if self.chunk_tokens < 1 or not 0 <= self.overlap_tokens < self.chunk_tokens:
      raise ValueError(f"AgentConfig: need chunk_tokens >= 1 and 0 <= overlap_tokens < chunk_tokens, got "
                       f"chunk_tokens={self.chunk_tokens}, overlap_tokens={self.overlap_tokens}")
    for name in ("max_chunks", "max_steps", "query_limit", "context_tokens"):
      if getattr(self, name) < 1:
        raise ValueError(f"AgentConfig.{name} must be >= 1, got {getattr(self, name)}")
    if self.reward == "llm_judge" and not (self.judge.url and self.judge.model):
      raise ValueError("AgentConfig.reward llm_judge needs judge.url and judge.model (an OpenAI-compatible endpoint)")
    if self.format_penalty < 0:
      raise ValueError(f"AgentConfig.format_penalty must be >= 0, got {self.format_penalty}")


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  agent: AgentConfig = AgentConfig()
  memory: MemoryConfig = MemoryConfig()
  num_samples: int = 1  # G
  seed: int = 0
