"""The long-context reader's prompt, rendered and tokenized in-graph from the memory state: the same ids as
`tokenizer.encode(protocol.chat_prompt(system, env.observe(...).user))` on the host.

What the host renders is learned from the host itself, once per rollout (`build`): the environment's
`user_message` is called for every (phase, question, chunk) of every episode with two probe memories, one holding a
sentinel in each part and one empty, and with a few values of the reads-in-a-row counter. A field that shows the
counter (as a decimal number) is rendered from the state; a field equal for both memories is static (the question
block, the chunk, the numbers); a field equal to the scratchpad's (or query's) sentinel shows that part's text, or what the empty probe
shows when the part is empty; a field holding the entry sentinels in order shows the retrieved entries with the
text found around them. Anything else is refused. The template's own text comes from rendering it with a sentinel
per field.

In-graph (`render`), one row: the static fields are sliced from a pool of code points, the memory parts are decoded
from their token ids (`codec.decode`), everything is concatenated into the user message, and the piece of the chat
prompt around it (after the last added token before it, up to the first one after it) is encoded
(`codec.encode`); the chat prompt's fixed head and tail are tokenized once on the host (added tokens split a text,
so the pieces tokenize independently).
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from atommem_jax.agent import protocol
from atommem_jax.agent.envs import long_context
from atommem_jax.agent.envs.base import MemoryView
from atommem_jax.data.jax_tokenizer import codec, segments
from atommem_jax.data.jax_tokenizer.tables import TokenizerTables

_SCRATCHPAD, _QUERY = 0, 1  # `Item.part` of a text field
_SENTINEL_BASE = 0xF0000  # Unicode plane 15 (private use): in no template or document


def _sentinel(index: int) -> str:
  return chr(_SENTINEL_BASE + index)


_PROBE_SCRATCHPAD, _PROBE_QUERY, _FIRST_ENTRY = _sentinel(0), _sentinel(1), 2
_FIELD_BASE = 1024  # sentinels of template fields


def _codes(text: str) -> tuple[int, ...]:
  return tuple(ord(c) for c in text)


def _bucket(size: int) -> int:
  """Capacities depend on the episodes; powers of two keep the compiled shapes few."""
  return 1 << max(0, size - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class Item:
  """One piece of a template: constant text; a static field (`slot`); a memory part's text (`part`) or, when that
  is empty, `codes`; the shown entries, entry k after `prefixes[k]`, or `codes` when none is shown."""

  kind: str  # "const" | "static" | "text" | "entries" | "counter" (the reads in a row)
  codes: tuple[int, ...] = ()
  slot: int = -1
  part: int = -1
  prefixes: tuple[tuple[int, ...], ...] = ()


@dataclasses.dataclass(frozen=True)
class Layout:
  """The static side of the rendering (hashable: a jit static argument)."""

  templates: tuple[tuple[Item, ...], ...]
  slot_capacity: tuple[int, ...]
  head: tuple[int, ...]  # code points of the chat prompt between its last added token and the user message
  tail: tuple[int, ...]  # ... and between the user message and the next added token
  prefix_ids: tuple[int, ...]  # the chat prompt's ids up to `head`
  suffix_ids: tuple[int, ...]  # ... from after `tail`
  num_questions: int  # variant grid: (read, question, chunk) then (answer, question)
  num_chunks: int
  prompt_width: int  # the ids array width (the sampler's largest prompt bucket)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayoutTables:
  """The per-episode side: static field values as (start, length) into one pool of code points."""

  pool: jax.Array  # int32 [P]
  slot_start: jax.Array  # int32 [episodes, variants, slots]
  slot_length: jax.Array
  template: jax.Array  # int32 [episodes, variants]: which of `Layout.templates`
  row_episode: jax.Array  # int32 [rows]


def _probe_views(top_k: int) -> tuple[MemoryView, MemoryView]:
  full = MemoryView(scratchpad=_PROBE_SCRATCHPAD, query=_PROBE_QUERY,
                    entries=tuple(_sentinel(_FIRST_ENTRY + k) for k in range(top_k)))
  return full, MemoryView(scratchpad="", query="", entries=())


def _entries_item(value: str, empty: str, top_k: int) -> Item | None:
  """The entries field, if `value` shows the K probe entries in order (with any text around each)."""
  parts = re.split("|".join(_sentinel(_FIRST_ENTRY + k) for k in range(top_k)), value)
  found = re.findall("|".join(_sentinel(_FIRST_ENTRY + k) for k in range(top_k)), value)
  if top_k == 0 or found != [_sentinel(_FIRST_ENTRY + k) for k in range(top_k)] or parts[-1]:
    return None
  return Item("entries", codes=_codes(empty), prefixes=tuple(_codes(p) for p in parts[:-1]))


def _check_entries(env: Any, episode: Any, context: Any, state: Any, field: str, item: Item, top_k: int) -> None:
  """Fewer shown entries must render as the first ones of the K-entry probe."""
  for count in range(1, top_k):
    view = MemoryView(scratchpad=_PROBE_SCRATCHPAD, query=_PROBE_QUERY,
                      entries=tuple(_sentinel(_FIRST_ENTRY + k) for k in range(count)))
    expected = "".join("".join(map(chr, item.prefixes[k])) + _sentinel(_FIRST_ENTRY + k) for k in range(count))
    if env.user_message(episode, context, state, 0, view)[1][field] != expected:
      raise ValueError(f"field {field!r}: {count} shown entries do not render as the first {count} of {top_k}")


def _classify(name: str, field: str, full: str, empty: str, top_k: int) -> Item | None:
  """What a field shows (None: static)."""
  if full == empty:
    return None
  if full == _PROBE_SCRATCHPAD or full == _PROBE_QUERY:
    return Item("text", codes=_codes(empty), part=_SCRATCHPAD if full == _PROBE_SCRATCHPAD else _QUERY)
  item = _entries_item(full, empty, top_k)
  if item is None:
    raise ValueError(f"template {name!r}: field {field!r} shows the memory in a way the device engine does not "
                     f"render ({full!r})")
  return item


def _skeleton(templates: protocol.Templates, name: str, fields: Sequence[str]) -> list[tuple[str, Any]]:
  """The template as ("const", text) and ("field", name) pieces."""
  marks = {field: _sentinel(_FIELD_BASE + i) for i, field in enumerate(fields)}
  text = templates.render(name, **marks)
  pieces, by_mark = [], {mark: field for field, mark in marks.items()}
  for piece in re.split("(" + "|".join(marks.values()) + ")", text):
    pieces.append(("field", by_mark[piece]) if piece in by_mark else ("const", piece))
  return pieces


def _variants(num_questions: int, num_chunks: int, grid: tuple[int, int]):
  """(variant index, (answer phase, question, chunk)) of every observation an episode can show; `grid`: the
  layout's (questions, chunks), the strides of the variant index."""
  for question in range(num_questions):
    for chunk in range(num_chunks):
      yield question * grid[1] + chunk, (False, question, chunk)
    yield grid[0] * grid[1] + question, (True, question, 0)


