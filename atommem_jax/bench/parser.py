"""Parsing hostile responses: `python -m atommem_jax.bench parser --json [--sizes_kb 1,10,100]`.

For each family of responses (normal ones, and the hostile ones a sampled policy can write: boxes left open,
unclosed and nested tags, `Memory` indices of any length, lone surrogates, tool calls left open, brackets that do
not match) and each size: the best of a few timed parses of one response of that many KB by the memory-tag parser
(`agent.protocol.parse_response`) or the tool-call parser (`tools.tool_calls.parse_tool_call`), as milliseconds of
CPU time per KB. `growth` is a family's ms/KB at the largest size over its ms/KB at the smallest (about 1 when the time is linear
in the length, the size ratio when quadratic). The budget scales with the size: every family must parse within
`--budget_ms_per_kb` at every size and grow at most `--max_growth`; the one fixed cost, the slowest tool call
`json_repair` is handed (`SLOWEST_REPAIRABLE`, at `REPAIR_MAX_CHARS`), must stay within `--repair_budget_ms`;
`within_budget` says whether all did.

The alternative a user would pick is the straightforward reading these parsers replace: the regular expression
`<(NAME)>.*?</\\1>` for unknown paired tags and, for the answer, `rfind` of the last `\\boxed{` followed by a
brace count (the one-pass stack in `metrics.boxed.last_boxed` gives the same answer). `reference` times both at the
smallest sizes (they are quadratic: a 100 KB response takes minutes) and prints our time and theirs, with the ratio.
"""
from __future__ import annotations

import argparse
import re
import time
from typing import Callable

from atommem_jax.agent import protocol
from atommem_jax.metrics import boxed
from atommem_jax.tools import tool_calls

KB = 1024
BOX_OPEN = "\\boxed{"
_NORMAL_TURN = ("<think>The chunk names the director; the storage has nothing on her yet.</think>"
                "<add_memory>Ava Lund directed The Glass Road (1998).</add_memory>"
                "<update_memory>Looking for the director's birthplace.</update_memory>"
                "<modify_memory>Memory 1: The Glass Road premiered in Oslo.</modify_memory>"
                "<delete_memory>Memory 2</delete_memory><update_query>Ava Lund birthplace</update_query>"
                "<final_answer>The answer is \\boxed{Bergen}.</final_answer>\n")
_NORMAL_CALL = ('I will look it up. <tool_call>{"name": "search", "arguments": {"query": "Ava Lund birthplace"}}'
                '</tool_call>')


