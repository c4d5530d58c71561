"""The op table is the one place the op vocabulary is written; everything else derives from it."""
import ast
import pathlib

import pytest

from atommem_jax import op_table
from atommem_jax.agent import protocol
from atommem_jax.data import tokenizer as tokenizer_lib
from atommem_jax.eval import plots, results
from atommem_jax.memory import ops as memory_ops
from atommem_jax.train import grpo_rows

PACKAGE = pathlib.Path(op_table.__file__).parent


def _docstring_nodes(tree: ast.AST) -> set[int]:
  nodes = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
      first = node.body[0]
      if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        nodes.add(id(first.value))
  return nodes


def _export_lists(tree: ast.AST) -> set[int]:
  """The strings of `__all__`: identifiers (e.g. the transition functions `create`, `update`), not op names."""
  return {id(item) for node in ast.walk(tree) if isinstance(node, ast.Assign)
          and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets) for item in ast.walk(node.value)}


def _string_literals(path: pathlib.Path) -> list[tuple[int, str]]:
  """Every string constant of a module (f-string pieces included), docstrings and `__all__` left out."""
  tree = ast.parse(path.read_text(encoding="utf-8"))
  skip = _docstring_nodes(tree) | _export_lists(tree)
  return [(node.lineno, node.value) for node in ast.walk(tree)
          if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip]


def test_op_names_are_string_literals_of_the_op_table_only():
  # Distinctive names are looked for inside any literal (a tag in an f-string counts); the short memory-side names
  # ("create", "update", "delete") only as whole literals, since they are also ordinary words.
  distinctive = [spec.name for spec in op_table.OPS] + ["noop", "set_scratchpad", "set_query"]
  whole = [spec.name for spec in op_table.MEMORY_OPS]
  assert set(distinctive) | set(whole) == set(op_table.KIND_NAMES[1:]) | set(op_table.MEMORY_OP_NAMES)
  found = []
  for path in sorted(PACKAGE.rglob("*.py")):
    for line, text in _string_literals(path):
      if any(name in text for name in distinctive) or text in whole:
        found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}")
  assert [f for f in found if not f.startswith("atommem_jax/op_table.py:")] == []
  assert found  # the scan does see the table itself


def test_every_consumer_derives_from_the_table():
  assert protocol.KIND_NAMES == ("invalid",) + tuple(spec.name for spec in op_table.OPS)
  assert tokenizer_lib.PROTOCOL_TAGS[:2 * len(op_table.OPS)] == tuple(
      tag for spec in op_table.OPS for tag in (spec.open_tag, spec.close_tag))
  assert tokenizer_lib.PROTOCOL_TAGS[-2:] == ("<think>", "</think>")
  assert memory_ops.OP_NAMES == op_table.MEMORY_OP_NAMES and memory_ops.NUM_OP_TYPES == len(op_table.MEMORY_OPS)
  assert set(grpo_rows.OP_RATE_NAMES.values()) == set(protocol.KIND_NAMES[1:])
  assert results.OP_KEYS[-1] == "invalid" and set(results.OP_LABELS) == set(protocol.KIND_NAMES)
  assert [label for _, label in plots.DYNAMICS_OPS] == ["Read", "Create", "Update", "Delete"]


@pytest.mark.parametrize("spec", op_table.OPS, ids=lambda spec: spec.name)
def test_a_tag_written_from_the_table_parses_back_to_its_kind(spec):
  body = {"text": "a note", "target_text": "Memory 1: a note", "target": "Memory 1", "boxed": "\\boxed{x}"}[spec.body]
  (op,) = protocol.parse_response(op_table.tag(spec.kind, body), num_shown=1)
  assert (op.kind, op.valid, op.name) == (spec.kind, True, spec.name)
  assert op_table.MEMORY_TYPE_K[spec.kind] == spec.memory_type
  assert op_table.MEMORY_OPS[spec.memory_type].targeted == (spec.body in ("target", "target_text"))


def test_only_storage_writes_advance_the_reader_and_roles_partition_the_kinds():
  assert [spec.name for spec in op_table.OPS if spec.advances_reader] == ["add_memory", "modify_memory"]
  roles = op_table.IS_READ_K.astype(int) + op_table.IS_ANSWER_K + op_table.IS_WRITE_K
  assert roles.tolist() == [0] + [1] * len(op_table.OPS)  # every op has exactly one role; INVALID none
