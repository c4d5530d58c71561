"""The AtomMem text protocol: parsing a response into ops, and rendering observations from template files.

Response grammar (what `parse_response` accepts)
-------------------------------------------------
A response is free text with protocol tags. Tags are exact, lower-case and paired:

  op            := '<' NAME '>' BODY '</' NAME '>'
  NAME          := update_memory | update_query | add_memory | modify_memory | delete_memory | final_answer
  update_memory := BODY                                  scratchpad := strip(BODY)
  update_query  := BODY                                  query := strip(BODY)             (a Read)
  add_memory    := BODY                                  new storage entry strip(BODY)    (a Create)
  modify_memory := ws* 'Memory' ws+ INT ws* ':' TEXT    entry shown as Memory INT := strip(TEXT)   (an Update)
  delete_memory := ws* 'Memory' ws+ INT ws*             entry shown as Memory INT is removed       (a Delete)
  final_answer  := ... '\\boxed{' BALANCED '}' ...       answer := strip(BALANCED) of the last balanced \\boxed{}

Scanning rules, applied left to right:
- `<think>...</think>` blocks are reasoning and are removed first; an unclosed `<think>` runs to the end of the
  response (the model ran out of tokens while thinking), so nothing after it is parsed.
- Text outside tags is ignored.
- An opening protocol tag whose next protocol tag is not its own closing tag (unclosed, or another tag opened
  inside it: nesting) is one invalid op; scanning resumes at that next tag, so the inner tag can still be valid.
- A stray closing protocol tag is one invalid op.
- A paired tag `<x>...</x>` whose name is not a protocol tag (and not `think`) is one invalid op ("unknown tag");
  unpaired unknown `<x>` is plain text.
- An empty (whitespace-only) body, a `Memory i` that does not parse, an `i` outside 1..shown (the number of entries
  shown in this turn's observation; an `i` of any number of digits is read), a target already deleted earlier in the
  same response, a `\\boxed{}` that is missing, unbalanced or empty: each makes that op invalid. (The answer is the
  last balanced box, as the reward reads it: `metrics.boxed.last_boxed`.)
- A lone surrogate (a code point that is no Unicode character; a decoded token sequence never holds one) is read as
  U+FFFD, so every op's text can be encoded and embedded.

Parsing never raises and takes time linear in the response's length (`python -m atommem_jax.bench parser` measures
it), whatever the response: unclosed and nested tags, boxes left open, indices of any length.

Op type names (used in trajectories and by `python -m atommem_jax.replay`): `update_memory, update_query, add_memory,
modify_memory, delete_memory, final_answer, invalid`. A part that does not parse is type `invalid`. A well-formed op
that the run refuses (an op disabled by an ablation, a Read beyond the query limit, an op after the episode ended)
keeps its own type and is reported with `valid: false`.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import pathlib
import re
import string
from typing import Any, Mapping, Sequence

from atommem_jax import op_table
from atommem_jax.metrics.boxed import last_boxed

# Op kinds as small ints (the environment and the jitted rollout carry these, the host carries the names), all from
# the op table.
INVALID = op_table.INVALID
UPDATE_MEMORY = op_table.UPDATE_MEMORY  # scratchpad write
UPDATE_QUERY = op_table.UPDATE_QUERY  # Read
ADD_MEMORY = op_table.ADD_MEMORY  # Create
MODIFY_MEMORY = op_table.MODIFY_MEMORY  # Update
DELETE_MEMORY = op_table.DELETE_MEMORY  # Delete
FINAL_ANSWER = op_table.FINAL_ANSWER
KIND_NAMES = op_table.KIND_NAMES
TAG_KINDS = op_table.TAG_KINDS

_PROTOCOL_TAG_RE = re.compile(r"<(/?)(" + "|".join(TAG_KINDS) + r")>")
_THINK_RE = re.compile(f"<{op_table.THINK}>.*?(</{op_table.THINK}>|\\Z)", re.DOTALL)
_OPEN_NAME_RE = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>")
_CLOSE_NAME_RE = re.compile(r"</([A-Za-z_][A-Za-z0-9_]*)>")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# A target past this many digits is out of range whatever is shown; `int()` of it would be slow, or refused.
_MAX_TARGET_DIGITS = 18
_MODIFY_RE = re.compile(r"\s*Memory\s+(\d+)\s*:(.*)\Z", re.DOTALL)
_DELETE_RE = re.compile(r"\s*Memory\s+(\d+)\s*\Z")


@dataclasses.dataclass(frozen=True)
class Op:
  """One parsed op. `target` is the 1-based "Memory i" for modify/delete (0 otherwise)."""

  kind: int
  text: str = ""
  target: int = 0
  valid: bool = True
  reason: str = ""

  @property
  def name(self) -> str:
    return KIND_NAMES[self.kind]

  def refused(self, reason: str) -> "Op":
    return dataclasses.replace(self, valid=False, reason=reason)


def _invalid(reason: str, text: str = "") -> Op:
  return Op(kind=INVALID, text=text, valid=False, reason=reason)


def _parse_body(kind: int, body: str, num_shown: int, deleted: set[int]) -> Op:
  grammar = op_table.BY_KIND[kind].body
  if not body.strip():
    return _invalid(f"empty <{KIND_NAMES[kind]}>")
  if grammar == "text":
    return Op(kind=kind, text=body.strip())
  if grammar == "boxed":
    answer = last_boxed(body)
    if answer is None:
      return _invalid(f"{KIND_NAMES[kind]} without a balanced \\boxed{{}}", body)
    if not answer.strip():
      return _invalid("empty \\boxed{}", body)
    return Op(kind=kind, text=answer.strip())
  match = (_MODIFY_RE if grammar == "target_text" else _DELETE_RE).match(body)
  if match is None:
    form = "Memory i: TEXT" if grammar == "target_text" else "Memory i"
    return _invalid(f"<{KIND_NAMES[kind]}> body is not '{form}'", body)
  digits = match.group(1).lstrip("0") or "0"
  if len(digits) > _MAX_TARGET_DIGITS:
    return _invalid(f"Memory {digits[:_MAX_TARGET_DIGITS]}... ({len(digits)} digits) is not among the {num_shown} "
                    f"shown entries", body)
  target = int(digits)
  if not 1 <= target <= num_shown:
    return _invalid(f"Memory {target} is not among the {num_shown} shown entries", body)
  if target in deleted:
    return _invalid(f"Memory {target} was already deleted in this response", body)
  if grammar == "target":
    deleted.add(target)
    return Op(kind=kind, target=target)
  text = match.group(2).strip()
  if not text:
    return _invalid(f"empty text for Memory {target}", body)
  return Op(kind=kind, text=text, target=target)


def strip_think(response: str) -> str:
  """The response without its `<think>` blocks (an unclosed one runs to the end)."""
  return _THINK_RE.sub(" ", response)


def parse_response(response: str, num_shown: int) -> list[Op]:
  """Ops in the order written (see the module docstring for the grammar); never raises, and takes time linear in
  the response's length."""
  if not isinstance(response, str):
    return [_invalid(f"the response is a {type(response).__name__}, not a string")]
  text = strip_think(_SURROGATE_RE.sub("\ufffd", response))
  ops: list[tuple[int, Op]] = []  # (position, op) so unknown-tag ops interleave in order
  deleted: set[int] = set()
  tags = list(_PROTOCOL_TAG_RE.finditer(text))
  i = 0
  while i < len(tags):
    tag = tags[i]
    closing, name = tag.group(1) == "/", tag.group(2)
    if closing:
      ops.append((tag.start(), _invalid(f"stray </{name}>")))
      i += 1
      continue
    following = tags[i + 1] if i + 1 < len(tags) else None
    if following is None or following.group(1) != "/" or following.group(2) != name:
      ops.append((tag.start(), _invalid(f"<{name}> is not closed before the next tag")))
      i += 1
      continue
    ops.append((tag.start(), _parse_body(TAG_KINDS[name], text[tag.end():following.start()], num_shown, deleted)))
    i += 2
  # Unknown paired tags are found in the text with protocol ops blanked out, so `<x>` inside a body is body text.
  pieces, kept_from = [], 0
  for tag_a, tag_b in _protocol_spans(tags):
    pieces += [text[kept_from:tag_a], " " * (tag_b - tag_a)]
    kept_from = tag_b
  pieces.append(text[kept_from:])
  for start, name in paired_tags("".join(pieces)):
    if name != op_table.THINK:
      ops.append((start, _invalid(f"unknown tag <{name}>")))
  return [op for _, op in sorted(ops, key=lambda pair: pair[0])]