def _fill(unit: str, size: int) -> str:
  return (unit * (size // len(unit) + 1))[:size]


def _protocol(make: Callable[[int], str]) -> tuple[str, Callable[[int], str], Callable[[str], object]]:
  return "parse_response", make, lambda text: protocol.parse_response(text, num_shown=4)


def _tool_call(make: Callable[[int], str]) -> tuple[str, Callable[[int], str], Callable[[str], object]]:
  return "parse_tool_call", make, tool_calls.parse_tool_call


# family -> (parser, size -> response, parse)
FAMILIES = {
    "normal_turns": _protocol(lambda n: _fill(_NORMAL_TURN, n)),
    "open_boxes": _protocol(lambda n: "<final_answer>" + _fill(BOX_OPEN, n - 29) + "</final_answer>"),
    "open_unknown_tags": _protocol(lambda n: _fill("<a>", n)),
    "open_distinct_tags": _protocol(lambda n: "".join(f"<t{i}>" for i in range(n // 5))[:n]),
    "open_protocol_tags": _protocol(lambda n: _fill("<add_memory>", n)),
    "nested_protocol_tags": _protocol(lambda n: _fill("<add_memory><update_query><final_answer>\\boxed{", n)),
    "huge_index": _protocol(lambda n: "<delete_memory>Memory " + "1" * (n - 38) + "</delete_memory>"),
    "open_think": _protocol(lambda n: _fill("<think><add_memory>x</add_memory>", n)),
    "lone_surrogates": _protocol(lambda n: _fill("<add_memory>\ud800x\udfff</add_memory>", n)),
    "normal_calls": _tool_call(lambda n: _fill(_NORMAL_CALL, n)),
    "open_calls": _tool_call(lambda n: _fill("<tool_call>", n)),
    "deep_call": _tool_call(lambda n: "<tool_call>" + "[" * (n - 11)),
    "mismatched_brackets": _tool_call(
        lambda n: _fill("<tool_call>" + _fill("a{]", tool_calls.REPAIR_MAX_CHARS) + "</tool_call>", n)),
    "long_strict_call": _tool_call(
        lambda n: '<tool_call>{"name": "search", "arguments": {"query": "' + "w" * (n - 60) + '"}}</tool_call>'),
}


# ---- the straightforward reading, as the alternative

_PAIR_RE = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>.*?</\1>", re.DOTALL)


def reference_paired_tags(text: str) -> list[tuple[int, str]]:
  """Unknown paired tags by one backreferencing regex (re-scans to the end for every tag left open)."""
  return [(match.start(), match.group(1)) for match in _PAIR_RE.finditer(text)]


def reference_last_boxed(text: str) -> str | None:
  """The last balanced box by `rfind` and a brace count from each box (re-scans to the end for every open box)."""
  start = text.rfind(BOX_OPEN)
  while start >= 0:
    depth = 1
    for pos in range(start + len(BOX_OPEN), len(text)):
      depth += {"{": 1, "}": -1}.get(text[pos], 0)
      if depth == 0:
        return text[start + len(BOX_OPEN):pos]
    start = text.rfind(BOX_OPEN, 0, start)
  return None


def _best_seconds(parse: Callable[[str], object], text: str, min_total_s: float = 0.3, max_repeats: int = 30) -> float:
  """The least CPU time of this process over a few parses: on a shared machine the wall time of a long parse is
  mostly other processes' turns, which would pass for super-linear growth."""
  best, spent, repeats = float("inf"), 0.0, 0
  while repeats < max_repeats and (repeats < 3 or spent < min_total_s):
    start = time.process_time()
    parse(text)
    elapsed = time.process_time() - start
    best, spent, repeats = min(best, elapsed), spent + elapsed, repeats + 1
  return max(best, 1e-6)


def _reference(sizes: list[int]) -> dict:
  rows = {}
  for name, ours, theirs, make in (
      ("open_boxes", boxed.last_boxed, reference_last_boxed, lambda n: _fill(BOX_OPEN, n)),
      ("open_unknown_tags", protocol.paired_tags, reference_paired_tags, lambda n: _fill("<a>", n))):
    for size in sizes:
      text = make(size * KB)
      assert ours(text) == theirs(text), name  # the same answer, only faster
      ours_s, theirs_s = _best_seconds(ours, text), _best_seconds(theirs, text, max_repeats=2)
      rows[f"{name}_{size}kb"] = {"ours_ms": round(ours_s * 1e3, 3), "reference_ms": round(theirs_s * 1e3, 3),
                                  "speedup": round(theirs_s / ours_s, 1)}
  return rows


# The slowest body found for `json_repair` among those `tool_calls` hands it (seeded random soups), at the size cap:
# a fixed cost per response, however long the response.
SLOWEST_REPAIRABLE = '<tool_call>{"a": [' + _fill('a"a":e"a":', tool_calls.REPAIR_MAX_CHARS - 7)


def _flags(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m atommem_jax.bench parser")
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--sizes_kb", default="1,10,100", help="response sizes in KB, smallest first")
  parser.add_argument("--reference_sizes_kb", default="1,4", help="sizes at which the quadratic reference runs")
  parser.add_argument("--budget_ms_per_kb", type=float, default=2.0, help="the most a KB may take, at any size")
  parser.add_argument("--max_growth", type=float, default=3.0, help="the most ms/KB may grow, smallest to largest")
  parser.add_argument("--repair_budget_ms", type=float, default=150.0,
                      help="the most the slowest repairable tool call may take")
  return parser.parse_args(argv)


def run(argv: list[str]) -> dict:
  flags = _flags(argv)
  sizes = sorted(int(s) for s in flags.sizes_kb.split(","))
  families, within = {}, True
  for name, (parser, make, parse) in FAMILIES.items():
    per_kb = {}
    for size in sizes:
      text = make(size * KB)
      per_kb[f"{size}kb"] = round(_best_seconds(parse, text) * 1e3 / (len(text) / KB), 4)
    growth = per_kb[f"{sizes[-1]}kb"] / max(per_kb[f"{sizes[0]}kb"], 1e-6)
    ok = growth <= flags.max_growth and max(per_kb.values()) <= flags.budget_ms_per_kb
    within &= ok
    families[name] = {"parser": parser, "ms_per_kb": per_kb, "growth": round(growth, 2), "within_budget": ok}
  repair_ms = _best_seconds(tool_calls.parse_tool_call, SLOWEST_REPAIRABLE) * 1e3
  within &= repair_ms <= flags.repair_budget_ms
  return {"sizes_kb": sizes, "budget_ms_per_kb": flags.budget_ms_per_kb, "max_growth": flags.max_growth,
          "families": families, "slowest_repairable_call_ms": round(repair_ms, 1),
          "repair_budget_ms": flags.repair_budget_ms, "within_budget": within,
          "reference": _reference(sorted(int(s) for s in flags.reference_sizes_kb.split(",")))}
