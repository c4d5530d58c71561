"""The device engine: the host engine's trajectories, with each turn's text work done in-graph.

Per turn, three jitted programs and the sampler's own: `_observe` renders and tokenizes every row's prompt from the
memory and environment state (`device_observation`); the sampler's prefill and decode run on the running rows,
padded exactly as `Sampler.generate` pads them (`_pack`); `_apply` decodes the responses, parses them
(`device_protocol`), tokenizes the op texts (`data.jax_tokenizer`) and builds the op arrays; then the environment's
step and the memory transition run as on the host (`transition.transition`). The only transfer per turn is the
prompts' lengths and the rows still running: the sampler's batch and prompt length follow them (a row's numbers
depend on both on XLA, so the device engine uses the very shapes, and compiled programs, the host engine uses).
After the last turn everything recorded comes to the host at once, and each turn is written down with the host
engine's own functions (`env.observe`, `env.parse`, `rows.record_turn`); the host's reading of every response is
checked against the device's, and a difference is an error, not a different trajectory.

Identical to the host engine with the same `SamplerPolicy` (same prompts, responses, logprobs, ops, answers,
rewards and memory) when `unsupported_reasons` is empty: a tokenizer the in-graph codec reproduces exactly, the
long-context reader (`agent.env`, any chunking, truncation, templates and reward) with a method that reads
responses with the plain protocol (AtomMem and its ablations, RAG, full context; not MemAgent, which rewrites its
ops on the host), a memory without the host storage tier (`memory.spill`), a sampler without stop strings (their
cut is made on decoded text). Each refusal names the setting.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from atommem_jax import op_table
from atommem_jax.agent import device_observation, device_protocol, envs, memory_view, protocol, rewards
from atommem_jax.agent import transition as transition_lib
from atommem_jax.agent.config import RolloutConfig
from atommem_jax.agent.engines import rows as rows_lib
from atommem_jax.agent.envs import long_context
from atommem_jax.agent.envs.base import MemoryView, TurnOps
from atommem_jax.agent.policy import Response, SamplerPolicy
from atommem_jax.agent.trajectory import Trajectory
from atommem_jax.data.jax_tokenizer import codec, segments, tables as tables_lib
from atommem_jax.memory import ops as memory_ops
from atommem_jax.memory import transitions
from atommem_jax.sampling.config import StopReason


def unsupported_reasons(tokenizer: Any, env: Any, sampler: Any = None, memory_config: Any = None) -> list[str]:
  """Why the device engine cannot give the host engine's trajectories for this tokenizer, environment (an
  `envs.base.Environment` or an `AgentConfig`), sampler and memory config, each naming the config key; empty: it
  can."""
  reasons = list(tables_lib.unsupported_reasons(tokenizer))
  name = type(env).__name__
  if not hasattr(env, "user_message") and hasattr(env, "env"):  # an AgentConfig
    # Another environment is refused by name, not built: the web environment connects to its tool server.
    name, env = env.env, envs.make(env) if env.env == "long_context" else env
  if not isinstance(env, long_context.LongContextEnv):
    name = getattr(getattr(env, "config", None), "env", name)
    reasons.append(f"agent.env={name!r}: the environment renders its observations (and runs any tools) on the "
                   f"host; the device engine renders only the long-context reader's")
  elif env.method.rewrite_ops is not None:
    reasons.append(f"agent.method={env.config.method!r} rewrites its ops on the host")
  if memory_config is not None and memory_config.spill != "none":
    reasons.append(f"memory.spill={memory_config.spill!r}: the host storage tier is searched and updated on the "
                   f"host between turns")
  if sampler is not None:
    if getattr(sampler, "tokenizer", None) is None:
      reasons.append("the sampler has no tokenizer")
    if sampler.config.stop_strings:
      reasons.append(f"sampler.stop_strings={sampler.config.stop_strings}: stop strings are cut on decoded text on "
                     f"the host")
    if sampler.config.max_new_tokens < 1:
      reasons.append("the sampler generates no tokens")
  for tag in op_table.tag_tokens():
    ids = tokenizer.encode(tag, add_special_tokens=False)
    if len(ids) != 1:
      reasons.append(f"the tag {tag} is not one token of the tokenizer ({ids})")
      break
  return reasons


@functools.lru_cache(maxsize=4)
def _codec_tables(tokenizer: Any) -> tables_lib.TokenizerTables:
  return jax.device_put(tables_lib.TokenizerTables.from_tokenizer(tokenizer))


# ----------------------------------------------------------------------------------------------------------------
# The turn's programs
# ----------------------------------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("layout",))
def _observe(codec_tables, layout_tables, memory, state, *, layout):
  parts = device_observation.memory_parts(memory)
  text, length = device_observation.render(layout, layout_tables, codec_tables, state, parts)
  return text, length, parts, ~state.done_B


@functools.partial(jax.jit, static_argnames=("width",))
def _split(codec_tables, text, length, starts, *, width):
  """`codec.split` of each row's first `width` code points (rows longer than that are not running)."""
  text, starts = text[:, :width], starts[:, :width]
  return jax.vmap(codec.split, in_axes=(None, 0, 0, 0))(codec_tables, text, jnp.minimum(length, width), starts)


