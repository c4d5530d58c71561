"""The web environment: a question answered by calling search and page-fetch tools over MCP, one call per step,
while the agent keeps the same scratchpad and storage with the same CRUD tags.

A response holds memory tags and at most one tool call in Qwen's format,
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (`tools.tool_calls.parse_tool_call`, whose `remainder`
the memory-tag parser reads). Memory ops apply first, then the call runs. A call that cannot be used (bad JSON
beyond repair, a second call, a stray closing tag, a call on the last step) is one counted invalid op; an unknown
tool, a tool error or a timeout is the tool's response text, and the episode goes on.

The observation (`templates/web_step.txt`, `web_last_step.txt`): the question (and the website to start from, when
the task names one), the memory view (scratchpad, query, the top-K entries, the reads in a row against the limit),
and one slot for the previous step: its tool call with the tool's response, or, when it made no call, the response
itself; either cut to `web.tool_response_tokens` tokens. The tools' JSON schemas go to the chat template
(`Observation.tools`, rendered by the tokenizer's template as Qwen3's renders them); on the last step
(`web.max_steps`, 10 as released) they are withdrawn and the prompt says so.

The step, per trajectory, over the response's ops in order (kinds from the op table):
- once the episode is done the rest are refused;
- a Read raises the query counter; one that takes it past `query_limit` is refused, the counter resets and the
  current question is given up (the long-context reader's "give_up", the released rule);
- any other memory op (a write) is accepted and resets the counter;
- an answer is accepted for the current question, moves to the next one (resetting the counter); the last one ends
  the episode;
- the tool call runs (`act_B`) if the response carries one, the episode is still running after the ops, and this
  is not the last step;
- every step counts; `web.max_steps` ends the episode.

The reward is the engine's injected one; `agent.rewards.per_question_web` adapts the web rewards of
`metrics.judge` (the released boxed window, the LLM judge).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import shlex
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from atommem_jax import op_table
from atommem_jax.agent import protocol
from atommem_jax.agent.config import AgentConfig, WebConfig
from atommem_jax.agent.envs import long_context
from atommem_jax.agent.envs.base import check_questions, Interaction, MemoryView, Observation, Parsed, StepResult, TurnOps
from atommem_jax.tools.tool_calls import ToolCall, parse_tool_call

BROWSE, ANSWER = "browse", "answer"  # the phases recorded on each turn: tools offered, or the last step
EMPTY = "(empty)"
DISABLED = "(disabled)"
NO_WEBSITE = "(none)"
LAST_STEP_REASON = "tool call on the last step: the tools are withdrawn"
CUT_MARK = "\n[... cut]"

# Each view's file and the placeholders it may use (`protocol.Templates.load` checks them).
_STEP_FIELDS = ("question", "website", "scratchpad", "query", "memories", "reads", "query_limit", "previous", "step",
                "max_steps")
TEMPLATE_FIELDS = {"web_system": (), "web_step": _STEP_FIELDS, "web_last_step": _STEP_FIELDS}


@dataclasses.dataclass(frozen=True)
class Episode:
  """One or more questions answered in order (web tasks have one), each with its accepted answers, and the website
  to start from ("" when the task names none)."""

  id: str
  questions: tuple[str, ...]
  answers: tuple[tuple[str, ...], ...]
  root_url: str = ""

  def __post_init__(self):
    check_questions(self.id, self.questions, self.answers)

  @classmethod
  def from_question(cls, question: Any) -> "Episode":
    """From a `data.web_readers.WebQuestion`."""
    record = question.record
    return cls(id=record.id, questions=(record.question,), answers=(tuple(record.answers),),
               root_url=question.root_url)


# ----------------------------------------------------------------------------------------------------------------
# State and step (pure, on device)
# ----------------------------------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class WebState:
  """Per-trajectory pointers, every field shaped (B,)."""

  question_index_B: jax.Array
  num_questions_B: jax.Array
  query_count_B: jax.Array
  step_B: jax.Array
  done_B: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class WebParams:
  query_limit: jax.Array
  max_steps: jax.Array

  @classmethod
  def from_config(cls, config: AgentConfig) -> "WebParams":
    return cls(query_limit=np.int32(config.query_limit), max_steps=np.int32(config.web.max_steps))


def initial_state(num_questions: Sequence[int]) -> WebState:
  num_questions_B = jnp.asarray(num_questions, jnp.int32)
  if np.any(np.asarray(num_questions) < 1):
    raise ValueError(f"every episode needs at least one question, got counts {list(num_questions)}")
  zeros_B = jnp.zeros_like(num_questions_B)
  return WebState(question_index_B=zeros_B, num_questions_B=num_questions_B, query_count_B=zeros_B, step_B=zeros_B,
                  done_B=jnp.zeros_like(num_questions_B, bool))


def step(state: WebState, turn: TurnOps, params: WebParams) -> tuple[WebState, StepResult]:
  """One step of every trajectory (see the module docstring); pure and jittable."""
  kind_OxB = jnp.asarray(turn.kind_BxO, jnp.int32).T
  valid_OxB = jnp.asarray(turn.valid_BxO, bool).T
  active_B = ~state.done_B

  def take_op(carry, op):
    question_B, query_count_B, done_B = carry
    kind_B, valid_B = op
    live_B = valid_B & ~done_B
    is_read_B = live_B & jnp.asarray(op_table.IS_READ_K)[kind_B]
    is_answer_B = live_B & jnp.asarray(op_table.IS_ANSWER_K)[kind_B]
    is_write_B = live_B & jnp.asarray(op_table.IS_WRITE_K)[kind_B]
    over_limit_B = is_read_B & (query_count_B + 1 > params.query_limit)
    accepted_B = (is_read_B & ~over_limit_B) | is_answer_B | is_write_B
    answered_B = jnp.where(is_answer_B, question_B, -1)
    question_B = question_B + (is_answer_B | over_limit_B)
    query_count_B = jnp.where(is_read_B & ~over_limit_B, query_count_B + 1, query_count_B)
    query_count_B = jnp.where(is_write_B | is_answer_B | over_limit_B, 0, query_count_B)
    done_B = done_B | (question_B >= state.num_questions_B)
    return (question_B, query_count_B, done_B), (accepted_B, answered_B)

  (question_B, query_count_B, done_B), (accepted_OxB, answered_OxB) = jax.lax.scan(
      take_op, (state.question_index_B, state.query_count_B, state.done_B), (kind_OxB, valid_OxB))
  act_B = turn.acted_B & active_B & ~done_B & (state.step_B + 1 < params.max_steps)
  step_B = state.step_B + active_B
  done_B = done_B | (step_B >= params.max_steps)
  new_state = WebState(question_index_B=jnp.minimum(question_B, state.num_questions_B),
                       num_questions_B=state.num_questions_B, query_count_B=query_count_B, step_B=step_B,
                       done_B=done_B)
  return new_state, StepResult(accepted_BxO=accepted_OxB.T, answered_question_BxO=answered_OxB.T, act_B=act_B)


# ----------------------------------------------------------------------------------------------------------------
# Observations
# ----------------------------------------------------------------------------------------------------------------


def cut_to_tokens(text: str, tokenizer: Any, budget: int) -> str:
  """`text` cut to its first `budget` tokens (an exact prefix, from the tokenizer's character offsets)."""
  encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
  offsets = encoded["offset_mapping"]
  if len(offsets) <= budget:
    return text
  return text[:offsets[budget - 1][1]] + CUT_MARK


def render_call(action: dict[str, Any]) -> str:
  return f"{action['name']} {json.dumps(action['arguments'], ensure_ascii=False)}"


def render_previous(previous: Interaction | None, tokenizer: Any, budget: int) -> str:
  """The one slot for the previous step: its call and the tool's response, or why a call did not run, or the
  response itself when it made no call."""
  if previous is None:
    return "(nothing yet: this is your first step)"
  if previous.action is not None:
    return (f"You called {render_call(previous.action)}\nTool response:\n"
            f"{cut_to_tokens(previous.result['text'], tokenizer, budget)}")
  reasons = parse_tool_call(previous.response).reasons
  if reasons:
    return f"Your tool call did not run ({'; '.join(reasons)}). Your response was:\n" + cut_to_tokens(
        previous.response, tokenizer, budget)
  return "You made no tool call. Your response was:\n" + cut_to_tokens(previous.response, tokenizer, budget)


@dataclasses.dataclass(frozen=True)
class EpisodeContext:
  """What an observation needs besides the state: the tokenizer that counts the tool-response budget."""

  tokenizer: Any


# ----------------------------------------------------------------------------------------------------------------
# Tools
# ----------------------------------------------------------------------------------------------------------------


def server_config(config: WebConfig) -> Any:
  """The `tools.mcp_client.ToolServerConfig` of `server_url` or `server_command`."""
  from atommem_jax.tools.mcp_client import ToolServerConfig  # pylint: disable=g-import-not-at-top
  if not (config.server_url or config.server_command):
    raise ValueError("the web environment needs web.server_url, web.server_command or web.corpus")
  return ToolServerConfig(url=config.server_url, command=tuple(shlex.split(config.server_command)),
                          allowed_tools=config.tools, call_timeout_s=config.call_timeout_s)


@contextlib.contextmanager
def serving(config: WebConfig, log_path: str = ""):
  """Yields `config` with a server to reach: unchanged when it names one, else with `server_url` set to our corpus
  server serving `config.corpus` on a free localhost port (stopped on exit). One per process is enough: every
  environment made from the yielded config shares it."""
  if not config.corpus:
    yield config
    return
  from atommem_jax.tools import corpus_server  # pylint: disable=g-import-not-at-top
  with corpus_server.launch(config.corpus, extra_flags=config.corpus_flags, log_path=log_path) as url:
    yield dataclasses.replace(config, server_url=url, corpus="")


# ----------------------------------------------------------------------------------------------------------------
# The environment
# ----------------------------------------------------------------------------------------------------------------


class WebEnv:
  """The web task as an `envs.base.Environment`, with a connected MCP client (`tools.mcp_client.ToolClient` or
  anything with its `chat_template_tools()` and `call_batch(calls)`). `close()` ends what it started (the
  client, a corpus server it launched); the environment is also a context manager."""

  host_actions = True  # its tools run on the host between turns: a token-level device engine cannot run it
  step = staticmethod(step)

  def __init__(self, config: AgentConfig, templates: protocol.Templates, client: Any,
               owned: contextlib.ExitStack | None = None):
    self.config = config
    self.templates = templates
    self.client = client
    self.tools = tuple(client.chat_template_tools())
    self._owned = owned
    # The ablation switches as the AtomMem reader applies them.
    self.disabled_kinds = long_context.METHODS["atommem"].disabled_kinds(config)

  def close(self) -> None:
    if self._owned is not None:
      self._owned.close()
      self._owned = None

  def __enter__(self) -> "WebEnv":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  @property
  def max_turns(self) -> int:
    return self.config.web.max_steps

  def episodes(self, examples: Sequence[Any]) -> list[Episode]:
    return [e if isinstance(e, Episode) else Episode.from_question(e) for e in examples]

  def prepare(self, episodes: Sequence[Episode], tokenizer: Any, embed_fn: Any, memory_config: Any
              ) -> list[EpisodeContext]:
    del embed_fn, memory_config
    context = EpisodeContext(tokenizer=tokenizer)
    return [context] * len(episodes)

  def init_state(self, episodes: Sequence[Episode], contexts: Sequence[EpisodeContext]) -> WebState:
    del contexts
    return initial_state([len(ep.questions) for ep in episodes])

  def initial_queries(self, episodes: Sequence[Episode]) -> list[str]:
    # The question is the first query, so the notes shown are on topic from the first step.
    return [ep.questions[0] for ep in episodes]

  def params(self) -> WebParams:
    return WebParams.from_config(self.config)

  def done(self, state: WebState) -> np.ndarray:
    return np.asarray(state.done_B)

  def is_last_step(self, state: WebState, row: int) -> bool:
    return int(state.step_B[row]) + 1 >= self.config.web.max_steps

  def observe(self, episode: Episode, context: EpisodeContext, state: WebState, row: int, memory: MemoryView,
              previous: Interaction | None) -> Observation:
    config = self.config
    question_index = min(int(state.question_index_B[row]), len(episode.questions) - 1)
    last = self.is_last_step(state, row)
    fields = dict(
        question=episode.questions[question_index], website=episode.root_url or NO_WEBSITE,
        scratchpad=(memory.scratchpad or EMPTY) if config.use_scratchpad else DISABLED,
        query=(memory.query or EMPTY) if config.use_storage else DISABLED,
        memories=protocol.render_entries(memory.entries) if config.use_storage else DISABLED,
        reads=int(state.query_count_B[row]), query_limit=config.query_limit,
        previous=render_previous(previous, context.tokenizer, config.web.tool_response_tokens),
        step=int(state.step_B[row]) + 1, max_steps=config.web.max_steps)
    return Observation(system=self.templates.render("web_system"),
                       user=self.templates.render("web_last_step" if last else "web_step", **fields),
                       phase=ANSWER if last else BROWSE, question_index=question_index,
                       tools=None if last else self.tools)

  def parse(self, response: str, memory: MemoryView, state: WebState, row: int) -> Parsed:
    """Memory tags from the response with its tool-call text blanked, then one invalid op per unusable call part;
    a call on the last step is one more."""
    call = parse_tool_call(response)
    ops = protocol.parse_response(call.remainder, num_shown=len(memory.entries))
    ops += [protocol.Op(kind=op_table.INVALID, valid=False, reason=reason) for reason in call.reasons]
    action = None
    if call.call is not None:
      if self.is_last_step(state, row):
        ops.append(protocol.Op(kind=op_table.INVALID, valid=False, reason=LAST_STEP_REASON))
      else:
        action = call.call.as_dict()
    return Parsed(ops=protocol.disable_ops(ops, self.disabled_kinds), action=action)

  def act(self, actions: Sequence[dict[str, Any]], contexts: Sequence[Any]) -> list[dict[str, Any]]:
    """Every accepted call of this step at once (concurrently); each result is `{"text", "is_error"}`."""
    del contexts
    results = self.client.call_batch([ToolCall(name=a["name"], arguments=a["arguments"]) for a in actions])
    return [{"text": r.text, "is_error": bool(r.is_error)} for r in results]


def load_templates(directory: str | None) -> protocol.Templates:
  return protocol.Templates.load(directory or None, TEMPLATE_FIELDS)


def make(config: AgentConfig, templates: protocol.Templates | None = None, client: Any = None) -> WebEnv:
  """The web environment for `config`: connected to `client` if given, else to `config.web`'s server (a corpus
  named there is served for the environment's lifetime). Close it when done."""
  owned = contextlib.ExitStack()
  try:
    if client is None:
      from atommem_jax.tools.mcp_client import ToolClient  # pylint: disable=g-import-not-at-top
      web = owned.enter_context(serving(config.web))
      client = owned.enter_context(ToolClient(server_config(web)))
    return WebEnv(config, templates or load_templates(config.template_dir), client, owned)
  except BaseException:
    owned.close()
    raise