def _state(answer: bool, question: int, chunk: int, reads: int = 0) -> long_context.EnvState:
  one = lambda value, dtype=np.int32: np.array([value], dtype)
  return long_context.EnvState(chunk_index_B=one(chunk), num_chunks_B=one(chunk + 1), question_index_B=one(question),
                               num_questions_B=one(question + 1), query_count_B=one(reads),
                               answer_phase_B=one(answer, bool), done_B=one(False, bool), step_B=one(0))


_COUNTER_PROBES = (1, 12, 345)  # reads-in-a-row values probed besides 0
_COUNTER_DIGITS = 10  # an int32 counter has at most 10 decimal digits


def _counter_fields(env: Any, episode: Any, context: Any, answer: bool, question: int, chunk: int,
                    full: MemoryView) -> set[str]:
  """The fields of this observation that show the reads-in-a-row counter (`EnvState.query_count_B`) as a number;
  anything else that depends on it is refused."""
  name, base = env.user_message(episode, context, _state(answer, question, chunk), 0, full)
  counters: set[str] = set()
  for reads in _COUNTER_PROBES:
    name_reads, shown = env.user_message(episode, context, _state(answer, question, chunk, reads), 0, full)
    if name_reads != name:
      raise ValueError(f"the observation's template depends on the reads in a row ({name!r} / {name_reads!r})")
    for field, value in shown.items():
      if str(value) == str(base[field]):
        continue
      if str(base[field]) != "0" or str(value) != str(reads):
        raise ValueError(f"template {name!r}: field {field!r} shows the reads in a row in a way the device engine "
                         f"does not render ({base[field]!r} at 0 reads, {value!r} at {reads})")
      counters.add(field)
  return counters


