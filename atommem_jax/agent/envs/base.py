"""The environment interface: what a rollout engine drives, and all a new task implements.

An environment owns the task's rules; the engine owns the loop, the policy, the memory and the records. State the
jitted turn carries is a pytree of arrays with a leading row axis (one row per trajectory, episode-major: row
`b * G + g` is sample g of episode b); what only the host needs (a document's chunks, a tool session) lives in the
per-episode context that `prepare` returns.

One turn, as `engines.host.rollout` runs it:
  1. for every running row: `memory = MemoryView` of the memory state (scratchpad, query, entries shown);
     `obs = env.observe(episode, context, state, row, memory, previous)` (`previous`: the row's last turn as an
     `Interaction`: its response, and the action that ran with its result; None on the first turn);
  2. the policy answers `obs` (system + user message through the chat template, with `obs.tools` offered);
  3. `parsed = env.parse(response, memory, state, row)`: the ops in order, and at most one action (a tool call);
  4. on device, one jitted transition: `state, result = env.step(state, TurnOps, params)` decides which ops are
     accepted and where answers go; the accepted ops that reach the memory (`op_table.OpSpec.memory_type`) are
     applied, and retrieval refreshes what the next observation shows; memory ops always apply before the action;
  5. on the host: `env.act(actions, contexts)` runs the actions the step accepted (`result.act_B`), all rows at
     once; each result is that row's `previous` in the next turn;
  6. rows where `env.done(state)` stop; after `env.max_turns` turns every row stops.
The reward is not the environment's: the engine takes an injected `reward_fn(trajectory) -> float`
(`agent.rewards`), so exact match, F1, a released variant or a judge plug in without touching either.

`step` must be a pure, jittable function of (state, TurnOps, params) and hashable (a `staticmethod` or a module
function): it is a static argument of the compiled transition. Its rules come in through `params`, a pytree of
scalars traced like any other argument, so changing a limit never recompiles.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class MemoryView:
  """The memory as the observation shows it, decoded to text (host side)."""

  scratchpad: str
  query: str
  entries: tuple[str, ...]  # shown at the last retrieval, "Memory 1" first


@dataclasses.dataclass(frozen=True)
class Observation:
  """One row's prompt for this turn, and where the row stands (recorded on the turn)."""

  system: str
  user: str
  phase: str  # e.g. "read" | "answer" for the long-context reader
  chunk_index: int = 0
  question_index: int = 0
  tools: tuple[Mapping[str, Any], ...] | None = None  # JSON schemas given to the chat template (`tools=`)


@dataclasses.dataclass(frozen=True)
class Parsed:
  """One response as the environment reads it: protocol ops in the order written, and an optional action."""

  ops: Sequence[Any]  # `protocol.Op`s
  action: Any = None  # environment-defined and JSON-able (e.g. {"name": ..., "arguments": {...}}); None: none


@dataclasses.dataclass(frozen=True)
class Interaction:
  """A row's previous turn, for the next observation: its response, and the action that ran with its result."""

  response: str
  action: Any = None  # None: the response carried no action, or the step refused it
  result: Any = None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TurnOps:
  """What the step sees of a turn's responses, [B, O] ops padded with invalid ones (`op_table.INVALID`)."""

  kind_BxO: jax.Array  # int32 op kinds (`op_table`)
  valid_BxO: jax.Array  # bool: the op parsed and is enabled
  acted_B: jax.Array  # bool: the response carries an action


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StepResult:
  """The fields every environment's step result has (an environment may return a class with more)."""

  accepted_BxO: jax.Array  # bool: the environment took the op (accepted ops that reach the memory are applied)
  answered_question_BxO: jax.Array  # int32: the question an accepted answer went to, -1 for any other op
  act_B: jax.Array  # bool: the action runs on the host after this turn


class Episode(Protocol):
  """What the engine reads of an episode; an environment's episodes may carry more (a document, a start url)."""

  id: str
  questions: Sequence[str]
  answers: Sequence[Sequence[str]]


def check_questions(episode_id: str, questions: Sequence[str], answers: Sequence[Sequence[str]]) -> None:
  """An episode asks at least one question and has one list of accepted answers per question."""
  if not questions or len(questions) != len(answers):
    raise ValueError(f"episode {episode_id!r}: needs >= 1 question and one answer list per question, got "
                     f"{len(questions)} questions and {len(answers)} answer lists")


class Environment(Protocol):
  """See the module docstring for the order of the calls."""

  max_turns: int  # the engine stops every row after this many turns

  def episodes(self, examples: Sequence[Any]) -> list[Episode]:
    """Episodes from the task's examples (e.g. `data.long_context.LongContextExample`s)."""

  def prepare(self, episodes: Sequence[Episode], tokenizer: Any, embed_fn: Any, memory_config: Any) -> list[Any]:
    """Host-side context per episode, built once and shared by its G samples (chunks, retrieved passages, ...)."""

  def init_state(self, episodes: Sequence[Episode], contexts: Sequence[Any]) -> Any:
    """The state pytree of these rows (one row per entry, G samples already expanded)."""

  def initial_queries(self, episodes: Sequence[Episode]) -> Sequence[str] | None:
    """Per row, the query the memory starts with (retrieved before the first turn); None: no initial query."""

  def params(self) -> Any:
    """The step's rules as a pytree of scalars."""

  step: Callable[[Any, TurnOps, Any], tuple[Any, StepResult]]

  def done(self, state: Any) -> np.ndarray:
    """[B] bool: the row's episode is over (host copy of the state)."""

  def observe(self, episode: Episode, context: Any, state: Any, row: int, memory: MemoryView,
              previous: Interaction | None) -> Observation:
    """The row's prompt this turn (host copy of the state)."""

  def parse(self, response: str, memory: MemoryView, state: Any, row: int) -> Parsed:
    """The row's response as ops (and an action); never raises on any text: bad parts are invalid ops."""

  def act(self, actions: Sequence[Any], contexts: Sequence[Any]) -> list[Any]:
    """Runs the accepted actions of this turn on the host, all at once (`contexts[i]`: the context of the episode
    of `actions[i]`); one result each, an error being a result, never a raise. An environment whose responses
    carry no actions is never called."""