def paired_tags(text: str) -> list[tuple[int, str]]:
  """(start, name) of each `<name>...</name>`, as `re.finditer(r"<(NAME)>.*?</\\1>", text, re.DOTALL)` finds them
  (leftmost first, each closed by the first `</name>` after it, no overlaps), in linear time: that regex would scan
  to the end once for every `<name>` left open."""
  closing: dict[str, list[int]] = {}
  for match in _CLOSE_NAME_RE.finditer(text):
    closing.setdefault(match.group(1), []).append(match.start())
  passed: dict[str, int] = {}  # per name: how many of its closing tags lie before the last opening tag seen
  pairs, resume = [], 0
  for match in _OPEN_NAME_RE.finditer(text):
    if match.start() < resume:  # inside the pair found last
      continue
    name, positions = match.group(1), closing.get(match.group(1), ())
    k = passed.get(name, 0)
    while k < len(positions) and positions[k] < match.end():
      k += 1
    passed[name] = k
    if k < len(positions):
      pairs.append((match.start(), name))
      resume = positions[k] + len(name) + 3  # past `</name>`
  return pairs


def _protocol_spans(tags: Sequence[re.Match]) -> list[tuple[int, int]]:
  """Character spans covered by paired protocol ops (and by lone protocol tags)."""
  spans, i = [], 0
  while i < len(tags):
    tag = tags[i]
    following = tags[i + 1] if i + 1 < len(tags) else None
    if (tag.group(1) == "" and following is not None and following.group(1) == "/"
        and following.group(2) == tag.group(2)):
      spans.append((tag.start(), following.end()))
      i += 2
    else:
      spans.append((tag.start(), tag.end()))
      i += 1
  return spans