def _chat_pieces(tokenizer: Any, system: str, added: Sequence[str]) -> tuple[str, str, str, str]:
  """(prefix, head, tail, suffix) of the chat prompt around the user message, split at added tokens."""
  user = _sentinel(_FIELD_BASE - 1)
  before, after = protocol.chat_prompt(tokenizer, system, user).split(user)
  ends = [m.end() for token in added for m in re.finditer(re.escape(token), before)]
  starts = [m.start() for token in added for m in re.finditer(re.escape(token), after)]
  cut_before, cut_after = max(ends, default=0), min(starts, default=len(after))
  return before[:cut_before], before[cut_before:], after[:cut_after], after[cut_after:]


def build(env: long_context.LongContextEnv, episodes: Sequence[Any], contexts: Sequence[Any],
          row_episode: Sequence[int], tokenizer: Any, top_k: int, prompt_width: int) -> tuple[Layout, LayoutTables]:
  """The layout of these episodes' observations (see the module docstring)."""
  full, empty = _probe_views(top_k)
  reads = env.method.reads_document
  num_questions = _bucket(max(len(ep.questions) for ep in episodes))
  num_chunks = max(1, env.config.max_chunks)
  names: list[str] = []
  items: dict[tuple[str, str], Item | None] = {}
  values: dict[tuple[int, int], tuple[str, dict[str, str]]] = {}
  for e, (episode, context) in enumerate(zip(episodes, contexts)):
    chunks = context.num_chunks if reads else 0
    for variant, (answer, question, chunk) in _variants(len(episode.questions), chunks, (num_questions, num_chunks)):
      state = _state(answer, question, chunk)
      name, shown = env.user_message(episode, context, state, 0, full)
      name_empty, shown_empty = env.user_message(episode, context, state, 0, empty)
      counters = _counter_fields(env, episode, context, answer, question, chunk, full)
      # As `string.Template` shows a value.
      shown, shown_empty = ({k: str(v) for k, v in fields.items()} for fields in (shown, shown_empty))
      if name_empty != name or set(shown) != set(shown_empty):
        raise ValueError(f"the observation's template depends on the memory ({name!r} / {name_empty!r})")
      if name not in names:
        names.append(name)
      for field in shown:
        item = (Item("counter") if field in counters else
                _classify(name, field, shown[field], shown_empty[field], top_k))
        if item is not None and item.kind == "entries":
          _check_entries(env, episode, context, state, field, item, top_k)
        if items.setdefault((name, field), item) != item:
          raise ValueError(f"template {name!r}: field {field!r} shows the memory differently across observations")
      values[e, variant] = (name, shown)
  slots = {key: i for i, key in enumerate(key for key, item in items.items() if item is None)}
  templates = []
  for name in names:
    fields = [field for (n, field) in items if n == name]
    pieces = []
    for kind, value in _skeleton(env.templates, name, fields):
      if kind == "const":
        pieces.append(Item("const", codes=_codes(value)))
      else:
        pieces.append(items[name, value] or Item("static", slot=slots[name, value]))
    templates.append(tuple(p for p in pieces if p.kind != "const" or p.codes))
  pool: list[int] = []
  variants = num_questions * num_chunks + num_questions
  start = np.zeros((len(episodes), variants, max(1, len(slots))), np.int32)
  length = np.zeros_like(start)
  template = np.zeros((len(episodes), variants), np.int32)
  capacity = [1] * max(1, len(slots))
  for (e, variant), (name, shown) in values.items():
    template[e, variant] = names.index(name)
    for (n, field), slot in slots.items():
      if n == name:
        codes = _codes(shown[field])
        start[e, variant, slot], length[e, variant, slot] = len(pool), len(codes)
        capacity[slot] = max(capacity[slot], len(codes))
        pool.extend(codes)
  added = list(tokenizer.get_added_vocab())
  prefix, head, tail, suffix = _chat_pieces(tokenizer, env.templates.render(env.method.system_template), added)
  encode = lambda text: tuple(tokenizer.encode(text, add_special_tokens=False))
  layout = Layout(templates=tuple(templates), slot_capacity=tuple(_bucket(c) for c in capacity), head=_codes(head),
                  tail=_codes(tail), prefix_ids=encode(prefix), suffix_ids=encode(suffix),
                  num_questions=num_questions, num_chunks=num_chunks, prompt_width=prompt_width)
  pool_array = np.zeros((_bucket(len(pool) + 1),), np.int32)
  pool_array[:len(pool)] = pool
  return layout, LayoutTables(pool=pool_array, slot_start=start, slot_length=length, template=template,
                              row_episode=np.asarray(row_episode, np.int32))


