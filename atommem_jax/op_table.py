"""The op table: every memory transition and every protocol op, declared once.

Everything that names an op derives from these two tables: the text parser (`agent.protocol`), the tokenizer's
added tokens (`data.tokenizer.PROTOCOL_TAGS`), the environment step (`agent.envs`), the memory's op types
(`memory.ops`), the rollout metrics (`op_rate/<metric>`), the evaluation tables and the training figures.

Two levels:
- a *memory op type* (`MEMORY_OPS`) is a pure transition of the memory state (`memory.transitions`): what the device
  does. Its id indexes `MemoryState.op_counts_BxC`.
- a *protocol op* (`OPS`) is a tag the agent writes, `<name>BODY</name>`. Its kind is the small int the parser, the
  environment step and the jitted rollout carry (0 is an invalid part). A protocol op names the memory op type it
  becomes (`memory_type`; `NOOP`: it never reaches the memory, e.g. an answer).

Adding an op: one row in `OPS` (a new kind at the end, so the tiny tokenizer's existing ids keep their meaning) and,
when it changes the memory in a new way, one row in `MEMORY_OPS` plus its transition in `memory.transitions`.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

# ---------------------------------------------------------------------------------------------------------------
# Memory op types (the transitions)
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MemoryOpSpec:
  """One memory transition. `needs_text`: an empty text makes it invalid; `targeted`: it names "Memory i"."""

  type: int
  name: str
  needs_text: bool
  targeted: bool


NOOP, SET_SCRATCHPAD, SET_QUERY, CREATE, UPDATE, DELETE = range(6)

MEMORY_OPS = (
    MemoryOpSpec(NOOP, "noop", needs_text=False, targeted=False),  # padding of the O-wide op row; never counted
    MemoryOpSpec(SET_SCRATCHPAD, "set_scratchpad", needs_text=True, targeted=False),
    MemoryOpSpec(SET_QUERY, "set_query", needs_text=True, targeted=False),  # re-embeds the query
    MemoryOpSpec(CREATE, "create", needs_text=True, targeted=False),
    MemoryOpSpec(UPDATE, "update", needs_text=True, targeted=True),
    MemoryOpSpec(DELETE, "delete", needs_text=False, targeted=True),
)
NUM_MEMORY_OPS = len(MEMORY_OPS)
MEMORY_OP_NAMES = tuple(spec.name for spec in MEMORY_OPS)
TARGETED_MEMORY_OPS = tuple(spec.type for spec in MEMORY_OPS if spec.targeted)
# Indexed by memory op type, for the jitted transitions.
MEMORY_NEEDS_TEXT_T = np.array([spec.needs_text for spec in MEMORY_OPS])
MEMORY_TARGETED_T = np.array([spec.targeted for spec in MEMORY_OPS])

# ---------------------------------------------------------------------------------------------------------------
# Protocol ops (the tags)
# ---------------------------------------------------------------------------------------------------------------

# How a body parses (`agent.protocol`): free text; "Memory i: TEXT"; "Memory i"; the last balanced \boxed{...}.
Body = Literal["text", "target_text", "target", "boxed"]
# What the environment makes of an accepted op: a Read (counted against the query limit), an answer to the current
# question, or a write (any other memory op; it resets the read counter).
Role = Literal["write", "read", "answer"]
# Which part of the memory an op uses; the ablations and the baselines switch parts off.
Part = Literal["scratchpad", "storage", "none"]


@dataclasses.dataclass(frozen=True)
class OpSpec:
  """One protocol op.

  name: the tag (`<name>...</name>`) and the op's type name in trajectories, replays and evaluation rows.
  memory_type: the memory transition it becomes (`NOOP`: it never reaches the memory).
  metric: `op_rate/<metric>` in the training metrics; the column label of the evaluation's memory table.
  figure_label: its line in the paper's training-dynamics figure ("" = not drawn).
  advances_reader: accepting it moves the long-context reader on to the next chunk (a stored note means the
    chunk's facts are safe).
  """

  kind: int
  name: str
  body: Body
  role: Role
  part: Part
  memory_type: int
  metric: str
  figure_label: str = ""
  advances_reader: bool = False

  @property
  def reaches_memory(self) -> bool:
    return self.memory_type != NOOP

  @property
  def open_tag(self) -> str:
    return f"<{self.name}>"

  @property
  def close_tag(self) -> str:
    return f"</{self.name}>"


INVALID = 0  # a part that does not parse (not a row: it has no tag)
INVALID_NAME = "invalid"
UPDATE_MEMORY, UPDATE_QUERY, ADD_MEMORY, MODIFY_MEMORY, DELETE_MEMORY, FINAL_ANSWER = range(1, 7)

OPS = (
    OpSpec(UPDATE_MEMORY, "update_memory", body="text", role="write", part="scratchpad",
           memory_type=SET_SCRATCHPAD, metric="scratchpad"),
    OpSpec(UPDATE_QUERY, "update_query", body="text", role="read", part="storage", memory_type=SET_QUERY,
           metric="read", figure_label="Read"),
    OpSpec(ADD_MEMORY, "add_memory", body="text", role="write", part="storage", memory_type=CREATE,
           metric="create", figure_label="Create", advances_reader=True),
    OpSpec(MODIFY_MEMORY, "modify_memory", body="target_text", role="write", part="storage", memory_type=UPDATE,
           metric="update", figure_label="Update", advances_reader=True),
    OpSpec(DELETE_MEMORY, "delete_memory", body="target", role="write", part="storage", memory_type=DELETE,
           metric="delete", figure_label="Delete"),
    OpSpec(FINAL_ANSWER, "final_answer", body="boxed", role="answer", part="none", memory_type=NOOP,
           metric="answer"),
)
# Reasoning blocks: not an op, but a tag the parsers skip and the tiny tokenizer holds as single tokens.
THINK = "think"
THINK_KIND = len(OPS) + 1  # the token parser's code for <think> (after every op kind)

NUM_KINDS = len(OPS) + 1  # with INVALID
KIND_NAMES = (INVALID_NAME,) + tuple(spec.name for spec in OPS)
TAG_KINDS = {spec.name: spec.kind for spec in OPS}
BY_KIND = {spec.kind: spec for spec in OPS}
# Indexed by kind (row 0: INVALID), for the jitted environment step and rollout.
MEMORY_TYPE_K = np.array([NOOP] + [spec.memory_type for spec in OPS], np.int32)
IS_READ_K = np.array([False] + [spec.role == "read" for spec in OPS])
IS_ANSWER_K = np.array([False] + [spec.role == "answer" for spec in OPS])
IS_WRITE_K = np.array([False] + [spec.role == "write" for spec in OPS])
ADVANCES_READER_K = np.array([False] + [spec.advances_reader for spec in OPS])


def _check_tables() -> None:
  if [spec.type for spec in MEMORY_OPS] != list(range(len(MEMORY_OPS))):
    raise AssertionError("MEMORY_OPS rows must be in type order 0, 1, ...")
  if [spec.kind for spec in OPS] != list(range(1, len(OPS) + 1)):
    raise AssertionError("OPS rows must be in kind order 1, 2, ... (0 is INVALID)")
  if len(set(KIND_NAMES + (THINK,))) != len(KIND_NAMES) + 1:
    raise AssertionError("op names must be distinct from each other, from 'invalid' and from 'think'")


_check_tables()


def kinds_of(*, part: Part | None = None, memory_type: int | None = None) -> tuple[int, ...]:
  """The kinds of the ops that use `part` of the memory / become `memory_type`, in kind order."""
  return tuple(spec.kind for spec in OPS
               if (part is None or spec.part == part) and (memory_type is None or spec.memory_type == memory_type))


def tag(kind: int, body: str) -> str:
  """`<name>body</name>`: how a policy writes the op (the scripted oracle, tests, transcripts)."""
  spec = BY_KIND[kind]
  return f"{spec.open_tag}{body}{spec.close_tag}"


def tag_tokens() -> tuple[str, ...]:
  """Every opening and closing protocol tag, think last: the tiny tokenizer's added tokens, in id order."""
  return tuple(text for name in tuple(spec.name for spec in OPS) + (THINK,) for text in (f"<{name}>", f"</{name}>"))


def metric_names() -> dict[str, str]:
  """Metric name -> op name, in kind order (`op_rate/<metric>` is the per-turn rate of that op)."""
  return {spec.metric: spec.name for spec in OPS}