def disable_ops(ops: Sequence[Op], disabled_kinds: Sequence[int]) -> list[Op]:
  """Ablations: ops of a disabled kind become counted invalid no-ops that keep their type name."""
  return [op.refused(f"{op.name} is disabled") if op.valid and op.kind in disabled_kinds else op for op in ops]


# ----------------------------------------------------------------------------------------------------------------
# Observations
# ----------------------------------------------------------------------------------------------------------------

# Each view's file and the placeholders it may use (a template may leave any of them out): the long-context
# reader's; another environment loads its own table. Every value the released prompt shows has one:
#   questions        every question, numbered, the current one marked
#   question         the current question; question_number / num_questions: its 1-based number, how many in all
#   scratchpad, query, memories   the memory ("Memory i: ..." lines, or the no-memory marker)
#   chunk, chunk_number, num_chunks   the chunk read this turn
#   reads_in_a_row   Reads (query updates) made in a row so far; query_limit: how many in a row are allowed
#   memory           MemAgent's one memory; chunks: RAG's retrieved passages; context: the full-context cut
_QUESTION = ("question", "question_number", "num_questions")
_CHUNK = ("chunk", "chunk_number", "num_chunks")
_ATOMMEM_MEMORY = ("scratchpad", "query", "memories", "reads_in_a_row", "query_limit")
TEMPLATE_FIELDS = {
    "system": (),
    "baseline_system": (),
    "read": ("questions", *_QUESTION, *_ATOMMEM_MEMORY, *_CHUNK),
    "answer": ("questions", *_QUESTION, *_ATOMMEM_MEMORY),
    "memagent_read": ("questions", *_QUESTION, "memory", *_CHUNK),
    "memagent_answer": (*_QUESTION, "memory"),
    "rag_answer": (*_QUESTION, "chunks"),
    "full_context_answer": (*_QUESTION, "context"),
}
# Packaged variants of our wording, each a subdirectory of `templates/` holding the files it changes.
# "compact": a one-paragraph system prompt (about 60 tokens instead of 250) for small models with short contexts.
# "released": our wording showing every value the released prompt shows, the reads in a row included.
PACKAGED_VARIANTS = ("compact", "released")


