"""Replaying a hand-written transcript through the real environment and memory: the work behind the replay CLI.

  python -m atommem_jax.replay --transcript FILE.json

The transcript is
  {"document": str, "questions": [str], "answers": [[str]], "config": {...}, "responses": [str, ...]}
where `config` overrides fields of `agent.config.AgentConfig` (chunk_tokens, overlap_tokens, max_chunks, max_steps,
query_limit, query_limit_action, method, ablation switches, chunking, truncation, reward, template_dir, ...) and of
`memory.config.MemoryConfig` (top_k, capacity, entry_tokens, spill, ...), plus `tokenizer` (a tokenizer directory;
default: the tiny default tokenizer) and `embedder`: "hashing" (the default, weight-free) or a Qwen3 checkpoint
directory (HF, Orbax) used as a Qwen3-Embedding-style embedder (`checkpoint.loader.load_embedder`: last-token
pooling, an instruction prefix on queries; its hidden size must equal `embed_dim` and its vocabulary must cover the
tokenizer's). Responses are fed in order as the policy's outputs; if they run out before the episode ends, the
replay stops there with `done: false`.

Exactly one JSON object is printed:
  {"turns": [{"chunk_index": int, "phase": "read"|"answer", "ops": [{"type": str, "valid": bool}],
              "retrieved": [str], "observation": str}],
   "final": {"scratchpad": str, "storage": [str], "query": str, "answers": [str], "reward": float, "done": bool}}
`retrieved` is what that turn's observation showed, `observation` the text of that turn's prompt (the user
message); `reward` is the one `config.reward` names; storage is in creation order; an unanswered question's answer
is "". Op type names are those of `agent.protocol` (`update_memory, update_query, add_memory, modify_memory,
delete_memory, final_answer, invalid`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from atommem_jax import configlib
from atommem_jax.agent.config import AgentConfig, RolloutConfig
from atommem_jax.agent.engines import host
from atommem_jax.agent.envs.long_context import Episode
from atommem_jax.memory.config import MemoryConfig

_TOOL_KEYS = ("tokenizer", "embedder")


def _field_names(cls: type) -> set[str]:
  return {f.name for f in dataclasses.fields(cls)}


def split_config(overrides: dict[str, Any], where: str) -> tuple[AgentConfig, MemoryConfig, dict[str, Any]]:
  """Flat overrides -> (AgentConfig, MemoryConfig, tool choices); an unknown key is an error naming it."""
  if not isinstance(overrides, dict):
    raise configlib.ConfigError(f"{where}: \"config\" must be an object, got {type(overrides).__name__}")
  agent_keys, memory_keys = _field_names(AgentConfig), _field_names(MemoryConfig)
  unknown = sorted(set(overrides) - agent_keys - memory_keys - set(_TOOL_KEYS))
  if unknown:
    raise configlib.ConfigError(f"{where}: unknown config key(s) {unknown}; known keys are "
                                f"{sorted(agent_keys | memory_keys | set(_TOOL_KEYS))}")
  agent = configlib.from_dict(AgentConfig, {k: v for k, v in overrides.items() if k in agent_keys},
                              where=f"{where}: config")
  memory = configlib.from_dict(MemoryConfig, {k: v for k, v in overrides.items() if k in memory_keys},
                               where=f"{where}: config")
  tools = {k: overrides[k] for k in _TOOL_KEYS if k in overrides}
  return agent, memory, tools


def _check_transcript(transcript: Any, where: str) -> None:
  if not isinstance(transcript, dict):
    raise ValueError(f"{where}: the transcript must be a JSON object")
  expected = {"document": str, "questions": list, "answers": list, "responses": list}
  for key, kind in expected.items():
    if not isinstance(transcript.get(key), kind):
      raise ValueError(f"{where}: key {key!r} must be a {kind.__name__}, got "
                       f"{type(transcript.get(key)).__name__ if key in transcript else 'nothing'}")
  unknown = sorted(set(transcript) - set(expected) - {"config"})
  if unknown:
    raise ValueError(f"{where}: unknown top-level key(s) {unknown}")
  if not all(isinstance(q, str) for q in transcript["questions"]):
    raise ValueError(f"{where}: every question must be a string")
  if not all(isinstance(a, list) and all(isinstance(x, str) for x in a) for a in transcript["answers"]):
    raise ValueError(f"{where}: answers must be a list of lists of strings, one list per question")
  if not all(isinstance(r, str) for r in transcript["responses"]):
    raise ValueError(f"{where}: every response must be a string")


def _load_tools(tools: dict[str, Any], memory: MemoryConfig, where: str) -> tuple[Any, Any]:
  """The tokenizer and the embedder, through `checkpoint.loader` as in training and evaluation."""
  from atommem_jax.checkpoint import CheckpointError, loader  # pylint: disable=g-import-not-at-top
  try:
    tokenizer = loader.load_tokenizer(tools.get("tokenizer", ""), None, field=f"{where}: config tokenizer")
    embed_fn = loader.load_embedder(tools.get("embedder", loader.HASHING), embed_dim=memory.embed_dim,
                                    tokenizer=tokenizer, field=f"{where}: config embedder", width_field="embed_dim")
  except (CheckpointError, FileNotFoundError) as e:
    raise configlib.ConfigError(str(e)) from None
  return tokenizer, embed_fn


def replay(transcript: dict[str, Any], where: str = "transcript") -> dict[str, Any]:
  """Runs the transcript (see the module docstring) and returns the JSON-ready result."""
  _check_transcript(transcript, where)
  agent, memory, tools = split_config(transcript.get("config", {}), where)
  tokenizer, embed_fn = _load_tools(tools, memory, where)
  episode = Episode(id=where, document=transcript["document"], questions=tuple(transcript["questions"]),
                    answers=tuple(tuple(a) for a in transcript["answers"]))
  responses = iter(transcript["responses"])
  policy = lambda observations: [next(responses) for _ in observations]
  (trajectory,) = host.rollout([episode], policy, tokenizer=tokenizer, embed_fn=embed_fn,
                               config=RolloutConfig(agent=agent, memory=memory), max_turns=len(transcript["responses"]))
  return {
      "turns": [{"chunk_index": t.chunk_index, "phase": t.phase,
                 "ops": [{"type": op["type"], "valid": op["valid"]} for op in t.ops], "retrieved": t.retrieved,
                 "observation": t.observation}
                for t in trajectory.turns],
      "final": {"scratchpad": trajectory.scratchpad, "storage": trajectory.storage, "query": trajectory.query,
                "answers": [a if a is not None else "" for a in trajectory.answers], "reward": trajectory.reward,
                "done": trajectory.done},
  }
