"""Hostile responses: the memory-tag parser and the tool-call parser never raise and handle long adversarial input
correctly; the linear-time readings agree with the straightforward (quadratic) ones they replace. How long parsing
takes is measured by `python -m atommem_jax.bench parser`, not here."""
import json
import random

import pytest
from hypothesis import example, given, settings, strategies as st

from atommem_jax.agent import protocol
from atommem_jax.agent.protocol import DELETE_MEMORY, FINAL_ANSWER, INVALID, MODIFY_MEMORY
from atommem_jax.bench import parser as parser_bench
from atommem_jax.metrics.boxed import last_boxed
from atommem_jax.tools.tool_calls import REPAIR_MAX_CHARS, ToolCall, parse_tool_call

LONG = 100_000


def _check_ops(ops, num_shown):
  """What every parse must satisfy, however hostile the response."""
  deleted = []
  for op in ops:
    assert op.kind in range(len(protocol.KIND_NAMES)) and op.valid == (op.kind != INVALID)
    if op.kind in (MODIFY_MEMORY, DELETE_MEMORY):
      assert 1 <= op.target <= num_shown
    if op.kind == DELETE_MEMORY:
      deleted.append(op.target)
    if op.valid and op.kind != DELETE_MEMORY:
      assert op.text and op.text.strip() == op.text
    op.text.encode("utf-8")  # no lone surrogate reaches the memory
  assert len(deleted) == len(set(deleted))


# ---- the failures of the issue, reproduced first

def test_a_huge_memory_index_is_a_counted_invalid_op():
  # Before: ValueError from int() (more than 4300 digits), which ended the training run.
  ops = protocol.parse_response("<delete_memory>Memory " + "1" * 5000 + "</delete_memory><add_memory>x</add_memory>",
                                num_shown=3)
  assert [(op.name, op.valid) for op in ops] == [("invalid", False), ("add_memory", True)]
  assert ops[0].reason == "Memory 111111111111111111... (5000 digits) is not among the 3 shown entries"
  (op,) = protocol.parse_response("<modify_memory>Memory " + "0" * 5000 + "2: new</modify_memory>", num_shown=3)
  assert (op.name, op.target, op.text) == ("modify_memory", 2, "new")  # leading zeros are only zeros
  (op,) = protocol.parse_response("<delete_memory>Memory 4</delete_memory>", num_shown=3)
  assert op.reason == "Memory 4 is not among the 3 shown entries"  # the short message as before


def test_repeated_open_boxes_give_no_answer_and_an_earlier_closed_box_still_counts():
  # Before: 30 s for 12,000 `\boxed{` (quadratic).
  (op,) = protocol.parse_response("<final_answer>" + "\\boxed{" * 12_000 + "</final_answer>", num_shown=0)
  assert (op.name, op.reason) == ("invalid", "final_answer without a balanced \\boxed{}")
  (op,) = protocol.parse_response("<final_answer>\\boxed{Oslo} " + "\\boxed{" * 12_000 + "</final_answer>", 0)
  assert (op.name, op.text) == ("final_answer", "Oslo")


@pytest.mark.parametrize("response, expected", [
    ("<add_memory>" * 20_000, [("invalid", False)] * 20_000),
    ("<a>" * 30_000, []),  # unpaired unknown tags are plain text
    ("<a>" * 30_000 + "</a>", [("invalid", False)]),  # the first `<a>` pairs with the only `</a>`
    ("".join(f"<t{i}>" for i in range(10_000)) + "</t9999>", [("invalid", False)]),
    ("<think>" * 20_000 + "<add_memory>x</add_memory>", []),  # an unclosed think runs to the end
    ("<add_memory>" + "x" * LONG + "</add_memory>", [("add_memory", True)]),
    ("<add_memory><update_query>" * 5_000, [("invalid", False)] * 10_000),
    ("<final_answer>" + "{" * LONG + "\\boxed{Oslo}", [("invalid", False)]),
    ("<final_answer>\\boxed{" + "{" * LONG + "}" * LONG + "}</final_answer>", [("final_answer", True)]),
])
def test_long_hostile_responses(response, expected):
  ops = protocol.parse_response(response, num_shown=2)
  assert [(op.name, op.valid) for op in ops] == expected
  _check_ops(ops, 2)


def test_lone_surrogates_are_read_as_replacement_characters():
  ops = protocol.parse_response("<add_memory>caf\udce9 \ud800</add_memory>\udfff<update_query>q\ud83d</update_query>",
                                num_shown=0)
  assert [(op.name, op.text) for op in ops] == [("add_memory", "caf\ufffd \ufffd"), ("update_query", "q\ufffd")]
  parsed = parse_tool_call('<tool_call>{"name": "search\\ud800", "arguments": {}}</tool_call>')
  assert parsed.call is None and parsed.reasons == ("tool call name or arguments cannot be sent "
                                                    "(UnicodeEncodeError)",)