@dataclasses.dataclass(frozen=True)
class Templates:
  """Prompt wording, one `string.Template` file per view (`${name}` placeholders), from a directory."""

  texts: dict[str, str]
  directory: str

  @classmethod
  def load(cls, directory: str | None = None,
           fields: Mapping[str, Sequence[str]] = TEMPLATE_FIELDS) -> "Templates":
    """Our packaged templates (`directory` "" or None), a packaged variant by name (`PACKAGED_VARIANTS`), or a
    user's directory holding every file (`NAME.txt`); `fields` names the files and the placeholders each may use."""
    packaged = pathlib.Path(str(importlib.resources.files(__package__) / "templates"))
    root = packaged / directory if directory in PACKAGED_VARIANTS else pathlib.Path(directory or packaged)
    texts = {}
    for name in fields:
      path = root / f"{name}.txt"
      if directory in PACKAGED_VARIANTS and not path.is_file():
        path = packaged / f"{name}.txt"  # a variant holds only the files it changes
      if not path.is_file():
        raise FileNotFoundError(f"template directory {root} has no {name}.txt (needs {list(fields)})")
      texts[name] = path.read_text(encoding="utf-8")
      template = string.Template(texts[name])
      unknown = sorted(set(template.get_identifiers()) - set(fields[name]))
      if unknown or not template.is_valid():
        raise ValueError(f"template {path}: placeholder(s) {unknown or 'malformed ($ not followed by a name)'} "
                         f"not among {list(fields[name])} (write $$ for a literal $)")
    return cls(texts=texts, directory=str(root))

  def render(self, name: str, **fields: Any) -> str:
    try:
      return string.Template(self.texts[name]).substitute(fields)
    except (KeyError, ValueError) as err:
      raise ValueError(f"template {self.directory}/{name}.txt: placeholder {err} is not one of {sorted(fields)}") \
          from err


NO_MEMORY = "(no memory)"


def render_entries(entries: Sequence[str]) -> str:
  """Retrieved entries as the agent sees them: `Memory 1: ...` lines, or the fixed no-memory marker."""
  if not entries:
    return NO_MEMORY
  return "\n".join(f"Memory {i}: {entry}" for i, entry in enumerate(entries, start=1))


def render_questions(questions: Sequence[str], current: int) -> str:
  """Every question numbered, the one an answer would go to marked."""
  lines = []
  for i, question in enumerate(questions):
    marker = "  <- current" if i == current else ""
    lines.append(f"Question {i + 1}: {question}{marker}")
  return "\n".join(lines)


def chat_prompt(tokenizer: Any, system: str, user: str, tools: Sequence[Any] | None = None) -> str:
  """System + user message through the tokenizer's own chat template, ending with the assistant turn opener;
  `tools` (JSON schemas) are rendered by the template as it renders them (Qwen3's lists them in the system turn)."""
  messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
  return tokenizer.apply_chat_template(messages, tools=list(tools) if tools is not None else None, tokenize=False,
                                       add_generation_prompt=True)
