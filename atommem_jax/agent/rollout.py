"""Batched multi-turn rollout: B episodes x G samples advance turn by turn until every trajectory is done.

Each turn, on the host: observations are rendered from a host copy of the memory state (entry tokens decoded to
text), the policy answers, responses are parsed into ops. On the device, one jitted `transition` takes the rollout
state (memory + environment pytrees) and the op arrays and returns the next state: the environment step decides
which ops are accepted (query limit, answers, end of episode), the accepted memory ops go through
`memory.apply_ops`, and retrieval refreshes what the next observation shows.

The policy is either a `SamplerPolicy` (the model) or any callable `policy(observations: list[str]) -> list[str]`,
which receives the chat-formatted prompts of the trajectories still running, in row order.

An op the environment accepted can still be refused by the memory itself (a "Memory i" whose entry was evicted
earlier in the same turn, a Create into full storage under `overflow="reject"`); the per-op flags show the
parser's and the environment's verdicts, the memory's own counters (`invalid_ops_B`, `overflow_events_B`) the rest.

Rows are episode-major: row `b * G + g` is sample g of episode b. Methods other than AtomMem run in the same loop:
MemAgent keeps one overwritten memory (the scratchpad) and always advances; RAG and full context skip reading
(no chunks) and answer each question once.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from atommem_jax import atomic_files, op_table
from atommem_jax.agent import env as env_lib
from atommem_jax.agent import protocol
from atommem_jax.agent import views
from atommem_jax.agent.config import AgentConfig
from atommem_jax.memory import ops as memory_ops
from atommem_jax.memory import state as memory_state
from atommem_jax.memory import transitions
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.metrics.boxed import boxed_exact_match

TextPolicy = Callable[[list[str]], list[str]]

# Agent op kind -> memory op type; answers and invalid parts never reach the memory.
_MEMORY_TYPE = {spec.kind: spec.memory_type for spec in op_table.OPS if spec.reaches_memory}


@dataclasses.dataclass(frozen=True)
class Episode:
  """One document with its questions (asked in order) and each question's accepted answers."""

  id: str
  document: str
  questions: tuple[str, ...]
  answers: tuple[tuple[str, ...], ...]

  def __post_init__(self):
    if not self.questions or len(self.questions) != len(self.answers):
      raise ValueError(f"episode {self.id!r}: needs >= 1 question and one answer list per question, got "
                       f"{len(self.questions)} questions and {len(self.answers)} answer lists")

  @classmethod
  def from_example(cls, example: Any) -> "Episode":
    """From a `data.long_context.LongContextExample`."""
    return cls(id=example.id, document=example.context, questions=tuple(example.questions),
               answers=tuple(tuple(a) for a in example.answers))


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  agent: AgentConfig = AgentConfig()
  memory: MemoryConfig = MemoryConfig()
  num_samples: int = 1  # G
  seed: int = 0


@dataclasses.dataclass
class Response:
  text: str
  ids: list[int]
  logprobs: list[float]