@functools.partial(jax.jit, static_argnames=("layout", "max_words", "max_symbols"))
def _tokenize(codec_tables, words, *, layout, max_words, max_symbols):
  return device_observation.encode_prompts(layout, codec_tables, words, max_words, max_symbols)


def prompts(codec_tables: tables_lib.TokenizerTables, layout: device_observation.Layout,
            layout_tables: device_observation.LayoutTables, memory: Any, state: Any
            ) -> tuple[list[int], device_observation.MemoryParts, np.ndarray, np.ndarray]:
  """The rows still running, what their observations show of the memory, and every row's prompt ids ([rows,
  prompt width], left-aligned) and count, rendered and tokenized in-graph."""
  # Each array the text work runs on is sized to this turn's need, read on the host (a few numbers per turn).
  text, text_length, parts, running = _observe(codec_tables, layout_tables, memory, state, layout=layout)
  text_length_host, running_host = jax.device_get((text_length, running))
  rows = [r for r in range(len(running_host)) if running_host[r]]
  if not rows:
    return rows, parts, np.zeros((0, 0), np.int32), np.zeros((0,), np.int32)
  starts = jnp.zeros(text.shape, bool)
  words, max_words, max_symbols = _split_sized(codec_tables, text, text_length_host, starts, rows, 1024)
  prompt, prompt_length = _tokenize(codec_tables, words, layout=layout, max_words=max_words,
                                    max_symbols=max_symbols)
  prompt_host, lengths = jax.device_get((prompt, prompt_length))
  return rows, parts, prompt_host, lengths


