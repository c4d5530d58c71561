r"""The response grammar of `agent.protocol`, parsed in-graph from a response's code points.

`parse` gives what the host gets from `protocol.parse_response`, then `protocol.disable_ops`, then the cut to the
op width: the same parts in the same order, each with its kind, validity, "Memory i" target and, for ops with a
text, where the text lies. It follows the host's passes:
1. `<think>` blocks are removed (an unclosed one runs to the end), each replaced by one space;
2. protocol tags are found; an opening tag whose next tag is its own closing tag is an op with the body between,
   any other tag is one invalid part;
3. in the text with those ops and tags blanked, each `<name>...</name>` pair of another name (found left to right,
   the earliest closing tag first, non-overlapping, like `re.finditer`) is one invalid part;
4. bodies are parsed as Python's `re` and `str.strip` read them (Unicode whitespace and decimal digits).
Past the op width, the first width - 1 parts are kept and the last slot becomes one invalid part.

Every scan-like pass is done for all positions at once (`segments.chain` for the left-to-right ones). Tag names
are compared by length and two 32-bit polynomial hashes.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp

from atommem_jax import op_table
from atommem_jax.data.jax_tokenizer import segments, unicode_classes
from atommem_jax.data.jax_tokenizer.tables import TokenizerTables

_GRAMMARS = ("text", "target_text", "target", "boxed")  # `op_table.Body`, in the order `body` selects them
_THINK_OPEN, _THINK_CLOSE = f"<{op_table.THINK}>", f"</{op_table.THINK}>"
_MEMORY, _BOX = "Memory", "\\boxed{"
_TOO_BIG = 10**7  # a "Memory i" number this large is out of range whatever was shown
_HASH_BASES = (1_000_003, 998_244_353)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ParsedOps:
  """O parts per row, in the order written. Slots past `count` are padding (kind INVALID, not valid).

  `start`/`end` delimit the op's text in `text` (the response without its think blocks): the stripped body for a
  text op, the stripped text after "Memory i:" for an Update, the stripped box content for an answer; empty for
  the rest."""

  count: jax.Array
  kind: jax.Array
  valid: jax.Array
  target: jax.Array
  start: jax.Array
  end: jax.Array
  text: jax.Array
  length: jax.Array


def _without_think(code_C: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`protocol.strip_think`: every `<think>` block (to the next `</think>` or the end) becomes one space."""
  size = code_C.shape[0]
  position = jnp.arange(size)
  limit = jnp.full((size,), n)
  which = segments.find_patterns(code_C, limit, *segments.pattern_table([_THINK_OPEN, _THINK_CLOSE]))
  opens, closes = which == 0, which == 1
  extend = lambda x: jnp.concatenate([x, jnp.array([size])])
  next_close = extend(segments.next_at_or_after(closes))
  next_open = extend(segments.next_at_or_after(opens))
  close = next_close[jnp.minimum(position + len(_THINK_OPEN), size)]
  block_end = jnp.where(close < size, close + len(_THINK_CLOSE), n)
  blocks = segments.chain(jnp.where(opens, next_open[block_end], size), position == next_open[0]) & opens
  depth = jnp.cumsum(jnp.zeros((size + 1,), jnp.int32).at[position].add(blocks)
                     .at[jnp.where(blocks, block_end, size)].add(-1)[:size])
  keep = ((depth == 0) | blocks) & (position < n)
  return segments.compact(jnp.where(blocks, ord(" "), code_C), keep, size, 0)


def _name_hashes(code_C: jax.Array):
  """Per base, `hash(i, j)` of code[i:j] (uint32 polynomial)."""
  size = code_C.shape[0]
  out = []
  for base in _HASH_BASES:
    base = jnp.uint32(base)
    prefix = jnp.concatenate([jnp.zeros((1,), jnp.uint32),
                              jax.lax.associative_scan(lambda a, b: (a[0] * b[1] + b[0], a[1] * b[1]),
                                                       (code_C.astype(jnp.uint32),
                                                        jnp.full((size,), base, jnp.uint32)))[0]])
    powers = jnp.concatenate([jnp.ones((1,), jnp.uint32), jnp.cumprod(jnp.full((size,), base, jnp.uint32))])
    out.append((prefix, powers))
  return lambda i, j: tuple(p[j] - p[i] * w[jnp.maximum(j - i, 0)] for p, w in out)


