"""The long-context environment: chunking, and the per-turn step as a pure function over a pytree of (B,) arrays.

One turn, for each trajectory, given the kinds of the ops its response holds (in order, `kind_BxO`, with `valid_BxO`
saying whether each parsed and is enabled):
- ops are taken in order; once the episode is done the rest are refused;
- a Read (`update_query`) raises the query counter; a Read that takes it past `query_limit` is refused, the counter
  resets, and the run either gives up the current question or forces the next chunk (`query_limit_action`);
- any other memory op (scratchpad, Create, Update, Delete) is accepted and resets the counter;
- an answer is accepted for the current question, moves the question pointer on (resetting the counter) and the
  last one ends the episode;
- reading phase: the chunk pointer advances if the turn accepted a Create or an Update, accepted no op at all, or
  was forced forward (MemAgent-style runs always advance); past the last chunk the answer phase begins (counter reset);
- answer phase with one turn per question (RAG, full context): the question moves on after every turn, answered
  or not;
- every turn counts one step; `max_steps` ends the episode.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from atommem_jax import op_table
from atommem_jax.agent import protocol
from atommem_jax.agent.config import AgentConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EnvState:
  """Per-trajectory pointers, every field shaped (B,)."""

  chunk_index_B: jax.Array
  num_chunks_B: jax.Array
  question_index_B: jax.Array
  num_questions_B: jax.Array
  query_count_B: jax.Array
  answer_phase_B: jax.Array
  done_B: jax.Array
  step_B: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StepResult:
  """What the step decided about each op: accepted, and which question an accepted answer went to (-1: none)."""

  accepted_BxO: jax.Array
  answered_question_BxO: jax.Array
  refused_read_BxO: jax.Array
  advanced_B: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EnvParams:
  """The rules of the step as scalar arrays: an ordinary (traced) argument, so changing them never recompiles."""

  query_limit: jax.Array
  give_up_on_limit: jax.Array
  max_steps: jax.Array
  always_advance: jax.Array
  one_turn_per_question: jax.Array

  @classmethod
  def from_config(cls, config: AgentConfig) -> "EnvParams":
    return cls(query_limit=np.int32(config.query_limit),
               give_up_on_limit=np.bool_(config.query_limit_action == "give_up"),
               max_steps=np.int32(config.max_steps), always_advance=np.bool_(config.method == "memagent"),
               one_turn_per_question=np.bool_(not config.reads_document))


def chunk_document(token_ids: Sequence[int], config: AgentConfig) -> list[list[int]]:
  """Windows of `chunk_tokens` with `overlap_tokens` shared between neighbours, at most `max_chunks` of them."""
  ids = list(token_ids)
  stride = config.chunk_tokens - config.overlap_tokens
  chunks = []
  start = 0
  while start < len(ids) and len(chunks) < config.max_chunks:
    chunks.append(ids[start:start + config.chunk_tokens])
    if start + config.chunk_tokens >= len(ids):
      break
    start += stride
  return chunks


def init_env(num_chunks: Sequence[int], num_questions: Sequence[int]) -> EnvState:
  """Episodes at their first chunk and first question; one with no chunks starts in the answer phase."""
  num_chunks_B = jnp.asarray(num_chunks, jnp.int32)
  num_questions_B = jnp.asarray(num_questions, jnp.int32)
  if np.any(np.asarray(num_questions) < 1):
    raise ValueError(f"every episode needs at least one question, got counts {list(num_questions)}")
  zeros_B = jnp.zeros_like(num_chunks_B)
  return EnvState(chunk_index_B=zeros_B, num_chunks_B=num_chunks_B, question_index_B=zeros_B,
                  num_questions_B=num_questions_B, query_count_B=zeros_B, answer_phase_B=num_chunks_B == 0,
                  done_B=jnp.zeros_like(num_chunks_B, bool), step_B=zeros_B)


def env_step(state: EnvState, kind_BxO: jax.Array, valid_BxO: jax.Array,
             params: EnvParams) -> tuple[EnvState, StepResult]:
  """One turn of every trajectory (see the module docstring); pure and jittable."""
  kind_OxB = jnp.asarray(kind_BxO, jnp.int32).T
  valid_OxB = jnp.asarray(valid_BxO, bool).T
  active_B = ~state.done_B
  false_B = jnp.zeros_like(state.done_B)

  def take_op(carry, op):
    question_B, query_count_B, done_B, creates_B, any_accepted_B, forced_B = carry
    kind_B, valid_B = op
    live_B = valid_B & ~done_B
    is_read_B = live_B & jnp.asarray(op_table.IS_READ_K)[kind_B]
    is_answer_B = live_B & jnp.asarray(op_table.IS_ANSWER_K)[kind_B]
    is_memory_B = live_B & jnp.asarray(op_table.IS_WRITE_K)[kind_B]
    over_limit_B = is_read_B & (query_count_B + 1 > params.query_limit)
    # In the answer phase there is no chunk to force, so a refused Read always gives the question up.
    give_up_B = over_limit_B & (params.give_up_on_limit | state.answer_phase_B)
    accepted_B = (is_read_B & ~over_limit_B) | is_answer_B | is_memory_B
    answered_B = jnp.where(is_answer_B, question_B, -1)
    question_B = question_B + (is_answer_B | give_up_B)
    query_count_B = jnp.where(is_read_B & ~over_limit_B, query_count_B + 1, query_count_B)
    query_count_B = jnp.where(is_memory_B | is_answer_B | over_limit_B, 0, query_count_B)
    done_B = done_B | (question_B >= state.num_questions_B)
    creates_B = creates_B | (is_memory_B & jnp.asarray(op_table.ADVANCES_READER_K)[kind_B])
    forced_B = forced_B | (over_limit_B & ~give_up_B)
    carry = (question_B, query_count_B, done_B, creates_B, any_accepted_B | accepted_B, forced_B)
    return carry, (accepted_B, answered_B, over_limit_B)

  init = (state.question_index_B, state.query_count_B, state.done_B, false_B, false_B, false_B)
  (question_B, query_count_B, done_B, creates_B, any_accepted_B, forced_B), (accepted_OxB, answered_OxB,
                                                                             refused_OxB) = jax.lax.scan(
      take_op, init, (kind_OxB, valid_OxB))

  reading_B = active_B & ~done_B & ~state.answer_phase_B
  advance_B = reading_B & (creates_B | ~any_accepted_B | forced_B | params.always_advance)
  chunk_B = state.chunk_index_B + advance_B
  enters_answer_B = advance_B & (chunk_B >= state.num_chunks_B)
  answer_phase_B = state.answer_phase_B | enters_answer_B
  query_count_B = jnp.where(enters_answer_B, 0, query_count_B)
  moves_on_B = (params.one_turn_per_question & active_B & ~done_B & state.answer_phase_B &
                (question_B == state.question_index_B))
  question_B = question_B + moves_on_B
  done_B = done_B | (question_B >= state.num_questions_B)
  step_B = state.step_B + active_B
  done_B = done_B | (step_B >= params.max_steps)
  new_state = EnvState(chunk_index_B=jnp.minimum(chunk_B, state.num_chunks_B), num_chunks_B=state.num_chunks_B,
                       question_index_B=jnp.minimum(question_B, state.num_questions_B),
                       num_questions_B=state.num_questions_B, query_count_B=query_count_B,
                       answer_phase_B=answer_phase_B, done_B=done_B, step_B=step_B)
  return new_state, StepResult(accepted_BxO=accepted_OxB.T, answered_question_BxO=answered_OxB.T,
                               refused_read_BxO=refused_OxB.T, advanced_B=advance_B)


@jax.jit
def env_step_jit(state: EnvState, kind_BxO: jax.Array, valid_BxO: jax.Array,
                 params: EnvParams) -> tuple[EnvState, StepResult]:
  return env_step(state, kind_BxO, valid_BxO, params)


def summarize_ops(ops_per_trajectory: Sequence[Sequence[protocol.Op]], width: int) -> tuple[np.ndarray, np.ndarray]:
  """Host ops -> (kind_BxO int32, valid_BxO bool), padded with invalid ops; ops past `width` must be cut first."""
  kind_BxO = np.zeros((len(ops_per_trajectory), width), np.int32)
  valid_BxO = np.zeros((len(ops_per_trajectory), width), bool)
  for b, ops in enumerate(ops_per_trajectory):
    if len(ops) > width:
      raise ValueError(f"trajectory {b}: {len(ops)} ops exceed the op width {width}")
    for o, op in enumerate(ops):
      kind_BxO[b, o], valid_BxO[b, o] = op.kind, op.valid
  return kind_BxO, valid_BxO
