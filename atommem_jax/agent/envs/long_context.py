"""The long-context reader: a document read chunk by chunk, then its questions answered from memory.

Methods (`AgentConfig.method`, rows of `METHODS`): "atommem" (scratchpad + storage with the CRUD ops, the first
question as the initial query); "memagent" (one overwritten memory, always advance); "rag" (the top-K chunks
retrieved for each question, answered once); "full_context" (the document cut to `context_tokens`, answered once).

The step, for each trajectory, given the kinds of the ops its response holds (in order, with `valid_BxO` saying
whether each parsed and is enabled); what each kind does comes from the op table (`OpSpec.role`,
`.advances_reader`):
- ops are taken in order; once the episode is done the rest are refused;
- a Read raises the query counter; a Read that takes it past `query_limit` is refused, the counter resets, and the
  run either gives up the current question or forces the next chunk (`query_limit_action`);
- any other memory op (a write) is accepted and resets the counter;
- an answer is accepted for the current question, moves the question pointer on (resetting the counter) and the
  last one ends the episode;
- reading phase: the chunk pointer advances if the turn accepted an op that advances the reader (a Create or an
  Update), accepted no op at all, or was forced forward (MemAgent-style runs always advance); past the last chunk
  the answer phase begins (counter reset);
- answer phase with one turn per question (RAG, full context): the question moves on after every turn, answered
  or not;
- every turn counts one step; `max_steps` ends the episode.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from atommem_jax import op_table
from atommem_jax.agent import protocol
from atommem_jax.agent.config import AgentConfig
from atommem_jax.agent.envs.base import check_questions, Interaction, MemoryView, Observation, Parsed, TurnOps
from atommem_jax.memory import transitions

DISABLED = "(disabled)"
EMPTY = "(empty)"
READ, ANSWER = "read", "answer"  # the phases recorded on each turn


@dataclasses.dataclass(frozen=True)
class Episode:
  """One document with its questions (asked in order) and each question's accepted answers."""

  id: str
  document: str
  questions: tuple[str, ...]
  answers: tuple[tuple[str, ...], ...]

  def __post_init__(self):
    check_questions(self.id, self.questions, self.answers)

  @classmethod
  def from_example(cls, example: Any) -> "Episode":
    """From a `data.long_context.LongContextExample`."""
    return cls(id=example.id, document=example.context, questions=tuple(example.questions),
               answers=tuple(tuple(a) for a in example.answers))


def chunk_budget(config: AgentConfig) -> int:
  """The tokens `max_chunks` windows cover: a longer document is truncated to this many (`config.truncation`)."""
  c, o, n = config.chunk_tokens, config.overlap_tokens, config.max_chunks
  return n * c if config.chunking == "released" else c + (n - 1) * (c - o)


def truncate_document(token_ids: Sequence[int], config: AgentConfig) -> list[int]:
  """The document cut to `chunk_budget` tokens: its middle removed ("middle"), or its end ("tail")."""
  ids, budget = list(token_ids), chunk_budget(config)
  if len(ids) <= budget:
    return ids
  if config.truncation == "tail":
    return ids[:budget]
  head = (budget + 1) // 2
  return ids[:head] + ids[len(ids) - (budget - head):]