@dataclasses.dataclass
class Turn:
  """One turn of one trajectory: what the model saw and wrote, and what the environment made of it."""

  step: int
  phase: str  # "read" | "answer"
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
    are left out."""
    row = dataclasses.asdict(self)
    for turn_row in row["turns"]:
      for key in ("prompt", "prompt_ids", "response_ids", "response_logprobs"):
        turn_row.pop(key)
    return row


def episode_reward(answers: Sequence[str | None], golds: Sequence[Sequence[str]]) -> float:
  """Boxed exact match per question, averaged; an unanswered question scores 0."""
  scores = [boxed_exact_match(f"\\boxed{{{a}}}", g) if a is not None else 0.0 for a, g in zip(answers, golds)]
  return float(np.mean(scores))


class SamplerPolicy:
  """The model as a policy: one `Sampler.generate` call per turn over the running rows."""

  def __init__(self, sampler: Any, seed: int = 0):
    if sampler.tokenizer is None:
      raise ValueError("SamplerPolicy needs a Sampler built with a tokenizer (responses are parsed as text)")
    self.sampler = sampler
    self.seed = seed

  def respond(self, prompt_ids: list[list[int]], rows: list[int], turn: int) -> list[Response]:
    # The row id (not the batch position) seeds each trajectory, so a trajectory samples the same way in any batch.
    out = self.sampler.generate(prompt_ids, num_samples=1, seed=self.seed + turn, row_ids=rows)
    return [Response(text=out.texts[i], ids=out.token_ids(i),
                     logprobs=out.logprobs_RxN[i, :int(out.lengths_R[i])].astype(float).tolist())
            for i in range(len(rows))]


def _text_responses(policy: TextPolicy, prompts: list[str], tokenizer: Any) -> list[Response]:
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


# The memory is donated: without it every turn copies the whole store (36-42 ms vs 1.5 ms at 64 x 512 x 256).
@functools.partial(jax.jit, static_argnames=("memory_config", "embed_fn"), donate_argnames=("memory",))
def transition(memory: memory_state.MemoryState, env: env_lib.EnvState, ops: memory_ops.OpBatch,
               kind_BxO: jax.Array, valid_BxO: jax.Array, *, params: env_lib.EnvParams, memory_config: MemoryConfig,
               embed_fn: transitions.EmbedFn):
  """One turn of the whole batch on device: environment gate, memory ops, retrieval for the next observation."""
  env, result = env_lib.env_step(env, kind_BxO, valid_BxO, params)
  is_memory_op_BxO = jnp.asarray(op_table.MEMORY_TYPE_K)[kind_BxO] != memory_ops.NOOP
  keep_BxO = result.accepted_BxO & is_memory_op_BxO
  ops = ops.replace(type_BxO=jnp.where(keep_BxO, ops.type_BxO, memory_ops.NOOP))
  memory, _, _ = transitions.turn(memory, ops, embed_fn, config=memory_config)
  return memory, env, result


# One compiled program instead of one dispatch per field.
_init_memory = jax.jit(memory_state.init_memory, static_argnums=(0, 1))


def _method_ops(ops: list[protocol.Op], response: str, phase: str, config: AgentConfig) -> list[protocol.Op]:
  """MemAgent reads by overwriting its one memory with the response's `<update_memory>` (or the whole response)."""
  if config.method != "memagent" or phase != "read":
    return ops
  writes = [op for op in ops if op.valid and op.kind == protocol.UPDATE_MEMORY]
  text = writes[-1].text if writes else protocol.strip_think(response).strip()
  others = [op.refused("memagent reads only overwrite its memory") if op.valid else op for op in ops
            if not (op.valid and op.kind == protocol.UPDATE_MEMORY)]
  return [protocol.Op(kind=protocol.UPDATE_MEMORY, text=text, valid=bool(text))] + others


def _fit_width(ops: list[protocol.Op], width: int) -> list[protocol.Op]:
  """The op arrays are O wide: what does not fit is dropped and counted as one invalid part."""
  if len(ops) <= width:
    return ops
  return ops[:width - 1] + [protocol.Op(kind=protocol.INVALID, valid=False,
                                        reason=f"{len(ops) - width + 1} ops past the per-turn limit of {width}")]


