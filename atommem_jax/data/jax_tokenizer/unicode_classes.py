r"""Per-code-point character classes, for all of Unicode, as the two text engines the host path runs define them.

- The tokenizer's split regex (Oniguruma inside `tokenizers`): `\p{L}`, `\p{N}`, `\s`, and which letters end a
  contraction (`(?i:'s|'t|'re|'ve|'m|'ll|'d)`). These follow the regex library's own Unicode version, which is
  newer than Python's `unicodedata` (thousands of letters differ), so they are measured: the split is run on probe
  strings for every code point and the answers are stored in `assets/jax_tokenizer_classes.json`. The file names
  the `tokenizers` version it was measured with; another version must be measured again:

    python -m atommem_jax.data.jax_tokenizer.unicode_classes            # regenerate the asset
    python -m atommem_jax.data.jax_tokenizer.unicode_classes --check    # compare the asset with this install

- Python (`str.strip`, and `\s` / `\d` in `re`, which the protocol parser uses): `str.isspace`, `str.isdecimal` and
  the digit's value, taken from this interpreter.
"""
from __future__ import annotations

import functools
import importlib.resources
import json
import pathlib
import sys
from typing import Sequence

import numpy as np

NUM_CODE_POINTS = 0x110000
# Bits of `code_point_classes()`.
LETTER, NUMBER, SPACE, PY_SPACE, PY_DECIMAL = 1, 2, 4, 8, 16

_ASSET = "jax_tokenizer_classes.json"
_REGEX_SPACE_ALWAYS = ("\n", "\r")  # the probe below cannot see these; `\s` holds them in every engine


def _asset_path() -> pathlib.Path:
  return pathlib.Path(str(importlib.resources.files("atommem_jax") / "assets" / _ASSET))


def _ranges(mask: np.ndarray) -> list[list[int]]:
  edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
  return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


def _mask(ranges: Sequence[Sequence[int]]) -> np.ndarray:
  mask = np.zeros(NUM_CODE_POINTS, bool)
  for start, end in ranges:
    mask[start:end] = True
  return mask


def _split(pattern: str):
  from tokenizers import Regex, pre_tokenizers  # pylint: disable=import-outside-toplevel
  return pre_tokenizers.Split(Regex(pattern), "isolated")


def probe(pattern: str, code_points: np.ndarray, block: int = 1 << 16) -> dict[str, np.ndarray]:
  """The split regex's classes of `code_points` (no surrogates): {"letter", "number", "space"} bool arrays.

  Each code point c is probed in three contexts, separated by "0" (a digit is always a piece of its own):
  "a" c joins into one piece iff c is a letter; c "\n" is one piece iff c is whitespace or punctuation-like;
  "!" c splits iff c is a number or whitespace.
  """
  split = _split(pattern)
  letter, joins_newline, splits_bang = (np.zeros(len(code_points), bool) for _ in range(3))
  for start in range(0, len(code_points), block):
    chunk = code_points[start:start + block]
    text = "".join(f"0a{c}0{c}\n0!{c}" for c in map(chr, chunk.tolist()))
    boundary = np.zeros(len(text) + 1, bool)
    boundary[np.fromiter((offsets[0] for _, offsets in split.pre_tokenize_str(text)), np.int64)] = True
    base = np.arange(len(chunk)) * 9
    letter[start:start + len(chunk)] = ~boundary[base + 2]
    joins_newline[start:start + len(chunk)] = ~boundary[base + 5]
    splits_bang[start:start + len(chunk)] = boundary[base + 8]
  space = joins_newline & splits_bang & ~letter
  space |= np.isin(code_points, [ord(c) for c in _REGEX_SPACE_ALWAYS])
  return {"letter": letter, "number": splits_bang & ~space & ~letter, "space": space}


def probe_contractions(pattern: str, letters: np.ndarray) -> tuple[list[int], list[list[int]]]:
  """The letters c with "'c" a contraction, and the letter pairs (c1, c2) with "'c1c2" one (case-insensitive, so
  e.g. U+017F LONG S counts as "s")."""
  split = _split(pattern)
  pieces = lambda text: [piece for piece, _ in split.pre_tokenize_str(text)]
  single = [int(c) for c in letters if pieces(f"'{chr(c)}a")[0] == f"'{chr(c)}"]
  pairs = []
  for c in letters.tolist():
    for first, second in [(chr(c), s) for s in "eElL"] + [(f, chr(c)) for f in "rRvVlL"]:
      if pieces(f"'{first}{second}a")[0] == f"'{first}{second}":
        pairs.append([ord(first), ord(second)])
  return single, sorted(map(list, {tuple(p) for p in pairs}))


def _all_code_points() -> np.ndarray:
  code_points = np.arange(NUM_CODE_POINTS)
  return code_points[(code_points < 0xD800) | (code_points > 0xDFFF)]


def measure(pattern: str) -> dict:
  """The asset's content for this `tokenizers` install (about two minutes)."""
  import tokenizers  # pylint: disable=import-outside-toplevel
  code_points = _all_code_points()
  classes = probe(pattern, code_points)
  masks = {name: np.zeros(NUM_CODE_POINTS, bool) for name in classes}
  for name, values in classes.items():
    masks[name][code_points] = values
  single, pairs = probe_contractions(pattern, np.flatnonzero(masks["letter"]))
  return {"tokenizers": tokenizers.__version__, "pattern": pattern,
          "ranges": {name: _ranges(mask) for name, mask in masks.items()},
          "contraction_single": single, "contraction_pairs": pairs}


@functools.lru_cache(maxsize=None)
def regex_classes() -> dict:
  """The stored asset, ranges expanded to [0x110000] bool masks."""
  content = json.loads(_asset_path().read_text())
  content["masks"] = {name: _mask(ranges) for name, ranges in content.pop("ranges").items()}
  return content


@functools.lru_cache(maxsize=None)
def code_point_classes() -> tuple[np.ndarray, np.ndarray]:
  """([0x110000] uint8 class bits, [0x110000] int8 decimal digit value or -1), the regex's and Python's."""
  masks = regex_classes()["masks"]
  bits = (masks["letter"] * LETTER + masks["number"] * NUMBER + masks["space"] * SPACE).astype(np.uint8)
  digit = np.full(NUM_CODE_POINTS, -1, np.int8)
  for code in range(NUM_CODE_POINTS):
    if 0xD800 <= code <= 0xDFFF:
      continue
    char = chr(code)
    if char.isspace():
      bits[code] |= PY_SPACE
    if char.isdecimal():
      bits[code] |= PY_DECIMAL
      digit[code] = int(char)
  return bits, digit


def main(argv: Sequence[str]) -> int:
  from atommem_jax.data.tokenizer import SPLIT_PATTERN  # pylint: disable=import-outside-toplevel
  content = measure(SPLIT_PATTERN)
  if "--check" in argv:
    stored = json.loads(_asset_path().read_text())
    same = all(stored[k] == content[k] for k in ("ranges", "contraction_single", "contraction_pairs"))
    print(f"{_asset_path()}: {'matches' if same else 'DIFFERS FROM'} tokenizers {content['tokenizers']}")
    return 0 if same else 1
  _asset_path().write_text(json.dumps(content, separators=(",", ":")) + "\n")
  print(f"wrote {_asset_path()} (tokenizers {content['tokenizers']})")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
