"""The tool call in a response, in Qwen's format: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.

At most one call runs per response. `parse_tool_call(response)` never raises and runs in time linear in the
response's length:

- `<think>...</think>` blocks are reasoning and are ignored (an unclosed `<think>` runs to the end), as in
  `agent.protocol`.
- The first `<tool_call>` opens the call; its body runs to the next `</tool_call>`, or to the next `<tool_call>`,
  or to the end of the response (generation stopped on `</tool_call>`, so a missing closing tag at the end is the
  common case, not an error). A body ended by another `<tool_call>` is unclosed: one invalid op.
- Each further `<tool_call>` and each stray `</tool_call>` is one invalid op; only the first call runs.
- The body, with Markdown code fences around it dropped, must be a JSON object with a non-empty string `name` and
  an object `arguments` (absent means `{}`; a JSON string holding an object, as OpenAI-style APIs send it, is
  accepted). Broken JSON is repaired in this order, each step a well-known one: strict `json.loads`; the object
  followed by trailing text, or read from the first `{` after leading text (`JSONDecoder.raw_decode`); then
  `json_repair` (missing braces or quotes, single quotes, trailing commas, comments) on the body from its first `{`.
  `json_repair` is super-linear on many inputs (deep nesting, mismatched brackets, backslashes outside strings,
  several objects in a row), so it only sees a body of at most `REPAIR_MAX_CHARS` characters that is one object,
  perhaps unfinished: outside strings its brackets nest at most `REPAIR_MAX_DEPTH` deep, close in order and end with
  the object, with no backslash (`_repairable`). Any other body that strict parsing rejects is invalid.
- The name and arguments must survive the trip to the server: JSON-encodable without NaN / infinity and
  UTF-8-encodable (no lone surrogates); otherwise the call is invalid.

`ToolCallParse.remainder` is the response with every tool-call tag and body blanked to spaces (same length, so
offsets stay valid), which is what the memory-tag parser (`agent.protocol.parse_response`) should read.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import json_repair

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"
REPAIR_MAX_CHARS = 1024
REPAIR_MAX_DEPTH = 16

_TAG_RE = re.compile(r"<(/?)tool_call>")
_THINK_RE = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL)
_STRUCTURE_RE = re.compile(r"[\"'\\{}\[\]]")  # what `_repairable` looks at: quotes, backslashes, brackets
_OPENER = {"}": "{", "]": "["}


@dataclasses.dataclass(frozen=True)
class ToolCall:
  """A call as the model wrote it: the tool's name and its JSON-object arguments."""

  name: str
  arguments: dict[str, Any]

  def as_dict(self) -> dict[str, Any]:
    return {"name": self.name, "arguments": self.arguments}


@dataclasses.dataclass(frozen=True)
class ToolCallParse:
  """What one response asked for.

  Attributes:
    call: the call to run, or None (no call, or the first call was invalid).
    num_invalid: invalid ops: an unusable first call, extra calls, stray closing tags.
    repaired: the call's JSON needed a repair (trailing text, a missing brace, single quotes, ...).
    reasons: one message per invalid op, in order.
    remainder: the response with tool-call tags and bodies replaced by spaces (same length).
  """

  call: ToolCall | None
  num_invalid: int = 0
  repaired: bool = False
  reasons: tuple[str, ...] = ()
  remainder: str = ""


def _strip_fence(body: str) -> str:
  """The body without a Markdown fence around it (```json ... ```); string operations keep it linear."""
  body = body.strip()
  if len(body) >= 6 and body.startswith("```") and body.endswith("```"):
    first_line_end = body.find("\n")
    info = body[3:first_line_end].strip() if first_line_end >= 0 else None
    if info is not None and (not info or info.isalnum()):
      return body[first_line_end + 1:-3].strip()
  return body


def _repairable(body: str) -> bool:
  """Whether `json_repair` may see `body`: one JSON object, possibly unfinished. It starts with `{`; outside strings
  there is no backslash, the brackets nest at most `REPAIR_MAX_DEPTH` deep, each closing bracket matches the open
  one (missing closers at the end are the repair's common case) and nothing bracketed or quoted follows the object's
  end. The library is super-linear on what this refuses: 13 s for 2,000 characters of `a{]`, 51 s for 4,096 of
  `{\\uea}[]`, 4 s for 1,024 of `{1}`. It is quadratic on some bodies it accepts too (`{"a": [` then `a"a":e"a":`
  repeated: 0.07 s at 1,024 characters, 1.1 s at 4,096), hence the small `REPAIR_MAX_CHARS`."""
  if len(body) > REPAIR_MAX_CHARS or not body.startswith("{"):
    return False
  open_brackets: list[str] = []
  quote, escaped_at, closed = "", -1, False
  for token in _STRUCTURE_RE.finditer(body):
    char = token.group()
    if quote:  # inside a string: only its end and escapes matter
      if token.start() == escaped_at:
        continue
      if char == "\\":
        escaped_at = token.end()
      elif char == quote:
        quote = ""
    elif closed or char == "\\":
      return False
    elif char in "\"'":
      quote = char
    elif char in "{[":
      open_brackets.append(char)
      if len(open_brackets) > REPAIR_MAX_DEPTH:
        return False
    elif not open_brackets or open_brackets.pop() != _OPENER[char]:
      return False
    else:
      closed = not open_brackets
  return True