# ----------------------------------------------------------------------------------------------------------------
# In-graph
# ----------------------------------------------------------------------------------------------------------------

@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MemoryParts:
  """What an observation shows of one row's memory, as token ids (the host decodes the same for the turn record)."""

  scratchpad: jax.Array  # [S]
  scratchpad_length: jax.Array
  query: jax.Array  # [Q]
  query_length: jax.Array
  entries: jax.Array  # [K, E]: the shown entries in rank order
  entry_lengths: jax.Array  # [K]
  num_shown: jax.Array  # entries shown: the leading shown slots that hold one


def memory_parts(memory: Any) -> MemoryParts:
  """Every row's `MemoryParts` of a memory state (as `memory_view.memory_view` reads it)."""
  shown = memory.shown_slots_BxK
  slot = jnp.maximum(shown, 0)
  rows = jnp.arange(shown.shape[0])[:, None]
  num_shown = jnp.sum(jnp.cumprod(shown >= 0, axis=1), axis=1).astype(jnp.int32)
  # `+ 0`: fresh arrays, which the memory's donation to the next transition leaves alone.
  return MemoryParts(scratchpad=memory.scratchpad_tokens_BxS + 0, scratchpad_length=memory.scratchpad_length_B + 0,
                     query=memory.query_tokens_BxQ + 0, query_length=memory.query_length_B + 0,
                     entries=memory.entry_tokens_BxMxE[rows, slot], entry_lengths=memory.entry_lengths_BxM[rows, slot],
                     num_shown=num_shown)


def _const(codes: Sequence[int], on) -> tuple[jax.Array, jax.Array]:
  return jnp.asarray(list(codes) or [0], jnp.int32), jnp.where(on, len(codes), 0)


def user_capacity(layout: Layout, scratchpad: int, query: int, entry: int, token_bytes: int) -> int:
  """Code points the chat prompt's user piece can take: head, tail and the largest template's fields, a memory
  part at `token_bytes` per id (its longest token)."""
  def capacity(item: Item) -> int:
    if item.kind == "const":
      return len(item.codes)
    if item.kind == "static":
      return layout.slot_capacity[item.slot]
    if item.kind == "counter":
      return _COUNTER_DIGITS
    if item.kind == "text":
      return (scratchpad if item.part == _SCRATCHPAD else query) * token_bytes + len(item.codes)
    return len(item.codes) + sum(len(p) + entry * token_bytes for p in item.prefixes)
  return len(layout.head) + len(layout.tail) + max(sum(capacity(i) for i in items) for items in layout.templates)