def _unknown_pairs(text_C: jax.Array, n: jax.Array) -> jax.Array:
  """True where `re.finditer(r"<([A-Za-z_][A-Za-z0-9_]*)>.*?</\\1>", text)` (DOTALL) finds a match."""
  size = text_C.shape[0]
  position = jnp.arange(size)
  real = position < n
  letter = real & (((text_C >= ord("A")) & (text_C <= ord("Z"))) | ((text_C >= ord("a")) & (text_C <= ord("z")))
                   | (text_C == ord("_")))
  name_char = letter | (real & (text_C >= ord("0")) & (text_C <= ord("9")))
  name_end = jnp.concatenate([segments.run_end(name_char), jnp.array([size])])
  at = lambda k: jnp.concatenate([text_C, jnp.full((k,), -1)])[position + k]
  char_at = lambda index: jnp.concatenate([text_C, jnp.array([-1])])[jnp.minimum(index, size)]
  open_name_end = name_end[jnp.minimum(position + 1, size)]
  opening = real & (text_C == ord("<")) & jnp.concatenate([letter[1:], jnp.array([False])]) & \
      (char_at(open_name_end) == ord(">")) & (open_name_end < n)
  close_name_end = name_end[jnp.minimum(position + 2, size)]
  closing = real & (text_C == ord("<")) & (at(1) == ord("/")) & jnp.concatenate([letter[2:], jnp.zeros((2,), bool)]) \
      & (char_at(close_name_end) == ord(">")) & (close_name_end < n)
  hashes = _name_hashes(text_C)
  open_key = (open_name_end - position - 1,) + hashes(jnp.minimum(position + 1, size), open_name_end)
  close_key = (close_name_end - position - 2,) + hashes(jnp.minimum(position + 2, size), close_name_end)
  # Earliest closing tag of the same name at or after the opening tag's end.
  candidates = max(1, size // 3)
  opens, num_opens = segments.compact(position, opening, candidates, size)
  closes, num_closes = segments.compact(position, closing, candidates, size)
  valid_open = jnp.arange(candidates) < num_opens
  valid_close = jnp.arange(candidates) < num_closes
  same = valid_open[:, None] & valid_close[None, :]
  for o_key, c_key in zip(open_key, close_key):
    same = same & (o_key[jnp.minimum(opens, size - 1)][:, None] == c_key[jnp.minimum(closes, size - 1)][None, :])
  open_end = open_name_end[jnp.minimum(opens, size - 1)] + 1
  same = same & (closes[None, :] >= open_end[:, None])
  first_close = jnp.min(jnp.where(same, closes[None, :], size), axis=1)
  match_end_O = jnp.where(first_close < size, close_name_end[jnp.minimum(first_close, size - 1)] + 1, size)
  has_close = jnp.zeros((size + 1,), bool).at[jnp.where(valid_open & (first_close < size), opens, size)].set(True)
  match_end = jnp.full((size + 1,), size).at[jnp.where(valid_open, opens, size)].set(match_end_O)
  next_match = jnp.concatenate([segments.next_at_or_after(has_close[:size]), jnp.array([size])])
  jump = jnp.where(has_close[:size], next_match[jnp.minimum(match_end[:size], size)], size)
  return segments.chain(jump, position == next_match[0]) & has_close[:size]


def _first_below(prefix_C: jax.Array, start: jax.Array, level: jax.Array, limit: jax.Array) -> jax.Array:
  """The first q in [start, limit) with prefix[q] < level (limit if none): binary lifting over range minimums."""
  size = prefix_C.shape[0]
  steps = max(1, size.bit_length())
  table = [prefix_C]
  for k in range(1, steps):
    previous = table[-1]
    table.append(jnp.minimum(previous, jnp.concatenate([previous[1 << (k - 1):],
                                                        jnp.full((1 << (k - 1),), previous.max())])))
  position = start
  for k in reversed(range(steps)):
    span = 1 << k
    ok = (position + span <= limit) & (table[k][jnp.minimum(position, size - 1)] >= level)
    position = jnp.where(ok, position + span, position)
  return position


def _parse_row(tables: TokenizerTables, code_C: jax.Array, n: jax.Array, num_shown: jax.Array, *, width: int,
               disabled: tuple[int, ...], max_target: int) -> ParsedOps:
  size = code_C.shape[0]
  text, length = _without_think(code_C, n)
  position = jnp.arange(size)
  real = position < length
  limit = jnp.full((size,), length)
  # ---- protocol tags: +kind opening, -kind closing
  # One search for every fixed string the grammar has: the tags, "Memory" and "\\boxed{".
  words = [spec.open_tag for spec in op_table.OPS] + [spec.close_tag for spec in op_table.OPS] + [_MEMORY, _BOX]
  table, lengths = segments.pattern_table(words)
  which = segments.find_patterns(text, limit, table, lengths)
  num_ops = len(op_table.OPS)
  kinds = jnp.asarray([spec.kind for spec in op_table.OPS] + [-spec.kind for spec in op_table.OPS] + [0, 0])
  tag = jnp.where((which >= 0) & (which < 2 * num_ops), kinds[jnp.maximum(which, 0)], 0)
  tag_length = jnp.where(tag != 0, lengths[jnp.maximum(which, 0)], 0)
  shortest = min(len(spec.open_tag) for spec in op_table.OPS)
  capacity = size // shortest + 2
  tags_at, num_tags = segments.compact(position, tag != 0, capacity, size)
  tag_kind = tag[jnp.minimum(tags_at, size - 1)]
  tag_end = tags_at + tag_length[jnp.minimum(tags_at, size - 1)]
  in_list = jnp.arange(capacity) < num_tags
  following = lambda x, fill: jnp.concatenate([x[1:], jnp.array([fill], x.dtype)])
  # A closing tag right after its opening tag is consumed by it (two such links can never be adjacent).
  pairs_next = in_list & following(in_list, False) & (tag_kind > 0) & (following(tag_kind, 0) == -tag_kind)
  consumed = jnp.concatenate([jnp.array([False]), pairs_next[:-1]])
  is_part = in_list & ~consumed
  part_kind = jnp.where(pairs_next, tag_kind, op_table.INVALID)
  body_start, body_end = tag_end, following(tags_at, size)
  span_end = jnp.where(pairs_next, following(tag_end, size), tag_end)
  # ---- other tag pairs, in the text with the protocol ops and stray tags blanked
  blank = jnp.cumsum(jnp.zeros((size + 1,), jnp.int32).at[jnp.where(is_part, tags_at, size)].add(1)
                     .at[jnp.where(is_part, span_end, size)].add(-1)[:size]) > 0
  unknown = _unknown_pairs(jnp.where(blank, ord(" "), text), length)
  # ---- all parts in position order: protocol parts (by tag index) and unknown pairs (-1)
  part_index = jnp.full((size + 1,), -2, jnp.int32).at[jnp.where(is_part, tags_at, size)].set(
      jnp.arange(capacity, dtype=jnp.int32))[:size]
  part_index = jnp.where(unknown, -1, part_index)
  order, _ = segments.compact(part_index, part_index > -2, width, -2)
  total = jnp.sum(part_index > -2)  # not capped at the width: past it, the last slot stands for the rest
  slot_tag = jnp.maximum(order, 0)
  protocol_slot = order >= 0
  kind = jnp.where(protocol_slot, part_kind[slot_tag], op_table.INVALID)
  start, end = body_start[slot_tag], body_end[slot_tag]
  # ---- bodies
  bits = tables.class_C[jnp.clip(text, 0, unicode_classes.NUM_CODE_POINTS - 1)].astype(jnp.int32)
  space = real & ((bits & unicode_classes.PY_SPACE) > 0)
  digit = jnp.where(real & ((bits & unicode_classes.PY_DECIMAL) > 0), tables.digit_C[jnp.clip(
      text, 0, unicode_classes.NUM_CODE_POINTS - 1)].astype(jnp.int32), -1)
  extend = lambda x, fill: jnp.concatenate([x, jnp.array([fill], x.dtype)])
  space_end = extend(segments.run_end(space), size)
  digit_end = extend(segments.run_end(digit >= 0), size)
  next_solid = extend(segments.next_at_or_after(real & ~space), size)
  last_solid = extend(segments.last_at_or_before(real & ~space), -1)
  nonzero = extend(segments.next_at_or_after(digit > 0), size)
  memory_at = extend(which == 2 * num_ops, False)
  box_at = which == 2 * num_ops + 1
  char = lambda i: extend(text, -1)[jnp.minimum(i, size)]

  def stripped(a, b):
    first = next_solid[jnp.minimum(a, size)]
    last = last_solid[jnp.where(b > 0, b - 1, size)]
    ok = (first < b) & (last >= a)
    return jnp.where(ok, first, a), jnp.where(ok, last + 1, a)

  net = jnp.where(real & (text == ord("{")), 1, 0) - jnp.where(real & (text == ord("}")), 1, 0)
  prefix = jnp.cumsum(net)
  content = position + len(_BOX)
  box_close = _first_below(prefix, jnp.minimum(content, size), prefix[jnp.clip(content - 1, 0, size - 1)], length)

  def body(kind, a, b):
    text_a, text_b = stripped(a, b)
    nonempty = text_b > text_a
    # "\s*Memory\s+(\d+)\s*" then ":" TEXT (Update) or the end (Delete)
    p1 = jnp.minimum(space_end[jnp.minimum(a, size)], b)
    p2 = p1 + len(_MEMORY)
    p3 = jnp.minimum(space_end[jnp.minimum(p2, size)], b)
    p4 = jnp.minimum(digit_end[jnp.minimum(p3, size)], b)
    p5 = jnp.minimum(space_end[jnp.minimum(p4, size)], b)
    first = jnp.minimum(nonzero[jnp.minimum(p3, size)], p4)
    number = jnp.zeros((), jnp.int32)
    for k in range(7):
      index = p4 - 1 - k
      number = number + jnp.where(index >= first, digit[jnp.clip(index, 0, size - 1)] * 10**k, 0)
    number = jnp.where(p4 - first > 7, _TOO_BIG, number)
    reference = memory_at[jnp.minimum(p1, size)] & (p2 <= b) & (p3 > p2) & (p4 > p3)
    colon = (p5 < b) & (char(p5) == ord(":"))
    after_a, after_b = stripped(p5 + 1, b)
    in_range = (number >= 1) & (number <= num_shown)
    # the last "\boxed{" in the body whose braces close inside it
    boxes = box_at & (position >= a) & (content <= b) & (box_close < b)
    last_box = jnp.max(jnp.where(boxes, position, -1))
    box_a, box_b = stripped(content[jnp.maximum(last_box, 0)], box_close[jnp.maximum(last_box, 0)])
    kind_body = jnp.asarray([0] + [_GRAMMARS.index(spec.body) for spec in op_table.OPS])[kind]
    ok = jnp.select(
        [kind_body == 0, kind_body == 1, kind_body == 2],
        [nonempty, nonempty & reference & colon & in_range & (after_b > after_a), nonempty & reference & (p5 == b)
         & in_range], nonempty & (last_box >= 0) & (box_b > box_a))
    targeted = (kind_body == 1) | (kind_body == 2)
    text_range = jnp.select([kind_body == 0, kind_body == 1, kind_body == 3], [jnp.stack([text_a, text_b]),
                            jnp.stack([after_a, after_b]), jnp.stack([box_a, box_b])], jnp.stack([a, a]))
    return ok, jnp.where(targeted, jnp.minimum(number, _TOO_BIG), 0), text_range

  parsed_ok, target, text_range = jax.vmap(body)(jnp.maximum(kind, 0), start, end)
  parsed_ok = parsed_ok & protocol_slot & (kind != op_table.INVALID)

  removes = jnp.asarray([False] + [spec.body == "target" for spec in op_table.OPS])  # a target-only op deletes

  def no_reuse(deleted, slot):  # a target deleted earlier in the response is gone
    kind, ok, target = slot
    index = jnp.clip(target, 0, max_target)
    ok = ok & ~((target > 0) & deleted[index])
    return deleted.at[index].set(deleted[index] | (ok & removes[kind])), ok

  _, parsed_ok = jax.lax.scan(no_reuse, jnp.zeros((max_target + 1,), bool), (kind, parsed_ok, target))
  kind = jnp.where(parsed_ok | ~protocol_slot, kind, op_table.INVALID)
  kind = jnp.where(jnp.arange(width) < total, kind, op_table.INVALID)
  valid = parsed_ok & ~jnp.isin(kind, jnp.asarray(disabled or (-1,), jnp.int32))
  # Past the width: the last slot stands for everything dropped.
  over = total > width
  last = jnp.arange(width) == width - 1
  kind = jnp.where(over & last, op_table.INVALID, kind)
  valid = valid & ~(over & last)
  has_text = valid & ~removes[kind]
  text_start = jnp.where(has_text, text_range[:, 0], 0)
  text_end = jnp.where(has_text, text_range[:, 1], 0)
  return ParsedOps(count=jnp.minimum(total, width), kind=kind, valid=valid,
                   target=jnp.where(valid, target, 0), start=text_start, end=text_end, text=text, length=length)


def parse(tables: TokenizerTables, code_BxC: jax.Array, n_B: jax.Array, num_shown_B: jax.Array, *, width: int,
          disabled_kinds: Sequence[int], max_target: int) -> ParsedOps:
  """Every row's parts (see the module docstring); `max_target`: the most entries an observation shows."""
  return jax.vmap(lambda code, n, shown: _parse_row(tables, code, n, shown, width=width,
                                                    disabled=tuple(disabled_kinds), max_target=max_target))(
      code_BxC, n_B, num_shown_B)