def chunk_document(token_ids: Sequence[int], config: AgentConfig) -> list[list[int]]:
  """The reader's windows over the (truncated) document, at most `max_chunks` of them.

  "released": chunk i is tokens [i*C - o, (i+1)*C + o) (clipped to the document), so a sentence cut at a boundary
  reappears whole in the next chunk when it starts within o tokens of it. "stride": windows of C tokens every C - o.
  """
  ids = truncate_document(token_ids, config)
  c, o = config.chunk_tokens, config.overlap_tokens
  if config.chunking == "released":
    return [ids[max(0, i * c - o):(i + 1) * c + o] for i in range(-(-len(ids) // c))]
  stride = c - o
  chunks = []
  start = 0
  while start < len(ids) and len(chunks) < config.max_chunks:
    chunks.append(ids[start:start + c])
    if start + c >= len(ids):
      break
    start += stride
  return chunks


# ----------------------------------------------------------------------------------------------------------------
# State and step (pure, on device)
# ----------------------------------------------------------------------------------------------------------------


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
  act_B: jax.Array  # always False: the reader has no actions
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
    method = METHODS[config.method]
    return cls(query_limit=np.int32(config.query_limit),
               give_up_on_limit=np.bool_(config.query_limit_action == "give_up"),
               max_steps=np.int32(config.max_steps), always_advance=np.bool_(method.always_advance),
               one_turn_per_question=np.bool_(not method.reads_document))


def initial_state(num_chunks: Sequence[int], num_questions: Sequence[int]) -> EnvState:
  """Episodes at their first chunk and first question; one with no chunks starts in the answer phase."""
  num_chunks_B = jnp.asarray(num_chunks, jnp.int32)
  num_questions_B = jnp.asarray(num_questions, jnp.int32)
  if np.any(np.asarray(num_questions) < 1):
    raise ValueError(f"every episode needs at least one question, got counts {list(num_questions)}")
  zeros_B = jnp.zeros_like(num_chunks_B)
  return EnvState(chunk_index_B=zeros_B, num_chunks_B=num_chunks_B, question_index_B=zeros_B,
                  num_questions_B=num_questions_B, query_count_B=zeros_B, answer_phase_B=num_chunks_B == 0,
                  done_B=jnp.zeros_like(num_chunks_B, bool), step_B=zeros_B)


def step(state: EnvState, turn: TurnOps, params: EnvParams) -> tuple[EnvState, StepResult]:
  """One turn of every trajectory (see the module docstring); pure and jittable."""
  kind_OxB = jnp.asarray(turn.kind_BxO, jnp.int32).T
  valid_OxB = jnp.asarray(turn.valid_BxO, bool).T
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
  return new_state, StepResult(accepted_BxO=accepted_OxB.T, answered_question_BxO=answered_OxB.T, act_B=false_B,
                               refused_read_BxO=refused_OxB.T, advanced_B=advance_B)


step_jit = jax.jit(step)

# ----------------------------------------------------------------------------------------------------------------
# Methods: what each one reads, is shown and may write
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EpisodeDocument:
  """The host-side, per-episode text an observation draws on (built once per episode, shared by its G samples)."""

  chunks: tuple[str, ...]
  answer_contexts: tuple[str, ...]  # per question, what a method that skips reading answers from; () otherwise

  @property
  def num_chunks(self) -> int:
    return len(self.chunks)

  @classmethod
  def build(cls, episode: Episode, tokenizer: Any, embed_fn: transitions.EmbedFn, config: AgentConfig,
            top_k: int) -> "EpisodeDocument":
    ids = tokenizer.encode(episode.document, add_special_tokens=False)
    chunk_ids = chunk_document(ids, config)
    chunks = tuple(tokenizer.decode(c) for c in chunk_ids)
    answer_contexts = METHODS[config.method].answer_contexts
    contexts = () if answer_contexts is None else tuple(
        answer_contexts(ids, chunk_ids, chunks, episode.questions, tokenizer, embed_fn, config, top_k))
    return cls(chunks=chunks, answer_contexts=contexts)


@dataclasses.dataclass(frozen=True)
class View:
  """Everything a method's observation may show, for one trajectory this turn."""

  episode: Episode
  document: EpisodeDocument
  question_index: int  # the current question, clamped to the last one
  chunk_index: int | None  # None in the answer phase
  memory: MemoryView
  config: AgentConfig
  reads_in_a_row: int = 0  # the query counter: Reads since the last other op

  @property
  def question(self) -> str:
    return self.episode.questions[self.question_index]

  def question_fields(self) -> dict[str, Any]:
    return dict(question=self.question, question_number=self.question_index + 1,
                num_questions=len(self.episode.questions))

  def chunk_fields(self) -> dict[str, Any]:
    return dict(chunk=self.document.chunks[self.chunk_index], chunk_number=self.chunk_index + 1,
                num_chunks=self.document.num_chunks,
                questions=protocol.render_questions(self.episode.questions, self.question_index))


@dataclasses.dataclass(frozen=True)
class Method:
  """One long-context method (a row of `METHODS`).

  parts: the memory parts it has; ops on the others are counted invalid no-ops.
  honours_ablations: the `use_*` / `allow_*` switches of `AgentConfig` apply.
  view: (template name, fields) of a turn's user message.
  answer_contexts: for a method that skips reading, per question the text it answers from.
  rewrite_ops: (ops, response, reading) -> ops, a method's own reading of a response (`reading`: in the reading
    phase).
  """

  system_template: str
  reads_document: bool
  view: Callable[[View], tuple[str, dict[str, Any]]]
  parts: tuple[op_table.Part, ...] = ("scratchpad", "storage")
  honours_ablations: bool = False
  always_advance: bool = False
  first_question_is_query: bool = False
  answer_contexts: Callable[..., list[str]] | None = None
  rewrite_ops: Callable[[list[protocol.Op], str, bool], list[protocol.Op]] | None = None

  def disabled_kinds(self, config: AgentConfig) -> tuple[int, ...]:
    """Op kinds that become counted invalid no-ops: parts the method lacks, and the config's ablations."""
    disabled = [kind for part in ("scratchpad", "storage") if part not in self.parts
                for kind in op_table.kinds_of(part=part)]
    if self.honours_ablations:
      switches = ((config.use_scratchpad, op_table.kinds_of(part="scratchpad")),
                  (config.use_storage, op_table.kinds_of(part="storage")),
                  (config.allow_update, op_table.kinds_of(memory_type=op_table.UPDATE)),
                  (config.allow_delete, op_table.kinds_of(memory_type=op_table.DELETE)))
      disabled += [kind for enabled, kinds in switches if not enabled for kind in kinds]
    return tuple(sorted(set(disabled)))


def _atommem_view(view: View) -> tuple[str, dict[str, Any]]:
  config, memory = view.config, view.memory
  fields = dict(scratchpad=(memory.scratchpad or EMPTY) if config.use_scratchpad else DISABLED,
                query=(memory.query or EMPTY) if config.use_storage else DISABLED,
                memories=protocol.render_entries(memory.entries) if config.use_storage else DISABLED,
                reads_in_a_row=view.reads_in_a_row, query_limit=config.query_limit, **view.question_fields())
  if view.chunk_index is None:
    return "answer", dict(questions=protocol.render_questions(view.episode.questions, view.question_index), **fields)
  return "read", dict(**fields, **view.chunk_fields())


def _memagent_view(view: View) -> tuple[str, dict[str, Any]]:
  memory = view.memory.scratchpad or EMPTY
  if view.chunk_index is None:
    return "memagent_answer", dict(memory=memory, **view.question_fields())
  return "memagent_read", dict(memory=memory, **view.question_fields(), **view.chunk_fields())


def _memagent_ops(ops: list[protocol.Op], response: str, reading: bool) -> list[protocol.Op]:
  """MemAgent reads by overwriting its one memory with the response's scratchpad write (or the whole response)."""
  if not reading:
    return ops
  writes = [op for op in ops if op.valid and op.kind == op_table.UPDATE_MEMORY]
  text = writes[-1].text if writes else protocol.strip_think(response).strip()
  others = [op.refused("memagent reads only overwrite its memory") if op.valid else op for op in ops
            if not (op.valid and op.kind == op_table.UPDATE_MEMORY)]
  return [protocol.Op(kind=op_table.UPDATE_MEMORY, text=text, valid=bool(text))] + others


def _embed(embed_fn: transitions.EmbedFn, token_lists: Sequence[Sequence[int]], width: int,
           is_query: bool) -> np.ndarray:
  """Embeddings of texts cut or padded to `width` tokens; rows padded to a power of two so shapes (and compiled
  programs) repeat across episodes."""
  rows = 1 << max(0, len(token_lists) - 1).bit_length()
  tokens_NxT = np.zeros((rows, width), np.int32)
  lengths_N = np.zeros((rows,), np.int32)
  for i, ids in enumerate(token_lists):
    ids = list(ids)[:width]
    tokens_NxT[i, :len(ids)], lengths_N[i] = ids, len(ids)
  return np.asarray(_jitted_embed(tokens_NxT, lengths_N, embed_fn, is_query))[:len(token_lists)]


@functools.partial(jax.jit, static_argnums=(2, 3))
def _jitted_embed(tokens_NxT, lengths_N, embed_fn, is_query):
  return embed_fn(tokens_NxT, lengths_N, is_query)


def _rag_passages(ids: list[int], chunk_ids: list[list[int]], chunks: Sequence[str], questions: Sequence[str],
                  tokenizer: Any, embed_fn: transitions.EmbedFn, config: AgentConfig, top_k: int) -> list[str]:
  """For each question, its top-K chunks by embedding similarity, shown in document order."""
  del ids
  if not chunks:
    return ["(no passages)"] * len(questions)
  question_ids = [tokenizer.encode(q, add_special_tokens=False) for q in questions]
  chunks_NxD = _embed(embed_fn, chunk_ids, config.chunk_tokens, False)
  questions_QxD = _embed(embed_fn, question_ids, max(64, max(len(q) for q in question_ids)), True)
  scores_QxN = questions_QxD @ chunks_NxD.T
  passages = []
  for scores_N in scores_QxN:
    best = sorted(np.argsort(-scores_N, kind="stable")[:top_k].tolist())
    passages.append("\n\n".join(f"Passage {i + 1}:\n{chunks[i]}" for i in best))
  return passages


def _full_context(ids: list[int], chunk_ids: list[list[int]], chunks: Sequence[str], questions: Sequence[str],
                  tokenizer: Any, embed_fn: transitions.EmbedFn, config: AgentConfig, top_k: int) -> list[str]:
  del chunk_ids, chunks, embed_fn, top_k
  return [tokenizer.decode(ids[:config.context_tokens])] * len(questions)


METHODS = {
    "atommem": Method(system_template="system", reads_document=True, view=_atommem_view, honours_ablations=True,
                      first_question_is_query=True),
    # Its one overwritten memory is the scratchpad.
    "memagent": Method(system_template="baseline_system", reads_document=True, view=_memagent_view,
                       parts=("scratchpad",), always_advance=True, rewrite_ops=_memagent_ops),
    "rag": Method(system_template="baseline_system", reads_document=False, parts=(),
                  view=lambda view: ("rag_answer", dict(chunks=view.document.answer_contexts[view.question_index],
                                                        **view.question_fields())),
                  answer_contexts=_rag_passages),
    "full_context": Method(system_template="baseline_system", reads_document=False, parts=(),
                           view=lambda view: ("full_context_answer", dict(
                               context=view.document.answer_contexts[view.question_index],
                               **view.question_fields())),
                           answer_contexts=_full_context),
}

# ----------------------------------------------------------------------------------------------------------------
# The environment
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class LongContextEnv:
  """The reader as an `envs.base.Environment`; `config.method` picks the row of `METHODS`."""

  config: AgentConfig
  templates: protocol.Templates

  step = staticmethod(step)

  @property
  def method(self) -> Method:
    return METHODS[self.config.method]

  @property
  def max_turns(self) -> int:
    return self.config.max_steps

  @property
  def disabled_kinds(self) -> tuple[int, ...]:
    return self.method.disabled_kinds(self.config)

  def episodes(self, examples: Sequence[Any]) -> list[Episode]:
    return [Episode.from_example(example) for example in examples]

  def prepare(self, episodes: Sequence[Episode], tokenizer: Any, embed_fn: transitions.EmbedFn,
              memory_config: Any) -> list[EpisodeDocument]:
    return [EpisodeDocument.build(episode, tokenizer, embed_fn, self.config, memory_config.top_k)
            for episode in episodes]

  def init_state(self, episodes: Sequence[Episode], contexts: Sequence[EpisodeDocument]) -> EnvState:
    reads = self.method.reads_document
    return initial_state([d.num_chunks if reads else 0 for d in contexts], [len(ep.questions) for ep in episodes])

  def initial_queries(self, episodes: Sequence[Episode]) -> list[str] | None:
    # The first question is the first query, so the first retrievals are on topic.
    return [ep.questions[0] for ep in episodes] if self.method.first_question_is_query else None

  def params(self) -> EnvParams:
    return EnvParams.from_config(self.config)

  def done(self, state: EnvState) -> np.ndarray:
    return np.asarray(state.done_B)

  def _view(self, episode: Episode, document: EpisodeDocument, state: EnvState, row: int, memory: MemoryView) -> View:
    answering = bool(state.answer_phase_B[row])
    return View(episode=episode, document=document,
                question_index=min(int(state.question_index_B[row]), len(episode.questions) - 1),
                chunk_index=None if answering else int(state.chunk_index_B[row]), memory=memory, config=self.config,
                reads_in_a_row=int(state.query_count_B[row]))

  def user_message(self, episode: Episode, document: EpisodeDocument, state: EnvState, row: int,
                   memory: MemoryView) -> tuple[str, dict[str, Any]]:
    """The template name and fields of the row's user message (the token-space engine assembles the same)."""
    return self.method.view(self._view(episode, document, state, row, memory))

  def observe(self, episode: Episode, context: EpisodeDocument, state: EnvState, row: int, memory: MemoryView,
              previous: Interaction | None) -> Observation:
    del previous  # no actions
    template, fields = self.user_message(episode, context, state, row, memory)
    return Observation(system=self.templates.render(self.method.system_template),
                       user=self.templates.render(template, **fields),
                       phase=ANSWER if state.answer_phase_B[row] else READ,
                       chunk_index=int(state.chunk_index_B[row]), question_index=int(state.question_index_B[row]))

  def parse(self, response: str, memory: MemoryView, state: EnvState, row: int) -> Parsed:
    ops = protocol.parse_response(response, num_shown=len(memory.entries))
    if self.method.rewrite_ops is not None:
      ops = self.method.rewrite_ops(ops, response, not state.answer_phase_B[row])
    return Parsed(ops=protocol.disable_ops(ops, self.disabled_kinds))

  def act(self, actions: Sequence[Any], contexts: Sequence[Any]) -> list[Any]:
    raise ValueError(f"the long-context reader has no actions, got {len(actions)}")


def make(config: AgentConfig, templates: protocol.Templates | None = None) -> LongContextEnv:
  """The reader for `config` (our packaged templates, or `config.template_dir`, unless `templates` are given)."""
  return LongContextEnv(config=config, templates=templates or protocol.Templates.load(config.template_dir or None))