def _decimal(value: jax.Array) -> tuple[jax.Array, jax.Array]:
  """A non-negative int32 as `str` writes it: code points (left-aligned in `_COUNTER_DIGITS`) and their count."""
  powers = jnp.asarray(10 ** np.arange(_COUNTER_DIGITS - 1, -1, -1), jnp.int32)  # 10**9 fits in int32
  digits = (value.astype(jnp.int32) // powers) % 10  # most significant first, leading zeros included
  count = jnp.maximum(1, _COUNTER_DIGITS - jnp.sum(jnp.cumprod(digits == 0)))
  shifted = jnp.roll(digits, count - _COUNTER_DIGITS)  # the significant digits to the front
  return (shifted + ord("0")).astype(jnp.int32), count.astype(jnp.int32)


def _render_row(layout: Layout, tables: LayoutTables, codec_tables: TokenizerTables, episode, answer, question, chunk,
                num_questions, reads, parts: MemoryParts) -> tuple[jax.Array, jax.Array]:
  question = jnp.minimum(question, num_questions - 1)
  variant = jnp.where(answer, layout.num_questions * layout.num_chunks + question,
                      question * layout.num_chunks + jnp.minimum(chunk, layout.num_chunks - 1))
  template = tables.template[episode, variant]
  # All memory parts decoded by one (vmapped) decode: the scratchpad, the query, then the K entries.
  width = max(parts.scratchpad.shape[0], parts.query.shape[0], parts.entries.shape[1])
  pad = lambda ids: jnp.pad(ids, [(0, 0)] * (ids.ndim - 1) + [(0, width - ids.shape[-1])])
  ids = jnp.concatenate([pad(parts.scratchpad)[None], pad(parts.query)[None], pad(parts.entries)])
  lengths = jnp.concatenate([parts.scratchpad_length[None], parts.query_length[None], parts.entry_lengths])
  texts, counts = jax.vmap(codec.decode, in_axes=(None, 0, 0))(codec_tables, ids, lengths)
  cut = lambda k, ids_width: (texts[k, :ids_width * codec_tables.token_bytes_VxL.shape[1]], counts[k])
  decoded = {_SCRATCHPAD: cut(0, parts.scratchpad.shape[0]), _QUERY: cut(1, parts.query.shape[0])}
  entries = [cut(2 + k, parts.entries.shape[1]) for k in range(parts.entries.shape[0])]
  pieces = [_const(layout.head, True)]
  for index, items in enumerate(layout.templates):
    on = template == index
    for item in items:
      if item.kind == "const":
        pieces.append(_const(item.codes, on))
      elif item.kind == "static":
        start = tables.slot_start[episode, variant, item.slot]
        values = tables.pool[jnp.minimum(start + jnp.arange(layout.slot_capacity[item.slot]),
                                         tables.pool.shape[0] - 1)]
        pieces.append((values, jnp.where(on, tables.slot_length[episode, variant, item.slot], 0)))
      elif item.kind == "counter":
        codes, count = _decimal(jnp.maximum(reads, 0))
        pieces.append((codes, jnp.where(on, count, 0)))
      elif item.kind == "text":
        text, count = decoded[item.part]
        pieces += [(text, jnp.where(on, count, 0)), _const(item.codes, on & (count == 0))]
      else:
        pieces.append(_const(item.codes, on & (parts.num_shown == 0)))
        for k, (text, count) in enumerate(entries[:len(item.prefixes)]):
          shown = on & (k < parts.num_shown)
          pieces += [_const(item.prefixes[k], shown), (text, jnp.where(shown, count, 0))]
  pieces.append(_const(layout.tail, True))
  size = user_capacity(layout, parts.scratchpad.shape[0], parts.query.shape[0], parts.entries.shape[1],
                       codec_tables.token_bytes_VxL.shape[1])
  return segments.concatenate(pieces, size, 0)


def render(layout: Layout, tables: LayoutTables, codec_tables: TokenizerTables, state: long_context.EnvState,
           parts: MemoryParts) -> tuple[jax.Array, jax.Array]:
  """Every row's text to tokenize: the user message with the chat prompt's head and tail around it, as code points
  left-aligned in `user_capacity` columns, and their count."""
  render_row = functools.partial(_render_row, layout, tables, codec_tables)
  return jax.vmap(render_row)(tables.row_episode, state.answer_phase_B, state.question_index_B,
                              state.chunk_index_B, state.num_questions_B, state.query_count_B, parts)


def encode_prompts(layout: Layout, codec_tables: TokenizerTables, words: codec.Words, max_words: int,
                   max_symbols: int) -> tuple[jax.Array, jax.Array]:
  """Every row's prompt ids, left-aligned in `layout.prompt_width` columns, and their count (which may exceed the
  width: the caller refuses such a prompt as the sampler would); the bounds as `codec.merge` needs them."""
  def one(words):
    tokens, count, _ = codec.merge(codec_tables, words, max_words, max_symbols)
    prompt = [(jnp.asarray(layout.prefix_ids or (0,), jnp.int32), len(layout.prefix_ids)), (tokens, count),
              (jnp.asarray(layout.suffix_ids or (0,), jnp.int32), len(layout.suffix_ids))]
    return segments.concatenate(prompt, layout.prompt_width, 0)
  return jax.vmap(one)(words)