def _split_sized(codec_tables, text, length, starts, rows, smallest: int) -> tuple[codec.Words, int, int]:
  """The words of the running rows' texts, and the `codec.merge` bounds they need (read on the host)."""
  width = min(_bucket(int(np.max(length[rows])), smallest), text.shape[1])
  words = _split(codec_tables, text, length, starts, width=width)
  num_words, longest = jax.device_get((words.num_words, words.longest))
  return words, _bucket(num_words[rows].max(), smallest // 4), _bucket(longest[rows].max(), 16)


def _bucket(size, smallest: int) -> int:
  """Work in-graph is proportional to the arrays' sizes: a power of two at least this turn's need (and
  `smallest`) keeps the compiled variants few."""
  return max(smallest, 1 << max(0, int(size) - 1).bit_length())


def _op_texts(parsed) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One row's op texts (those with one, in slot order) one after the other: code points, count, string starts."""
  size = parsed.text.shape[0]
  lengths = parsed.end - parsed.start
  windows = [(parsed.text[jnp.minimum(parsed.start[o] + jnp.arange(size), size - 1)], lengths[o])
             for o in range(parsed.kind.shape[0])]
  joined, total = segments.concatenate(windows, size, 0)
  offsets = jnp.cumsum(lengths) - lengths
  starts = jnp.zeros((size + 1,), bool).at[jnp.where(lengths > 0, offsets, size)].set(True)[:size]
  return joined, total, starts


def _generate(sampler: Any, prompts: list[np.ndarray], rows: list[int], *, seed: int) -> tuple[Any, np.ndarray]:
  """`Sampler.generate` for these rows' prompts without leaving the device: the same waves, padded by the sampler's
  own code from host arrays, so the host engine's compiled programs run. Also each batch row's row (-1: padding)."""
  wave, batch_buckets = sampler.waves(len(rows))
  results, positions = [], []
  for i in range(0, len(rows), wave):
    padded, rows_B = sampler.pad(prompts[i:i + wave], rows[i:i + wave], batch_buckets=batch_buckets)
    results.append(sampler.generate_padded(padded, rows_B, seed=seed))
    positions.append(np.where(np.arange(len(rows_B)) < padded.num_prompts, rows_B, -1).astype(np.int32))
  result = results[0] if len(results) == 1 else jax.tree.map(lambda *x: jnp.concatenate(x), *results)
  return result, np.concatenate(positions)


@functools.partial(jax.jit, static_argnames=("num_rows", "pad_id"))
def _responses(codec_tables, result, rows_B, *, num_rows, pad_id):
  """The decoded batch back on its rows (`rows_B`: each batch row's row, -1 for padding), and each response's
  text (without a final EOS) as code points."""
  position = jnp.full((num_rows + 1,), -1, jnp.int32).at[jnp.where(rows_B >= 0, rows_B, num_rows)].set(
      jnp.arange(rows_B.shape[0], dtype=jnp.int32))[:num_rows]
  running = position >= 0
  take = lambda x, fill: jnp.where(running.reshape((-1,) + (1,) * (x.ndim - 1)), x[jnp.maximum(position, 0)], fill)
  record = dict(tokens=take(result.tokens_RxN, pad_id), logprobs=take(result.logprobs_RxN, 0.0),
                length=take(result.lengths_R, 0), stop=take(result.stop_reason_R, 0))
  text_length = record["length"] - (record["stop"] == StopReason.EOS)
  code, code_length = jax.vmap(codec.decode, in_axes=(None, 0, 0))(codec_tables, record["tokens"], text_length)
  return code, code_length, running, record


@functools.partial(jax.jit, static_argnames=("width", "disabled", "max_target", "length"))
def _read(codec_tables, code, code_length, running, num_shown_R, *, width, disabled, max_target, length):
  """Each response (its first `length` code points: all of it) parsed, and its op texts lined up to tokenize."""
  parsed = device_protocol.parse(codec_tables, code[:, :length], code_length, num_shown_R, width=width,
                                 disabled_kinds=disabled, max_target=max_target)
  in_use = running[:, None] & (jnp.arange(width)[None, :] < parsed.count[:, None])
  kind = jnp.where(in_use, parsed.kind, op_table.INVALID)
  valid = in_use & parsed.valid
  texts = jax.vmap(_op_texts)(dataclasses.replace(parsed, start=jnp.where(valid, parsed.start, 0),
                                                  end=jnp.where(valid, parsed.end, 0)))
  return texts, dict(kind=kind, valid=valid, target=jnp.where(valid, parsed.target, 0),
                     count=jnp.where(running, parsed.count, 0))


@functools.partial(jax.jit, static_argnames=("max_words", "max_symbols", "op_width", "pad_id"))
def _ops(codec_tables, words, record, *, max_words, max_symbols, op_width, pad_id):
  """The memory's `OpBatch` and the step's `TurnOps`: op texts merged into ids, cut at the op width W."""
  kind, valid = record["kind"], record["valid"]
  slots = kind.shape[1]

  def tokens_of(words, has_text):
    tokens, count, string = codec.merge(codec_tables, words, max_words, max_symbols)
    slot_of_string, _ = segments.compact(jnp.arange(slots), has_text, slots, slots)
    real = jnp.arange(tokens.shape[0]) < count
    slot = jnp.where(real, slot_of_string[jnp.clip(string, 0, slots - 1)], slots)
    per_slot = jnp.sum(slot[None, :] == jnp.arange(slots)[:, None], axis=1)
    first = jnp.cumsum(per_slot) - per_slot  # tokens come in slot order
    index = jnp.arange(tokens.shape[0]) - first[jnp.minimum(slot, slots - 1)]
    out = jnp.full((slots + 1, op_width), pad_id, jnp.int32).at[slot, jnp.where(index < op_width, index, op_width)
                                                                ].set(tokens, mode="drop")[:slots]
    return out, jnp.minimum(per_slot, op_width).astype(jnp.int32)

  has_text = valid & jnp.asarray([False] + [spec.body != "target" for spec in op_table.OPS])[kind]
  op_tokens, op_lengths = jax.vmap(tokens_of)(words, has_text)
  in_use = jnp.arange(slots)[None, :] < record["count"][:, None]
  ops = memory_ops.OpBatch(
      type_BxO=jnp.where(in_use, jnp.asarray(op_table.MEMORY_TYPE_K)[kind], memory_ops.NOOP),
      target_BxO=record["target"], tokens_BxOxW=op_tokens, length_BxO=op_lengths,
      valid_BxO=valid | ~in_use)  # padding slots are valid no-ops, as `memory_ops.empty_ops` makes them
  turn = TurnOps(kind_BxO=kind, valid_BxO=valid, acted_B=jnp.zeros((kind.shape[0],), bool))
  return ops, turn, op_tokens, op_lengths


# ----------------------------------------------------------------------------------------------------------------
# The engine
# ----------------------------------------------------------------------------------------------------------------

def rollout(episodes: Sequence[Any], policy: SamplerPolicy, *, tokenizer: Any, embed_fn: transitions.EmbedFn,
            config: RolloutConfig, env: Any = None, reward_fn: rewards.RewardFn | None = None,
            templates: protocol.Templates | None = None, max_turns: int | None = None,
            verify_prompts: bool = False) -> list[Trajectory]:
  """`engines.host.rollout` for a `SamplerPolicy`, with the turns' text work on device (module docstring).

  Raises ValueError naming the cause when `unsupported_reasons` is not empty. `verify_prompts` also tokenizes every
  prompt on the host and compares (responses, ops and op texts are always compared).
  """
  env = env if env is not None else envs.make(config.agent, templates)
  if not isinstance(policy, SamplerPolicy):
    raise ValueError(f"the device engine samples from the model (a SamplerPolicy), got {type(policy).__name__}")
  sampler = policy.sampler
  reward_fn = reward_fn if reward_fn is not None else rewards.for_agent(config.agent)
  reasons = unsupported_reasons(tokenizer, env, sampler, config.memory)
  if reasons:
    raise ValueError("the device engine cannot reproduce the host engine here: " + "; ".join(reasons))
  codec_tables = _codec_tables(tokenizer)
  memory_config = config.memory
  start = rows_lib.prepare(episodes, env, tokenizer, embed_fn, config)
  memory, state = start.memory, start.state
  num_rows = len(start.episodes)
  episode_index = [r // config.num_samples for r in range(num_rows)]
  layout, layout_tables = device_observation.build(env, list(episodes), start.episode_contexts, episode_index,
                                                   tokenizer, memory_config.top_k, max(sampler.config.prompt_buckets))
  layout_tables = jax.device_put(layout_tables)
  params = env.params()
  read = functools.partial(_read, width=memory_config.max_ops_per_turn, disabled=tuple(env.disabled_kinds),
                           max_target=memory_config.top_k)
  turns = []
  turn_limit = env.max_turns if max_turns is None else min(env.max_turns, max_turns)
  for turn_index in range(turn_limit):
    rows, parts, prompt_host, lengths = prompts(codec_tables, layout, layout_tables, memory, state)
    if not rows:
      break
    result, positions = _generate(sampler, [prompt_host[r, :lengths[r]] for r in rows], rows,
                                  seed=policy.seed + turn_index)
    code, code_length, running_now, record = _responses(codec_tables, result, positions, num_rows=num_rows,
                                                         pad_id=memory_config.pad_id)
    width = min(_bucket(int(jax.device_get(code_length).max()), 512), code.shape[1])
    (op_text, op_text_length, op_starts), parsed = read(codec_tables, code, code_length, running_now,
                                                        parts.num_shown, length=width)
    record.update(parsed)
    op_words, max_words, max_symbols = _split_sized(codec_tables, op_text, jax.device_get(op_text_length),
                                                    op_starts, list(range(num_rows)), 64)
    ops, turn_ops, record["op_tokens"], record["op_lengths"] = _ops(
        codec_tables, op_words, record, max_words=max_words, max_symbols=max_symbols,
        op_width=memory_config.op_tokens, pad_id=memory_config.pad_id)
    before = state
    memory, state, step = transition_lib.transition(memory, state, ops, turn_ops, params, step=env.step,
                                                    memory_config=memory_config, embed_fn=embed_fn)
    turns.append(dict(rows=rows, state=before, parts=parts, prompt=prompt_host, prompt_length=lengths,
                      accepted=step.accepted_BxO, answered=step.answered_question_BxO,
                      storage=memory.valid_BxM.sum(1), **record))
  turns, memory_host, state_host = jax.device_get((turns, memory, state))
  trajectories = start.trajectories
  for turn_index, turn in enumerate(turns):
    _record(turn_index, turn, env, start, trajectories, tokenizer, memory_config.max_ops_per_turn, verify_prompts)
  return rows_lib.finish(trajectories, env.done(state_host), memory_host, tokenizer, reward_fn)


def _text(tokenizer: Any, ids: np.ndarray, length: int) -> str:
  return tokenizer.decode(ids[:int(length)].tolist())


def _record(turn_index: int, turn: dict, env: Any, start: rows_lib.Rows, trajectories: list[Trajectory],
            tokenizer: Any, width: int, verify_prompts: bool) -> None:
  """One turn of every running row, written down with the host engine's functions."""
  parts = turn["parts"]
  for r in turn["rows"]:
    view = MemoryView(scratchpad=_text(tokenizer, parts.scratchpad[r], parts.scratchpad_length[r]),
                      query=_text(tokenizer, parts.query[r], parts.query_length[r]),
                      entries=tuple(_text(tokenizer, parts.entries[r, k], parts.entry_lengths[r, k])
                                    for k in range(int(parts.num_shown[r]))))
    observation = env.observe(start.episodes[r], start.contexts[r], turn["state"], r, view, None)
    prompt = protocol.chat_prompt(tokenizer, observation.system, observation.user, tools=observation.tools)
    prompt_ids = turn["prompt"][r, :int(turn["prompt_length"][r])].tolist()
    if verify_prompts and tokenizer.encode(prompt, add_special_tokens=False) != prompt_ids:
      raise RuntimeError(f"device engine: row {r} turn {turn_index}: the prompt ids differ from the host's "
                         f"tokenization of {prompt!r}")
    n = int(turn["length"][r])
    ids = turn["tokens"][r, :n].tolist()
    text_ids = ids[:-1] if n and turn["stop"][r] == StopReason.EOS else ids
    response = Response(text=tokenizer.decode(text_ids, skip_special_tokens=False), ids=ids,
                        logprobs=turn["logprobs"][r, :n].astype(float).tolist())
    ops = transition_lib.fit_width(list(env.parse(response.text, view, turn["state"], r).ops), width)
    _check_ops(turn_index, r, response.text, ops, turn, tokenizer)
    rows_lib.record_turn(trajectories[r], step=turn_index, observation=observation, prompt=prompt,
                         prompt_ids=prompt_ids, retrieved=view.entries, response=response, ops=ops,
                         accepted_O=turn["accepted"][r], answered_O=turn["answered"][r],
                         storage_size=int(turn["storage"][r]))


def _check_ops(turn_index: int, row: int, response: str, ops: Sequence[protocol.Op], turn: dict, tokenizer: Any
               ) -> None:
  """The host's reading of the response must be the device's: the same parts, and the same ids for each op text
  the memory takes."""
  count = int(turn["count"][row])
  device = [(int(turn["kind"][row, o]), bool(turn["valid"][row, o]), int(turn["target"][row, o]))
            for o in range(count)]
  host = [(op.kind, op.valid, op.target if op.valid else 0) for op in ops]
  mismatch = device != host
  for o, op in enumerate(ops):
    if not mismatch and op.valid and op_table.BY_KIND[op.kind].reaches_memory and op.text:
      expected = tokenizer.encode(op.text, add_special_tokens=False)[:turn["op_tokens"].shape[2]]
      mismatch = turn["op_tokens"][row, o, :int(turn["op_lengths"][row, o])].tolist() != expected
  if mismatch:
    raise RuntimeError(f"device engine: row {row} turn {turn_index}: the in-graph parse {device} of the response "
                       f"differs from the host's {host} (or an op text's ids do); the response: {response!r}")