def test_non_strings_are_counted_not_raised():
  assert [op.reason for op in protocol.parse_response(None, 2)] == ["the response is a NoneType, not a string"]
  assert [op.reason for op in protocol.parse_response(b"<add_memory>x</add_memory>", 2)] == [
      "the response is a bytes, not a string"]


def test_bodies_the_repair_is_slow_on_are_not_handed_to_it():
  # Before: json_repair took 13 s on 2,000 characters of `a{]` (quadratic), 70 s on 4,000 of `'{]`, 51 s on 4,096
  # of `{\uea}[]`, 4 s on 1,024 of `{1}`.
  for unit in ("a{]", "'{]", "{]", '"{]', "{\\uea}[]", "{1}", "{a}\\,"):
    parsed = parse_tool_call("<tool_call>" + (unit * REPAIR_MAX_CHARS)[:REPAIR_MAX_CHARS] + "</tool_call>")
    assert parsed.call is None and parsed.reasons == ("tool call is not JSON and could not be repaired",)
  # What the repair is for still works: missing closers, single quotes, brackets inside strings.
  assert parse_tool_call("<tool_call>{'name': 'search', 'arguments': {'query': 'a ] b'").call == \
      ToolCall("search", {"query": "a ] b"})
  assert parse_tool_call('<tool_call>{"name": "search", "arguments": {"query": "x\\"}]"').call == \
      ToolCall("search", {"query": 'x"}]'})


# ---- the linear readings agree with the straightforward ones

_TAGGY = st.lists(st.sampled_from(["<a>", "</a>", "<b>", "</b>", "<ab>", "</ab>", "<_1>", "</_1>", "<", ">", "/", "a",
                                   " ", "<a", "a>", "</", "<<a>>", "\n"]), max_size=40).map("".join)
_BOXY = st.lists(st.sampled_from(["\\boxed{", "{", "}", "x", "\\", "boxed", "\\boxed", " ", "\\boxed{}"]),
                 max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(_TAGGY)
@example("<a><a></a></a>")
@example("<a><b></a></b>")
def test_paired_tags_find_what_the_backreference_regex_finds(text):
  assert protocol.paired_tags(text) == parser_bench.reference_paired_tags(text)


@settings(max_examples=400, deadline=None)
@given(_BOXY)
@example("\\boxed{a}\\boxed{b")
@example("\\boxed{a\\boxed{b}")
@example("}\\boxed{{}}}")
def test_last_boxed_finds_what_rfind_and_a_brace_count_find(text):
  assert last_boxed(text) == parser_bench.reference_last_boxed(text)


# ---- fuzz: long adversarial responses built from hostile fragments

_FRAGMENTS = ([f"<{name}>" for name in protocol.TAG_KINDS] + [f"</{name}>" for name in protocol.TAG_KINDS]
              + ["<think>", "</think>", "<x>", "</x>", "<tool_call>", "</tool_call>", "Memory ", "Memory 1:",
                 "Memory 2", "9" * 60, "0" * 10, "\\boxed{", "{", "}", "[", "]", ":", '"', "'", "\\", "\ud800",
                 "\udc00", "\U0001f600", " ", "\n", '{"name": "search", "arguments": {"query": "', "```", "NaN",
                 "<", ">", "/", "a"])


def _long_response(rng: random.Random, length: int) -> str:
  unit = "".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(1, 8)))
  if rng.random() < 0.5:  # a pattern repeated: the shape that makes a quadratic scan show
    return (unit * (length // len(unit) + 1))[:length]
  parts, size = [], 0
  while size < length:
    parts.append(rng.choice(_FRAGMENTS) if rng.random() < 0.9 else "y" * rng.randint(1, 2000))
    size += len(parts[-1])
  return "".join(parts)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(LONG // 2, LONG), st.integers(0, 6))
def test_fuzz_long_adversarial_responses(seed, length, num_shown):
  response = _long_response(random.Random(seed), length)
  ops = protocol.parse_response(response, num_shown)
  _check_ops(ops, num_shown)
  for op in ops:
    if op.kind == FINAL_ANSWER and op.valid:  # the answer is the last balanced box of its body, as the reward reads
      assert op.text == op.text.strip() and op.text.count("{") == op.text.count("}")
  parsed = parse_tool_call(response)
  assert len(parsed.remainder) == len(response) and parsed.num_invalid == len(parsed.reasons)
  if parsed.call is not None:
    json.dumps(parsed.call.as_dict(), allow_nan=False, ensure_ascii=False).encode("utf-8")  # sendable
  # Tags the tool-call parser blanks out are gone for the memory parser too; its ops are still well formed.
  _check_ops(protocol.parse_response(parsed.remainder, num_shown), num_shown)
