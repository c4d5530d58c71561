"""The tool-call parser: Qwen's format, the repairs it applies, what it refuses, and that it never raises."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atommem_jax.tools.tool_calls import REPAIR_MAX_CHARS, ToolCall, parse_tool_call


def call_text(name="search", **arguments):
  return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def test_valid_call_among_memory_tags():
  response = ("<add_memory>fact</add_memory>\n" + call_text(query="who founded Rativo")
              + "\n<update_query>q</update_query>")
  parsed = parse_tool_call(response)
  assert parsed.call == ToolCall("search", {"query": "who founded Rativo"})
  assert parsed.num_invalid == 0 and not parsed.repaired
  # The remainder keeps every memory tag and offsets, and holds no tool-call text.
  assert len(parsed.remainder) == len(response)
  assert "<add_memory>fact</add_memory>" in parsed.remainder and "<update_query>q</update_query>" in parsed.remainder
  assert "tool_call" not in parsed.remainder and "Rativo" not in parsed.remainder


def test_no_call():
  parsed = parse_tool_call("<final_answer>\\boxed{Tesuna}</final_answer>")
  assert parsed.call is None and parsed.num_invalid == 0 and parsed.remainder.startswith("<final_answer>")


@pytest.mark.parametrize("body, expected", [
    ('{"name": "search", "arguments": {"query": "abc"', ToolCall("search", {"query": "abc"})),  # missing braces
    ("{'name': 'fetch_url', 'arguments': {'url': 'https://a.b/c'}}", ToolCall("fetch_url", {"url": "https://a.b/c"})),
    ('{"name": "search", "arguments": {"query": "x"}} I will now wait.', ToolCall("search", {"query": "x"})),
    ('{"name": "search", "arguments": {"query": "x",},}', ToolCall("search", {"query": "x"})),  # trailing commas
    ('```json\n{"name": "search", "arguments": {"query": "x"}}\n```', ToolCall("search", {"query": "x"})),
    ('{"name": "search", "arguments": "{\\"query\\": \\"x\\"}"}', ToolCall("search", {"query": "x"})),
])
def test_repairs(body, expected):
  parsed = parse_tool_call(f"<tool_call>{body}</tool_call>")
  assert parsed.call == expected and parsed.num_invalid == 0
  assert parsed.repaired == (not body.startswith("```"))


def test_fenced_strict_json_is_not_a_repair():
  parsed = parse_tool_call('<tool_call>```\n{"name": "s", "arguments": {}}\n```</tool_call>')
  assert parsed.call == ToolCall("s", {}) and not parsed.repaired


def test_missing_arguments_means_empty():
  assert parse_tool_call('<tool_call>{"name": "list"}</tool_call>').call == ToolCall("list", {})


def test_unclosed_call_at_end_runs():
  # Generation that stops on </tool_call> leaves the closing tag out.
  parsed = parse_tool_call('I will search.\n<tool_call>\n{"name": "search", "arguments": {"query": "x"}}\n')
  assert parsed.call == ToolCall("search", {"query": "x"}) and parsed.num_invalid == 0
  assert parsed.remainder.startswith("I will search.") and "search\"" not in parsed.remainder


@pytest.mark.parametrize("body, reason", [
    ("not json at all", "could not be repaired"),
    ("", "empty"),
    ("[1, 2]", "not an object"),
    ('{"arguments": {"q": 1}}', "no string 'name'"),
    ('{"name": "  ", "arguments": {}}', "no string 'name'"),
    ('{"name": "s", "arguments": [1]}', "not an object"),
    ('{"name": "s", "arguments": "not an object"}', "not a JSON object"),
    ('{"name": "s", "arguments": {"x": NaN}}', "cannot be sent"),
    ('{"name": "s", "arguments": {"x": "\\ud800"}}', "cannot be sent"),
    ('{"name": "s", "arguments": {"x": 1' + "9" * 5000 + "}}", "could not be repaired"),  # past int digit limit
])
def test_invalid_bodies_are_one_counted_op(body, reason):
  parsed = parse_tool_call(f"<tool_call>{body}</tool_call>")
  assert parsed.call is None and parsed.num_invalid == 1
  assert reason in parsed.reasons[0]


def test_only_the_first_call_runs_extra_calls_and_stray_tags_count():
  response = call_text(query="a") + call_text("fetch_url", url="u") + "</tool_call>"
  parsed = parse_tool_call(response)
  assert parsed.call == ToolCall("search", {"query": "a"})
  assert parsed.num_invalid == 2
  assert parsed.reasons == ("more than one <tool_call>; only the first runs", "stray </tool_call>")
  assert parsed.remainder.strip() == ""


def test_call_cut_by_a_second_open_tag_is_invalid():
  parsed = parse_tool_call('<tool_call>{"name": "search"' + call_text(query="b"))
  assert parsed.call is None and parsed.num_invalid == 2
  assert "not closed" in parsed.reasons[0]


def test_calls_inside_think_are_ignored():
  parsed = parse_tool_call("<think>maybe " + call_text(query="a") + "</think>" + call_text(query="b"))
  assert parsed.call == ToolCall("search", {"query": "b"}) and parsed.num_invalid == 0
  assert parse_tool_call("<think>never closed " + call_text(query="a")).call is None


def test_repair_is_bounded_but_strict_json_of_any_size_parses():
  long_query = "word " * (REPAIR_MAX_CHARS // 2)
  assert parse_tool_call(call_text(query=long_query)).call == ToolCall("search", {"query": long_query})
  broken = '{"name": "search", "arguments": {"query": "' + long_query  # needs repair, and too long for it
  parsed = parse_tool_call(f"<tool_call>{broken}</tool_call>")
  assert parsed.call is None and parsed.num_invalid == 1
  deep = "{'name': 'search', 'arguments': " + "{'a': " * 40 + "1" + "}" * 40  # too deep for the repair
  assert parse_tool_call(f"<tool_call>{deep}</tool_call>").call is None


def test_non_string_input_is_counted_not_raised():
  assert parse_tool_call(None).num_invalid == 1  # type: ignore[arg-type]


FRAGMENTS = st.sampled_from(["<tool_call>", "</tool_call>", "<think>", "</think>", "{", "}", "[", "]", '"', "'",
                             ":", ",", '"name"', '"arguments"', "search", "\\", "\\ud800", "1e999", "9" * 50,
                             "NaN", "```", "\n", " ", "<add_memory>", "null", "true"])


@given(st.text())
def test_never_raises_on_arbitrary_text(text):
  parsed = parse_tool_call(text)
  assert len(parsed.remainder) == len(text)
  assert parsed.num_invalid == len(parsed.reasons)


@given(st.lists(FRAGMENTS | st.text(max_size=5), max_size=60))
def test_never_raises_on_tag_and_json_soup(parts):
  text = "".join(parts)
  parsed = parse_tool_call(text)
  assert len(parsed.remainder) == len(text)
  if parsed.call is not None:
    assert isinstance(parsed.call.name, str) and parsed.call.name
    json.dumps(parsed.call.arguments, allow_nan=False).encode("utf-8")  # sendable


@settings(max_examples=25, deadline=None)
@given(st.lists(FRAGMENTS, min_size=1, max_size=8), st.integers(100_000, 120_000))
def test_long_adversarial_inputs(pattern, length):
  unit = "".join(pattern)
  text = (unit * (length // len(unit) + 1))[:length]
  for candidate in (text, "<tool_call>" + text, "<tool_call>{'name': 'x', 'arguments': " + text):
    parsed = parse_tool_call(candidate)
    assert len(parsed.remainder) == len(candidate)


@pytest.mark.parametrize("text", [
    "<tool_call>" * 10_000,
    "</tool_call>" * 10_000,
    "<tool_call>" + "{" * 100_000,
    "<tool_call>" + "[" * 100_000 + "</tool_call>",
    "<tool_call>{'" * 20_000,
    '<tool_call>{"name": "s", "arguments": {"x": ' + "9" * 100_000 + "}}</tool_call>",
    '<tool_call>{"name": "s", "arguments": {"x": 1.' + "9" * 100_000 + "}}</tool_call>",
    "<think>" + "<tool_call>" * 10_000,
    "<tool_call>```" + " " * 100_000 + "```",
    "<tool_call>" + "\ud800" * 100_000,
])
def test_pathological_inputs(text):
  parsed = parse_tool_call(text)
  assert len(parsed.remainder) == len(text)


@given(st.dictionaries(st.text(min_size=1, max_size=10),
                       st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=20),
                                    lambda inner: st.lists(inner, max_size=3) |
                                    st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8),
                       max_size=4),
       st.text(alphabet=st.characters(blacklist_characters="<"), max_size=30))
def test_any_valid_call_round_trips(arguments, prose):
  try:
    json.dumps(arguments).encode("utf-8")
  except UnicodeEncodeError:
    return  # lone surrogates are refused; covered above
  parsed = parse_tool_call(prose + call_text("fetch_url", **{}).replace("{}", json.dumps(arguments)) + prose)
  assert parsed.call == ToolCall("fetch_url", arguments) and parsed.num_invalid == 0
