"""The AtomMem rollout on token ids with no host round trip per turn: one `jax.lax.while_loop` over turns.

Each turn, in-graph: the observation is assembled from token segments (`token_protocol`), the model samples the
response (the sampler's own pure prefill + decode), the response is parsed on its ids, and the environment step and
memory transition of `rollout.transition` run. `run_host_loop` executes the very same per-turn functions one at a
time with the state brought to the host between them (what a host-driven loop does), so the two must agree token
for token for the same seed; `run_device_loop` is the fused version.

Scope: the AtomMem method and its ablations with a model policy. Rows are episode-major (row `b * G + g`), each
sampled with its row index as the sampler's row id and `seed + turn` as the turn's key.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from atommem_jax.agent import env as env_lib
from atommem_jax.agent import protocol, rollout, token_protocol, views
from atommem_jax.agent.config import AgentConfig
from atommem_jax.memory import ops as memory_ops
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.sampling import decode as decode_lib
from atommem_jax.sampling import stop as stop_lib
from atommem_jax.sampling.config import SamplerConfig

_PLACEHOLDER_RE = re.compile(r"\$(?:\{(\w+)\}|(\w+)|(\$))")  # string.Template: ${name}, $name, $$
_MEMORY_TYPE_K = np.zeros(len(protocol.KIND_NAMES), np.int32)
for _kind, _type in rollout._MEMORY_TYPE.items():  # pylint: disable=protected-access
  _MEMORY_TYPE_K[_kind] = _type


def _ids(tokenizer: Any, text: str) -> list[int]:
  return tokenizer.encode(text, add_special_tokens=False)


def _stack(lists: Sequence[Sequence[int]], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  width = max(1, width or max((len(x) for x in lists), default=1))
  out = np.zeros((len(lists), width), np.int32)
  for i, ids in enumerate(lists):
    out[i, :len(ids)] = ids[:width]
  return out, np.array([min(len(x), width) for x in lists], np.int32)


def _template_items(text: str, tokenizer: Any) -> list[tuple[str, Any]]:
  """A template as ("const", ids) and ("field", name) items."""
  items, position = [], 0
  constant = ""
  for match in _PLACEHOLDER_RE.finditer(text):
    constant += text[position:match.start()]
    position = match.end()
    if match.group(3):  # "$$" is a literal "$"
      constant += "$"
      continue
    items += [("const", _ids(tokenizer, constant)), ("field", match.group(1) or match.group(2))]
    constant = ""
  items.append(("const", _ids(tokenizer, constant + text[position:])))
  return [item for item in items if item[0] == "field" or item[1]]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RolloutRecord:
  """Every turn of every row, [T, R, ...] arrays; `active_TxR` marks turns a row actually took."""

  active_TxR: jax.Array
  chunk_index_TxR: jax.Array
  answer_phase_TxR: jax.Array
  prompt_TxRxP: jax.Array
  response_TxRxN: jax.Array
  logprobs_TxRxN: jax.Array
  length_TxR: jax.Array
  op_count_TxR: jax.Array
  op_kind_TxRxO: jax.Array
  op_valid_TxRxO: jax.Array
  op_start_TxRxO: jax.Array
  op_end_TxRxO: jax.Array
  answered_TxRxO: jax.Array
  storage_size_TxR: jax.Array


class TokenRollout:
  """The token-space rollout of `episodes` x `num_samples` with a model; build once, run either loop."""

  def __init__(self, episodes: Sequence[rollout.Episode], model: nnx.Module, tokenizer: Any, embed_fn: Any, *,
               agent: AgentConfig, memory: MemoryConfig, sampler: SamplerConfig, num_samples: int,
               templates: protocol.Templates | None = None):
    if agent.method != "atommem":
      raise ValueError(f"the device loop runs AtomMem and its ablations, not method={agent.method!r}")
    templates = templates or protocol.Templates.load(agent.template_dir or None)
    self.agent, self.memory_config, self.sampler_config = agent, memory, sampler
    self.tokenizer, self.embed_fn, self.num_samples = tokenizer, embed_fn, num_samples
    self.episodes = list(episodes)
    self.graphdef, _ = nnx.split(model)
    self.tables = token_protocol.vocab_tables(tokenizer)
    rows = [self.episodes[r // num_samples] for r in range(len(self.episodes) * num_samples)]
    self.rows = rows
    docs = [views.EpisodeDocument.build(ep, tokenizer, embed_fn, agent, memory.top_k) for ep in self.episodes]
    chunk_ids = [[_ids(tokenizer, c) for c in d.chunks] for d in docs]
    self.num_chunks = [len(chunk_ids[r // num_samples]) for r in range(len(rows))]
    max_q, max_c = max(len(ep.questions) for ep in rows), max(1, max(self.num_chunks))

    def per_question(render):
      lists = [[render(ep, min(q, len(ep.questions) - 1)) for q in range(max_q)] for ep in rows]
      width = max(len(x) for row in lists for x in row)
      stacked = [_stack(row, width) for row in lists]
      return np.stack([s[0] for s in stacked]), np.stack([s[1] for s in stacked])

    chunk_width = max([len(c) for doc in chunk_ids for c in doc] + [1])
    chunks = [_stack([c for c in chunk_ids[r // num_samples]] + [[]] * (max_c - self.num_chunks[r]), chunk_width)
              for r in range(len(rows))]
    chat = protocol.chat_prompt(tokenizer, "\x00", "\x01")
    pre, rest = chat.split("\x00")
    mid, post = rest.split("\x01")
    prefixes = [_ids(tokenizer, f"Memory {k}: ") for k in range(1, memory.top_k + 1)]
    self.data = {
        "questions": per_question(lambda ep, q: _ids(tokenizer, protocol.render_questions(ep.questions, q))),
        "question": per_question(lambda ep, q: _ids(tokenizer, ep.questions[q])),
        "chunk": (np.stack([c[0] for c in chunks]), np.stack([c[1] for c in chunks])),
        "chunk_number": _stack([_ids(tokenizer, str(i + 1)) for i in range(max_c)]),
        "num_chunks": _stack([_ids(tokenizer, str(n)) for n in self.num_chunks]),
        "tables": self.tables,
    }
    self.consts = {"empty": _ids(tokenizer, views.EMPTY), "disabled": _ids(tokenizer, views.DISABLED),
                   "no_memory": _ids(tokenizer, protocol.NO_MEMORY), "newline": _ids(tokenizer, "\n"),
                   "pre": _ids(tokenizer, pre), "system": _ids(tokenizer, templates.render("system")),
                   "mid": _ids(tokenizer, mid), "post": _ids(tokenizer, post), "memory_prefix": prefixes}
    self.templates = {name: _template_items(templates.texts[name], tokenizer) for name in ("read", "answer")}
    self.width = max(self._static_width(name) for name in self.templates)
    stop_table = stop_lib.stop_sequences_table(sampler.stop_strings, lambda t: _ids(tokenizer, t))
    self.stop_table_SxW = jnp.asarray(stop_table)
    self.eos_ids_E = jnp.asarray(sampler.eos_ids or (-1,), jnp.int32)
    self.params_env = env_lib.EnvParams.from_config(agent)
    self._turn_functions = (jax.jit(self._render), jax.jit(self._generate), jax.jit(self._apply))
    self._device_loop = jax.jit(self._loop)

  # -------------------------------------------------------------------------------------------- observation
  def _static_width(self, name: str) -> int:
    widths = {"questions": self.data["questions"][0].shape[2], "question": self.data["question"][0].shape[2],
              "chunk": self.data["chunk"][0].shape[2], "chunk_number": self.data["chunk_number"][0].shape[1],
              "num_chunks": self.data["num_chunks"][0].shape[1],
              "scratchpad": self.memory_config.scratchpad_tokens + len(self.consts["empty"])
                            + len(self.consts["disabled"]),
              "query": self.memory_config.query_tokens + len(self.consts["empty"]) + len(self.consts["disabled"]),
              "memories": sum(len(p) + self.memory_config.entry_tokens + 1 for p in self.consts["memory_prefix"])
                          + len(self.consts["no_memory"]) + len(self.consts["disabled"])}
    total = sum(len(self.consts[k]) for k in ("pre", "system", "mid", "post"))
    for kind, value in self.templates[name]:
      total += len(value) if kind == "const" else widths[value]
    return total

  def _segments(self, name, data, memory, env):
    rows = env.done_B.shape[0]
    const = lambda ids: (jnp.broadcast_to(jnp.asarray(ids, jnp.int32), (rows, len(ids))),
                         jnp.full((rows,), len(ids), jnp.int32))
    when = lambda segment, keep_R: (segment[0], jnp.where(keep_R, segment[1], 0))
    row_index = jnp.arange(rows)
    question = jnp.minimum(env.question_index_B, data["questions"][1].shape[1] - 1)
    chunk = jnp.clip(env.chunk_index_B, 0, data["chunk"][1].shape[1] - 1)

    def text_or_marker(tokens, length, enabled):
      return [when((tokens, length), enabled), when(const(self.consts["empty"]), enabled & (length == 0)),
              when(const(self.consts["disabled"]), jnp.full((rows,), not enabled))]

    def memories():
      if not self.agent.use_storage:
        return [const(self.consts["disabled"])]
      shown_RxK = memory.shown_slots_BxK >= 0
      out = [when(const(self.consts["no_memory"]), ~shown_RxK[:, 0])]
      for k in range(shown_RxK.shape[1]):
        slot_R = jnp.maximum(memory.shown_slots_BxK[:, k], 0)
        out.append(when(const(self.consts["memory_prefix"][k]), shown_RxK[:, k]))
        out.append(when((memory.entry_tokens_BxMxE[row_index, slot_R], memory.entry_lengths_BxM[row_index, slot_R]),
                        shown_RxK[:, k]))
        if k + 1 < shown_RxK.shape[1]:
          out.append(when(const(self.consts["newline"]), shown_RxK[:, k + 1]))
      return out

    fields = {
        "questions": lambda: [(data["questions"][0][row_index, question], data["questions"][1][row_index, question])],
        "question": lambda: [(data["question"][0][row_index, question], data["question"][1][row_index, question])],
        "chunk": lambda: [(data["chunk"][0][row_index, chunk], data["chunk"][1][row_index, chunk])],
        "chunk_number": lambda: [(data["chunk_number"][0][chunk], data["chunk_number"][1][chunk])],
        "num_chunks": lambda: [data["num_chunks"]],
        "scratchpad": lambda: text_or_marker(memory.scratchpad_tokens_BxS, memory.scratchpad_length_B,
                                             self.agent.use_scratchpad),
        "query": lambda: text_or_marker(memory.query_tokens_BxQ, memory.query_length_B, self.agent.use_storage),
        "memories": memories,
    }
    segments = [const(self.consts["pre"]), const(self.consts["system"]), const(self.consts["mid"])]
    for kind, value in self.templates[name]:
      if kind == "const":
        segments.append(const(value))
      elif value in fields:
        segments += fields[value]()
      else:
        raise ValueError(f"template {name}: placeholder ${{{value}}} has no token-space renderer")
    return segments + [const(self.consts["post"])]

  def _compact(self, segments):
    """Segments -> left-padded [R, P] ids and mask: real ids end at the last column."""
    lengths_RxS = jnp.stack([length for _, length in segments], axis=1)
    total_R = lengths_RxS.sum(1)
    offsets_RxS = self.width - total_R[:, None] + jnp.cumsum(lengths_RxS, axis=1) - lengths_RxS
    out = jnp.full((total_R.shape[0], self.width), self.sampler_config.pad_id, jnp.int32)
    rows = jnp.arange(total_R.shape[0])[:, None]
    for s, (tokens_RxL, length_R) in enumerate(segments):
      columns = jnp.arange(tokens_RxL.shape[1])
      positions = jnp.where(columns[None, :] < length_R[:, None], offsets_RxS[:, s:s + 1] + columns[None, :],
                            self.width)
      out = out.at[rows, positions].set(tokens_RxL.astype(jnp.int32), mode="drop")
    return out, jnp.arange(self.width)[None, :] >= (self.width - total_R)[:, None]

  def _render(self, data, memory, env):
    read, read_mask = self._compact(self._segments("read", data, memory, env))
    answer, answer_mask = self._compact(self._segments("answer", data, memory, env))
    phase = env.answer_phase_B[:, None]
    return jnp.where(phase, answer, read), jnp.where(phase, answer_mask, read_mask)

  # -------------------------------------------------------------------------------------------- generation
  def _generate(self, params, prompts_RxP, mask_RxP, active_R, seed):
    cache = decode_lib.prefill(self.graphdef, params, prompts_RxP, mask_RxP, config=self.sampler_config,
                               num_samples=1)
    rows = prompts_RxP.shape[0]
    result, _ = decode_lib.decode(self.graphdef, params, cache, prompts_RxP[:, -1], mask_RxP.sum(1).astype(jnp.int32),
                                  active_R, jnp.arange(rows, dtype=jnp.int32), jax.random.key(seed), self.eos_ids_E,
                                  self.stop_table_SxW, config=self.sampler_config, num_samples=1)
    return result.tokens_RxN, result.logprobs_RxN, result.lengths_R

  # -------------------------------------------------------------------------------------------- parse + apply
  def _apply(self, data, memory, env, tokens_RxN, lengths_R):
    num_shown_R = (memory.shown_slots_BxK >= 0).sum(1)
    ops = token_protocol.parse_tokens(tokens_RxN, lengths_R, num_shown_R, data["tables"],
                                      self.memory_config.max_ops_per_turn, self.agent.disabled_kinds)
    op_tokens, op_lengths = token_protocol.op_text_tokens(tokens_RxN, ops, self.memory_config.op_tokens,
                                                          self.memory_config.pad_id)
    batch = memory_ops.OpBatch(type_BxO=jnp.asarray(_MEMORY_TYPE_K)[ops.kind_BxO], target_BxO=ops.target_BxO,
                               tokens_BxOxW=op_tokens, length_BxO=op_lengths, valid_BxO=ops.valid_BxO)
    memory, env, result = rollout.transition(memory, env, batch, ops.kind_BxO, ops.valid_BxO,
                                             params=self.params_env, memory_config=self.memory_config,
                                             embed_fn=self.embed_fn)
    return memory, env, ops, result

  # -------------------------------------------------------------------------------------------- loops
  def initial_state(self):
    memory = rollout._init_memory(self.memory_config, len(self.rows))  # pylint: disable=protected-access
    memory = views.set_initial_query(memory, [ep.questions[0] for ep in self.rows], self.tokenizer, self.embed_fn,
                                     self.memory_config)
    env = env_lib.init_env(self.num_chunks, [len(ep.questions) for ep in self.rows])
    return memory, env

  def _empty_record(self) -> RolloutRecord:
    t, r, o = self.agent.max_steps, len(self.rows), self.memory_config.max_ops_per_turn
    n, p = self.sampler_config.max_new_tokens, self.width
    i32 = lambda *shape: jnp.zeros(shape, jnp.int32)
    return RolloutRecord(
        active_TxR=jnp.zeros((t, r), bool), chunk_index_TxR=i32(t, r), answer_phase_TxR=jnp.zeros((t, r), bool),
        prompt_TxRxP=i32(t, r, p), response_TxRxN=i32(t, r, n), logprobs_TxRxN=jnp.zeros((t, r, n), jnp.float32),
        length_TxR=i32(t, r), op_count_TxR=i32(t, r), op_kind_TxRxO=i32(t, r, o),
        op_valid_TxRxO=jnp.zeros((t, r, o), bool), op_start_TxRxO=i32(t, r, o), op_end_TxRxO=i32(t, r, o),
        answered_TxRxO=i32(t, r, o), storage_size_TxR=i32(t, r))

  @staticmethod
  def _turn_values(env_before, prompts, tokens, logprobs, lengths, ops, result, memory) -> dict[str, Any]:
    """One turn's [R, ...] entries of the record (works on device arrays and on host copies alike)."""
    return dict(active_TxR=~env_before.done_B, chunk_index_TxR=env_before.chunk_index_B,
                answer_phase_TxR=env_before.answer_phase_B, prompt_TxRxP=prompts, response_TxRxN=tokens,
                logprobs_TxRxN=logprobs, length_TxR=lengths, op_count_TxR=ops.count_B, op_kind_TxRxO=ops.kind_BxO,
                op_valid_TxRxO=ops.valid_BxO & result.accepted_BxO, op_start_TxRxO=ops.start_BxO,
                op_end_TxRxO=ops.end_BxO, answered_TxRxO=result.answered_question_BxO,
                storage_size_TxR=memory.valid_BxM.sum(1))

  def _loop(self, params, data, memory, env, seed):
    def body(carry):
      memory, env, turn, record = carry
      prompts, mask = self._render(data, memory, env)
      tokens, logprobs, lengths = self._generate(params, prompts, mask, ~env.done_B, seed + turn)
      new_memory, new_env, ops, result = self._apply(data, memory, env, tokens, lengths)
      values = self._turn_values(env, prompts, tokens, logprobs, lengths, ops, result, new_memory)
      record = RolloutRecord(**{k: getattr(record, k).at[turn].set(v.astype(getattr(record, k).dtype))
                                for k, v in values.items()})
      return new_memory, new_env, turn + 1, record

    cond = lambda carry: (carry[2] < self.agent.max_steps) & ~jnp.all(carry[1].done_B)
    memory, env, _, record = jax.lax.while_loop(cond, body, (memory, env, jnp.int32(0), self._empty_record()))
    return memory, env, record

  def run_device_loop(self, params, seed: int = 0):
    memory, env = self.initial_state()
    return jax.device_get(self._device_loop(params, self.data, memory, env, jnp.int32(seed)))

  def run_host_loop(self, params, seed: int = 0):
    """The same turn functions, with every intermediate brought to the host between them."""
    render, generate, apply = self._turn_functions
    memory, env = self.initial_state()
    record = jax.device_get(self._empty_record())
    fields = {f.name: np.array(getattr(record, f.name)) for f in dataclasses.fields(RolloutRecord)}
    for turn in range(self.agent.max_steps):
      env_host = jax.device_get(env)
      if np.all(env_host.done_B):
        break
      prompts, mask = jax.device_get(render(self.data, memory, env))
      tokens, logprobs, lengths = jax.device_get(generate(params, prompts, mask, ~env_host.done_B, seed + turn))
      memory, env, ops, result = jax.device_get(apply(self.data, memory, env, tokens, lengths))
      for name, value in self._turn_values(env_host, prompts, tokens, logprobs, lengths, ops, result,
                                           memory).items():
        fields[name][turn] = value
    return memory, env, RolloutRecord(**fields)

  # -------------------------------------------------------------------------------------------- results
  def trajectories(self, memory, env, record: RolloutRecord) -> list[rollout.Trajectory]:
    """Host-side `rollout.Trajectory`s (observation = the decoded prompt, which is token-assembled here)."""
    decode = lambda ids: self.tokenizer.decode(list(ids))
    out = []
    for r, episode in enumerate(self.rows):
      answers: list[str | None] = [None] * len(episode.questions)
      turns = []
      for t in np.flatnonzero(record.active_TxR[:, r]):
        n = int(record.length_TxR[t, r])
        response_ids = record.response_TxRxN[t, r, :n].tolist()
        prompt_ids = record.prompt_TxRxP[t, r][record.prompt_TxRxP[t, r] != self.sampler_config.pad_id].tolist()
        ops = []
        for o in range(int(record.op_count_TxR[t, r])):
          kind, valid = int(record.op_kind_TxRxO[t, r, o]), bool(record.op_valid_TxRxO[t, r, o])
          text = decode(record.response_TxRxN[t, r, record.op_start_TxRxO[t, r, o]:record.op_end_TxRxO[t, r, o]])
          ops.append({"type": protocol.KIND_NAMES[kind], "text": text.strip() if valid else "", "target": 0,
                      "valid": valid, "reason": "" if valid else "invalid or refused"})
          if record.answered_TxRxO[t, r, o] >= 0:
            answers[int(record.answered_TxRxO[t, r, o])] = text.strip()
        counts = {name: sum(op["valid"] and op["type"] == name for op in ops) for name in protocol.KIND_NAMES[1:]}
        prompt = decode(prompt_ids)
        turns.append(rollout.Turn(
            step=int(t), phase="answer" if record.answer_phase_TxR[t, r] else "read",
            chunk_index=int(record.chunk_index_TxR[t, r]), question_index=-1, observation=prompt, prompt=prompt,
            prompt_ids=prompt_ids, retrieved=[], response=decode(response_ids), response_ids=response_ids,
            response_logprobs=record.logprobs_TxRxN[t, r, :n].tolist(), ops=ops, op_counts=counts,
            invalid_ops=sum(not op["valid"] for op in ops), storage_size=int(record.storage_size_TxR[t, r])))
      scratchpad, query = views.scratchpad_and_query(memory, r, self.tokenizer)
      out.append(rollout.Trajectory(
          episode_id=episode.id, sample=r % self.num_samples, questions=list(episode.questions),
          gold_answers=[list(a) for a in episode.answers], answers=answers,
          reward=rollout.episode_reward(answers, episode.answers), done=bool(env.done_B[r]), turns=turns,
          scratchpad=scratchpad, query=query, storage=views.storage_in_creation_order(memory, r, self.tokenizer)))
    return out