def _decode(body: str) -> tuple[Any, bool] | None:
  """(value, repaired) for the first JSON value in `body`, or None. Never raises."""
  try:
    return json.loads(body), False
  except (ValueError, RecursionError):
    pass
  # The object with text after it, or (as a model may write "I will search: {...}") with text before it too.
  first_brace = body.find("{")
  for start in (0, first_brace) if first_brace > 0 else (0,):
    try:
      value, end = json.JSONDecoder().raw_decode(body, start)
      if isinstance(value, dict) and (start or end < len(body)):
        return value, True
    except (ValueError, RecursionError):
      pass
  body = body[max(first_brace, 0):]
  if not _repairable(body):
    return None
  try:
    value = json_repair.loads(body)
  except Exception:  # the library's own failure modes vary by version; any of them means "not repairable"
    return None
  return value, True


def _call_from_body(body: str) -> tuple[ToolCall | None, bool, str]:
  """(call, repaired, reason-if-invalid)."""
  body = _strip_fence(body)
  if not body:
    return None, False, "empty <tool_call>"
  decoded = _decode(body)
  if decoded is None:
    return None, False, "tool call is not JSON and could not be repaired"
  value, repaired = decoded
  if repaired and not isinstance(value, dict):  # json_repair turns plain prose into "" or a list
    return None, False, "tool call is not JSON and could not be repaired"
  if not isinstance(value, dict):
    return None, repaired, f"tool call is a JSON {type(value).__name__}, not an object"
  name = value.get("name")
  if not isinstance(name, str) or not name.strip():
    return None, repaired, "tool call has no string 'name'"
  arguments = value.get("arguments", {})
  if isinstance(arguments, str):
    try:
      arguments, repaired = json.loads(arguments), True
    except (ValueError, RecursionError):
      return None, repaired, "tool call 'arguments' is a string that is not a JSON object"
  if not isinstance(arguments, dict):
    return None, repaired, f"tool call 'arguments' is a {type(arguments).__name__}, not an object"
  try:
    json.dumps({"name": name, "arguments": arguments}, allow_nan=False, ensure_ascii=False).encode("utf-8")
  except (ValueError, TypeError, RecursionError, UnicodeEncodeError) as err:
    return None, repaired, f"tool call name or arguments cannot be sent ({type(err).__name__})"
  return ToolCall(name=name.strip(), arguments=arguments), repaired, ""


def parse_tool_call(response: str) -> ToolCallParse:
  """The response's tool call (see the module docstring); never raises."""
  if not isinstance(response, str):
    return ToolCallParse(call=None, num_invalid=1, reasons=("response is not a string",), remainder="")
  text = _THINK_RE.sub(lambda m: " " * len(m.group(0)), response)  # same length: offsets stay valid
  tags = list(_TAG_RE.finditer(text))  # one pass; the walk below visits each tag once
  if not tags:
    return ToolCallParse(call=None, remainder=response)
  chars = list(response)
  reasons: list[str] = []
  call, repaired, first_seen = None, False, False
  i = 0
  while i < len(tags):
    tag = tags[i]
    if tag.group(1):
      reasons.append("stray </tool_call>")
      chars[tag.start():tag.end()] = " " * (tag.end() - tag.start())
      i += 1
      continue
    following = tags[i + 1] if i + 1 < len(tags) else None
    if following is not None and following.group(1):
      body, end, closed, i = text[tag.end():following.start()], following.end(), True, i + 2
    elif following is not None:
      body, end, closed, i = "", following.start(), False, i + 1
    else:  # generation stopped at the closing tag: the call runs to the end
      body, end, closed, i = text[tag.end():], len(text), True, i + 1
    chars[tag.start():end] = " " * (end - tag.start())
    if first_seen:
      reasons.append("more than one <tool_call>; only the first runs")
      continue
    first_seen = True
    if not closed:
      reasons.append("<tool_call> is not closed before the next <tool_call>")
      continue
    call, repaired, reason = _call_from_body(body)
    if call is None:
      reasons.append(reason)
  return ToolCallParse(call=call, num_invalid=len(reasons), repaired=repaired and call is not None,
                       reasons=tuple(reasons), remainder="".join(chars))
