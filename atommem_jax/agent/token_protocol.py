"""The protocol on token ids, in-graph: observations built by concatenating token segments, responses parsed by a
scan over their ids. This is what lets a whole rollout run inside one `jax.lax.while_loop` (`agent.device_loop`).

It needs a tokenizer whose protocol tags are single tokens (the tiny default tokenizer) and that writes `Memory`,
`:`, `{`, `}`, `\\boxed` and each digit as tokens of their own.

Observations: the template's constant text, the question block, the chunk, the scratchpad, the query and the shown
entries are each tokenised on their own (entries and the scratchpad are the memory's token ids as stored) and
concatenated, left-padded to a fixed width. The ids can differ from tokenising the rendered text in one piece (BPE
merges across a boundary), which is why the token-space rollout has its own host loop to compare with.

Response grammar on ids (the text grammar of `agent.protocol`, at token granularity):
- `<think>` .. `</think>` (or to the end) is skipped (inside an op body its ids stay in the body); tags are single
  tokens; bodies are the ids between an opening tag and its closing tag; an opening tag followed by another opening
  tag, a mismatched closing tag, a stray closing tag or the end is an invalid part (as in the text grammar);
  unknown `<x>` pairs are plain text here.
- Stripping removes whitespace-only tokens at both ends (a token such as " Paris" keeps its leading space).
- `Memory i` is the `Memory` token, whitespace tokens, digit tokens, whitespace tokens, then `:` (Update) or the
  end (Delete); the answer is the content of the last balanced `\\boxed{...}` (`\\boxed` or a token ending in `\\`
  then `boxed`, then `{`).
- Past `max_ops_per_turn` ops, the last kept op is replaced by one invalid part, as on the host.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from atommem_jax.agent import protocol

_THINK_OPEN, _THINK_CLOSE = 7, -7
_MAX_SHOWN = 64  # "Memory i" targets are checked against at most this many shown entries


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VocabTables:
  """Per-token facts the parser needs, as [V] arrays."""

  tag_V: jax.Array  # +kind for an opening protocol tag, -kind for its closing tag, +-7 for think, 0 otherwise
  space_V: jax.Array  # the token decodes to whitespace only
  digit_V: jax.Array  # the digit's value, -1 for other tokens
  net_braces_V: jax.Array  # count of "{" minus count of "}"
  box_V: jax.Array  # the token is `\boxed`
  backslash_end_V: jax.Array  # the token ends with a backslash
  boxed_word_V: jax.Array  # the token is `boxed`
  open_brace_V: jax.Array  # the token is exactly "{"
  memory_V: jax.Array  # the token is `Memory` (with or without a leading space)
  colon_V: jax.Array  # the token is ":"


def vocab_tables(tokenizer: Any) -> VocabTables:
  size = len(tokenizer)
  texts = [tokenizer.decode([i]) for i in range(size)]
  tag = np.zeros(size, np.int32)
  for kind, name in enumerate(protocol.KIND_NAMES[1:] + ("think",), start=1):
    for sign, text in ((1, f"<{name}>"), (-1, f"</{name}>")):
      ids = tokenizer.encode(text, add_special_tokens=False)
      if len(ids) != 1:
        raise ValueError(f"the token-space protocol needs {text} as one token; this tokenizer gives {ids}")
      tag[ids[0]] = sign * kind
  for word in ("Memory", ":", "{", "\\boxed", "boxed") + tuple("0123456789"):
    if len(tokenizer.encode(word, add_special_tokens=False)) != 1:
      raise ValueError(f"the token-space protocol needs {word!r} as one token")
  return VocabTables(
      tag_V=tag,
      space_V=np.array([t != "" and t.strip() == "" for t in texts]),
      digit_V=np.array([int(t) if len(t) == 1 and t.isdigit() else -1 for t in texts], np.int32),
      net_braces_V=np.array([t.count("{") - t.count("}") for t in texts], np.int32),
      box_V=np.array([t == "\\boxed" for t in texts]),
      backslash_end_V=np.array([t.endswith("\\") for t in texts]),
      boxed_word_V=np.array([t == "boxed" for t in texts]),
      open_brace_V=np.array([t == "{" for t in texts]),
      memory_V=np.array([t.strip() == "Memory" for t in texts]),  # " Memory" after a space is one token
      colon_V=np.array([t == ":" for t in texts]))


# ----------------------------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------------------------

@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TokenOps:
  """O parsed ops per row: kind, validity, "Memory i" target, and the op text as a [start, end) range of ids.

  Slots past `count_B` are padding (kind invalid, not valid, not counted)."""

  count_B: jax.Array
  kind_BxO: jax.Array
  valid_BxO: jax.Array
  target_BxO: jax.Array
  start_BxO: jax.Array
  end_BxO: jax.Array


def _split_ops_row(tokens_N: jax.Array, length: jax.Array, tables: VocabTables, width: int):
  """Tag structure of one response: (kind, body start, body end, well-formed) per part, and the part count."""
  n = tokens_N.shape[0]
  zeros = jnp.zeros((width,), jnp.int32)

  def emit(parts, kind, start, end, ok, when):
    kinds, starts, ends, oks, count = parts
    slot = jnp.where(when & (count < width), count, width)  # `width` is out of range: dropped
    kinds = kinds.at[slot].set(kind, mode="drop")
    starts = starts.at[slot].set(start, mode="drop")
    ends = ends.at[slot].set(end, mode="drop")
    oks = oks.at[slot].set(ok, mode="drop")
    return kinds, starts, ends, oks, count + when.astype(jnp.int32)

  def step(carry, position):
    in_think, open_kind, open_pos, parts = carry
    tag = jnp.where(position < length, tables.tag_V[tokens_N[position]], 0)
    think_open, think_close = tag == _THINK_OPEN, tag == _THINK_CLOSE
    protocol_tag = ~in_think & (tag != 0) & ~think_open & ~think_close
    is_open, is_close = protocol_tag & (tag > 0), protocol_tag & (tag < 0)
    closes_own = is_close & (open_kind == -tag)
    # An opening tag, or a closing tag that is not the open op's, leaves the open op unclosed: invalid part.
    abandons = (open_kind > 0) & ((is_open) | (is_close & ~closes_own))
    parts = emit(parts, protocol.INVALID, 0, 0, False, abandons)
    parts = emit(parts, -tag, open_pos + 1, position, True, closes_own)
    parts = emit(parts, protocol.INVALID, 0, 0, False, is_close & ~closes_own)
    open_kind = jnp.where(is_open, tag, jnp.where(is_close, 0, open_kind))
    open_pos = jnp.where(is_open, position, open_pos)
    in_think = (in_think | (think_open & (open_kind >= 0))) & ~(in_think & think_close)
    return (in_think, open_kind, open_pos, parts), None

  parts = (zeros, zeros, zeros, jnp.zeros((width,), bool), jnp.zeros((), jnp.int32))
  (in_think, open_kind, _, parts), _ = jax.lax.scan(step, (jnp.zeros((), bool), jnp.zeros((), jnp.int32),
                                                           jnp.zeros((), jnp.int32), parts), jnp.arange(n))
  parts = emit(parts, protocol.INVALID, 0, 0, False, open_kind > 0)  # unclosed at the end (not while thinking)
  kinds, starts, ends, oks, count = parts
  # Too many parts: the last kept slot becomes the one invalid part standing for everything dropped.
  over = count > width
  kinds = kinds.at[width - 1].set(jnp.where(over, protocol.INVALID, kinds[width - 1]))
  oks = oks.at[width - 1].set(oks[width - 1] & ~over)
  return kinds, starts, ends, oks, jnp.minimum(count, width)


def _strip(start, end, space_N):
  """The range without whitespace-only tokens at either end (empty ranges stay empty)."""
  n = space_N.shape[0]
  positions = jnp.arange(n)
  inside = (positions >= start) & (positions < end) & ~space_N
  first = jnp.min(jnp.where(inside, positions, n))
  last = jnp.max(jnp.where(inside, positions, -1))
  return jnp.where(first <= last, first, start), jnp.where(first <= last, last + 1, start)


def _memory_reference(tokens_N, start, end, tables: VocabTables, needs_colon):
  """(target, text start, ok) of `Memory<spaces><digits><spaces>[:]` filling [start, end) up to the text."""
  n = tokens_N.shape[0]
  want_memory, want_space, want_digit, in_digits, after_digits, after_colon, failed = range(7)

  def step(carry, position):
    state, number, text_start = carry
    token = tokens_N[position]
    live = (position >= start) & (position < end) & (state != after_colon) & (state != failed)
    space, digit, colon = tables.space_V[token], tables.digit_V[token], tables.colon_V[token] & needs_colon
    new_state = jnp.select(
        [state == want_memory, state == want_space, state == want_digit, state == in_digits,
         state == after_digits],
        [jnp.where(tables.memory_V[token], want_space, failed),
         jnp.where(space, want_digit, failed),
         jnp.where(space, want_digit, jnp.where(digit >= 0, in_digits, failed)),
         jnp.where(digit >= 0, in_digits, jnp.where(space, after_digits, jnp.where(colon, after_colon, failed))),
         jnp.where(space, after_digits, jnp.where(colon, after_colon, failed))], failed)
    new_state = jnp.where(live, new_state, state)
    number = jnp.where(live & (new_state == in_digits), jnp.minimum(number * 10 + digit, 10**6), number)
    text_start = jnp.where(live & (new_state == after_colon), position + 1, text_start)
    return (new_state, number, text_start), None

  (state, number, text_start), _ = jax.lax.scan(step, (jnp.int32(want_memory), jnp.int32(0), end), jnp.arange(n))
  ok = jnp.where(needs_colon, state == after_colon, (state == in_digits) | (state == after_digits))
  return number, text_start, ok


def _boxed_content(tokens_N, start, end, tables: VocabTables):
  """[content start, content end, found] of the last balanced `\\boxed{...}` inside [start, end)."""
  n = tokens_N.shape[0]
  positions = jnp.arange(n)
  nxt = lambda a, k: jnp.concatenate([a[k:], jnp.zeros((k,), a.dtype)])
  box, brace = tables.box_V[tokens_N], tables.open_brace_V[tokens_N]
  split_box = tables.backslash_end_V[tokens_N] & nxt(tables.boxed_word_V[tokens_N], 1) & nxt(brace, 2)
  content_start_N = jnp.where(box & nxt(brace, 1), positions + 2, jnp.where(split_box, positions + 3, -1))
  net_N = jnp.where((positions >= start) & (positions < end), tables.net_braces_V[tokens_N], 0)
  prefix_N = jnp.cumsum(net_N)  # prefix_N[q] = net braces in [0, q]
  # For a content start c, depth after token q >= c is 1 + prefix[q] - prefix[c - 1]; closed at the first q with 0.
  before_N = jnp.where(content_start_N > 0, prefix_N[jnp.maximum(content_start_N - 1, 0)], 0)
  depth_NxN = 1 + prefix_N[None, :] - before_N[:, None]
  candidate_NxN = (positions[None, :] >= content_start_N[:, None]) & (positions[None, :] < end) & (depth_NxN <= 0)
  close_N = jnp.min(jnp.where(candidate_NxN, positions[None, :], n), axis=1)
  balanced_N = (content_start_N >= 0) & (positions >= start) & (content_start_N <= end) & (close_N < n)
  last = jnp.max(jnp.where(balanced_N, positions, -1))
  found = last >= 0
  index = jnp.maximum(last, 0)
  return content_start_N[index], close_N[index], found


def parse_tokens(tokens_BxN: jax.Array, lengths_B: jax.Array, num_shown_B: jax.Array, tables: VocabTables,
                 width: int, disabled_kinds: Sequence[int]) -> TokenOps:
  """The ops of every response (see the module docstring), with ablation-disabled kinds made invalid."""
  def one(tokens_N, length, num_shown):
    kinds, starts, ends, oks, count = _split_ops_row(tokens_N, length, tables, width)
    space_N = tables.space_V[tokens_N]

    def body(kind, start, end, ok, index):
      start, end = _strip(start, end, space_N)
      ok = ok & (index < count) & (end > start)
      targeted = (kind == protocol.MODIFY_MEMORY) | (kind == protocol.DELETE_MEMORY)
      target, text_start, ref_ok = _memory_reference(tokens_N, start, end, tables, kind == protocol.MODIFY_MEMORY)
      text_start, text_end = _strip(text_start, end, space_N)
      box_start, box_end, box_ok = _boxed_content(tokens_N, start, end, tables)
      box_start, box_end = _strip(box_start, box_end, space_N)
      is_answer = kind == protocol.FINAL_ANSWER
      ok = ok & jnp.where(targeted, ref_ok & (target >= 1) & (target <= num_shown), True)
      ok = ok & jnp.where(kind == protocol.MODIFY_MEMORY, text_end > text_start, True)
      ok = ok & jnp.where(is_answer, box_ok & (box_end > box_start), True)
      start = jnp.where(kind == protocol.MODIFY_MEMORY, text_start, jnp.where(is_answer, box_start, start))
      end = jnp.where(kind == protocol.MODIFY_MEMORY, text_end, jnp.where(is_answer, box_end, end))
      return jnp.where(ok | (index >= count), kind, protocol.INVALID), ok, jnp.where(targeted & ok, target, 0), \
          start, end

    kinds, oks, targets, starts, ends = jax.vmap(body)(kinds, starts, ends, oks, jnp.arange(width))
    kinds = jnp.where(jnp.arange(width) < count, kinds, protocol.INVALID)

    def no_reuse(deleted_K, op):  # a target deleted earlier in the response is gone
      kind, ok, target = op
      index = jnp.clip(target - 1, 0, _MAX_SHOWN - 1)
      gone = (target > 0) & deleted_K[index]
      ok = ok & ~gone
      deleted_K = deleted_K.at[index].set(deleted_K[index] | (ok & (kind == protocol.DELETE_MEMORY) & (target > 0)))
      return deleted_K, (jnp.where(ok | ~gone, kind, protocol.INVALID), ok, jnp.where(ok, target, 0))

    _, (kinds, oks, targets) = jax.lax.scan(no_reuse, jnp.zeros((_MAX_SHOWN,), bool), (kinds, oks, targets))
    for disabled in disabled_kinds:
      oks = oks & (kinds != disabled)
    return count, kinds, oks, targets, starts, ends

  count, kinds, oks, targets, starts, ends = jax.vmap(one)(tokens_BxN, lengths_B, num_shown_B)
  return TokenOps(count_B=count, kind_BxO=kinds, valid_BxO=oks, target_BxO=targets, start_BxO=starts,
                  end_BxO=ends)


def op_text_tokens(tokens_BxN: jax.Array, ops: TokenOps, width: int, pad_id: int) -> tuple[jax.Array, jax.Array]:
  """Each op's text ids, left-aligned in `width` columns ([B, O, W]), and their lengths (cut at W)."""
  n = tokens_BxN.shape[1]
  lengths_BxO = jnp.clip(ops.end_BxO - ops.start_BxO, 0, width)
  columns_BxOxW = ops.start_BxO[..., None] + jnp.arange(width)
  gathered = jnp.take_along_axis(tokens_BxN[:, None, :], jnp.clip(columns_BxOxW, 0, n - 1), axis=2)
  return jnp.where(jnp.arange(width) < lengths_BxO[..., None], gathered, pad_id), lengths_BxO