def rollout(episodes: Sequence[Episode], policy: TextPolicy | SamplerPolicy, *, tokenizer: Any,
            embed_fn: transitions.EmbedFn, config: RolloutConfig,
            templates: protocol.Templates | None = None, max_turns: int | None = None,
            after_turn: Callable[[memory_state.MemoryState, env_lib.EnvState], None] | None = None
            ) -> list[Trajectory]:
  """Runs every episode G times to the end (or the step cap); see the module docstring.

  `max_turns` stops the loop early (a replayed transcript that runs out of responses); trajectories then end
  with `done=False`. `after_turn(memory, env)` sees the host copies of the state after every turn (for checks).
  """
  agent, memory_config = config.agent, config.memory
  templates = templates or protocol.Templates.load(agent.template_dir or None)
  g = config.num_samples
  row_episodes = [episodes[r // g] for r in range(len(episodes) * g)]
  docs = [views.EpisodeDocument.build(ep, tokenizer, embed_fn, agent, memory_config.top_k) for ep in episodes]
  row_docs = [docs[r // g] for r in range(len(row_episodes))]
  num_rows = len(row_episodes)

  memory = _init_memory(memory_config, num_rows)
  if agent.method == "atommem":  # the first question is the first query, so the first retrievals are on topic
    memory = views.set_initial_query(memory, [ep.questions[0] for ep in row_episodes], tokenizer, embed_fn,
                                     memory_config)
  env = env_lib.init_env([d.num_chunks if agent.reads_document else 0 for d in row_docs],
                         [len(ep.questions) for ep in row_episodes])
  params = env_lib.EnvParams.from_config(agent)
  trajectories = [Trajectory(episode_id=ep.id, sample=r % g, questions=list(ep.questions),
                             gold_answers=[list(a) for a in ep.answers], answers=[None] * len(ep.questions),
                             reward=0.0, done=False, turns=[], scratchpad="", query="", storage=[])
                  for r, ep in enumerate(row_episodes)]
  width = memory_config.max_ops_per_turn
  turn_limit = agent.max_steps if max_turns is None else min(agent.max_steps, max_turns)
  for turn_index in range(turn_limit):
    env_host, memory_host = jax.device_get((env, memory))
    rows = [r for r in range(num_rows) if not env_host.done_B[r]]
    if not rows:
      break
    shown = {r: views.shown_entries(memory_host, r, tokenizer) for r in rows}
    observations = {r: views.observation(row_episodes[r], row_docs[r], env_host, memory_host, r, shown[r], tokenizer,
                                         agent, templates) for r in rows}
    system = templates.render("system" if agent.method == "atommem" else "baseline_system")
    prompts = [protocol.chat_prompt(tokenizer, system, observations[r]) for r in rows]
    prompt_ids = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    if isinstance(policy, SamplerPolicy):
      responses = policy.respond(prompt_ids, rows, turn_index)
    else:
      responses = _text_responses(policy, prompts, tokenizer)

    parsed: dict[int, list[protocol.Op]] = {}
    host_ops = [[] for _ in range(num_rows)]
    for r, response in zip(rows, responses):
      phase = "answer" if env_host.answer_phase_B[r] else "read"
      ops = protocol.parse_response(response.text, num_shown=len(shown[r]))
      ops = _fit_width(protocol.disable_ops(_method_ops(ops, response.text, phase, agent), agent.disabled_kinds),
                       width)
      parsed[r] = ops
      host_ops[r] = [(_MEMORY_TYPE.get(op.kind, memory_ops.NOOP), op.target,
                      tokenizer.encode(op.text, add_special_tokens=False), op.valid) for op in ops]
    kind_BxO, valid_BxO = env_lib.summarize_ops([parsed.get(r, []) for r in range(num_rows)], width)
    op_batch = memory_ops.encode_ops(host_ops, memory_config)
    memory, env, result = transition(memory, env, op_batch, kind_BxO, valid_BxO, params=params,
                                     memory_config=memory_config, embed_fn=embed_fn)
    result, memory_after = jax.device_get((result, memory))
    if after_turn is not None:
      after_turn(memory_after, jax.device_get(env))

    for r, response, prompt, ids in zip(rows, responses, prompts, prompt_ids):
      ops = [op if not op.valid or result.accepted_BxO[r, o] else
             op.refused("refused by the environment (query limit or episode over)")
             for o, op in enumerate(parsed[r])]
      for o, op in enumerate(ops):
        question = int(result.answered_question_BxO[r, o])
        if question >= 0:
          trajectories[r].answers[question] = op.text
      trajectories[r].turns.append(Turn(
          step=turn_index, phase="answer" if env_host.answer_phase_B[r] else "read",
          chunk_index=int(env_host.chunk_index_B[r]), question_index=int(env_host.question_index_B[r]),
          observation=observations[r], prompt=prompt, prompt_ids=ids, retrieved=shown[r], response=response.text,
          response_ids=response.ids, response_logprobs=response.logprobs,
          ops=[{"type": op.name, "text": op.text, "target": op.target, "valid": op.valid, "reason": op.reason}
               for op in ops],
          op_counts={name: sum(op.valid and op.name == name for op in ops) for name in protocol.KIND_NAMES[1:]},
          invalid_ops=sum(not op.valid for op in ops), storage_size=int(memory_after.valid_BxM[r].sum())))

  env_host, memory_host = jax.device_get((env, memory))
  for r, trajectory in enumerate(trajectories):
    trajectory.done = bool(env_host.done_B[r])
    trajectory.reward = episode_reward(trajectory.answers, trajectory.gold_answers)
    trajectory.scratchpad, trajectory.query = views.scratchpad_and_query(memory_host, r, tokenizer)
    trajectory.storage = views.storage_in_creation_order(memory_host, r, tokenizer)
  return trajectories


def write_jsonl(trajectories: Sequence[Trajectory], path: str | pathlib.Path) -> None:
  """One trajectory per line: every turn's observation, response, parsed ops and storage size (no token ids)."""
  atomic_files.write_jsonl(path, (trajectory.to_json() for trajectory in trajectories))
