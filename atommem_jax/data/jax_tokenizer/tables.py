"""A byte-level BPE tokenizer as arrays (`TokenizerTables`), and the conditions under which the in-graph codec
reproduces the Hugging Face one exactly (`unsupported_reasons`).

Supported: a `tokenizers` BPE model without dropout, unknown token, word prefixes/suffixes, byte fallback or
`ignore_merges`; no normalizer; the pre-tokenizer `Sequence[Split(regex, "isolated"), ByteLevel(no prefix space, no
regex)]` with the Qwen2 split regex or the tiny tokenizer's variant of it (`data.tokenizer.SPLIT_PATTERN`); the
ByteLevel decoder; added tokens that strip nothing and can never overlap in a text (each match is then found where
it is, whatever surrounds it); merge pairs that fit int32 keys (vocabulary < 46341). The tiny default tokenizer
qualifies; Qwen3's does not (it normalises to NFC first).
"""
from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import jax
import numpy as np

from atommem_jax.data import tokenizer as tokenizer_lib
from atommem_jax.data.jax_tokenizer import unicode_classes

# The split regexes `pretokenize` implements, and whether `{` may lead a letter run (Qwen2's: yes; ours: no).
SUPPORTED_PATTERNS = {
    tokenizer_lib.SPLIT_PATTERN: False,
    tokenizer_lib.SPLIT_PATTERN.replace(r"[^\r\n\p{L}\p{N}{]?", r"[^\r\n\p{L}\p{N}]?"): True,
}
_MAX_VOCAB = 46340  # left * V + right must fit int32
_DENSE_VOCAB = 4096  # up to this vocabulary, merges are looked up in a dense [V * V] table (64 MiB at most)


@functools.lru_cache(maxsize=None)
def byte_to_char() -> dict[int, str]:
  """GPT-2's byte-level alphabet: every byte as a printable character (what ByteLevel BPE vocabularies hold)."""
  printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
      list(range(ord("®"), ord("ÿ") + 1))
  chars = printable[:]
  extra = 0
  for byte in range(256):
    if byte not in printable:
      printable.append(byte)
      chars.append(256 + extra)
      extra += 1
  return {byte: chr(char) for byte, char in zip(printable, chars)}


def _backend(tokenizer: Any) -> dict:
  backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
  if not hasattr(backend, "to_str"):
    raise ValueError(f"{type(tokenizer).__name__} is not a Hugging Face fast tokenizer (no backend_tokenizer)")
  return json.loads(backend.to_str())


def _merge_pairs(model: dict) -> list[tuple[str, str]]:
  return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model.get("merges", [])]


def _overlap(a: str, b: str) -> bool:
  """Whether occurrences of a and b can overlap (b inside a, or a suffix of a starting b)."""
  return (a != b and b in a) or any(a.endswith(b[:k]) for k in range(1, min(len(a), len(b))))


def unsupported_reasons(tokenizer: Any) -> list[str]:
  """Why the in-graph codec would not tokenize exactly as `tokenizer` does (empty: it does)."""
  try:
    spec = _backend(tokenizer)
  except ValueError as err:
    return [str(err)]
  reasons = []
  model = spec.get("model") or {}
  if model.get("type") != "BPE":
    return [f"the model is {model.get('type')!r}, not BPE"]
  for key, expected in (("dropout", None), ("unk_token", None), ("continuing_subword_prefix", None),
                        ("end_of_word_suffix", None), ("byte_fallback", False), ("ignore_merges", False)):
    if model.get(key, expected) not in (expected, "") :
      reasons.append(f"BPE {key}={model.get(key)!r} (only {expected!r} is supported)")
  if spec.get("normalizer") is not None:
    reasons.append(f"it normalises text ({spec['normalizer'].get('type')}) before splitting")
  pre = spec.get("pre_tokenizer") or {}
  steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
  if (len(steps) != 2 or steps[0].get("type") != "Split" or steps[1].get("type") != "ByteLevel"
      or steps[0].get("behavior") != "Isolated" or steps[0].get("invert")
      or steps[1].get("add_prefix_space") or steps[1].get("use_regex")):
    reasons.append("the pre-tokenizer is not Split(regex, isolated) then ByteLevel(no prefix space, no regex)")
  elif (steps[0].get("pattern") or {}).get("Regex") not in SUPPORTED_PATTERNS:
    reasons.append(f"the split regex {(steps[0].get('pattern') or {})!r} is not one of the supported patterns")
  if (spec.get("decoder") or {}).get("type") != "ByteLevel":
    reasons.append("the decoder is not ByteLevel")
  vocab = model.get("vocab", {})
  missing = [c for c in byte_to_char().values() if c not in vocab]
  if missing:
    reasons.append(f"{len(missing)} byte-level characters are not in the vocabulary")
  size = max([len(vocab)] + [t["id"] + 1 for t in spec.get("added_tokens", [])] + [max(vocab.values(), default=0) + 1])
  if size > _MAX_VOCAB:
    reasons.append(f"the vocabulary ({size}) is too large for int32 merge keys (< {_MAX_VOCAB + 1})")
  if any(a + b not in vocab for a, b in _merge_pairs(model)):
    reasons.append("a merge produces a string that is not in the vocabulary")
  added = spec.get("added_tokens", [])
  for token in added:
    if token.get("lstrip") or token.get("rstrip") or token.get("single_word") or not token.get("content"):
      reasons.append(f"added token {token.get('content')!r} strips spaces, is single-word or is empty")
  contents = [t["content"] for t in added]
  clashes = [(a, b) for a in contents for b in contents if _overlap(a, b)]
  if clashes:
    reasons.append(f"added tokens can overlap in a text, e.g. {clashes[0]}")
  if unicode_classes.regex_classes()["tokenizers"] != _tokenizers_version():
    reasons.append(f"the stored regex character classes were measured with tokenizers "
                   f"{unicode_classes.regex_classes()['tokenizers']}, this is {_tokenizers_version()}; run "
                   f"python -m atommem_jax.data.jax_tokenizer.unicode_classes")
  return reasons


def _tokenizers_version() -> str:
  import tokenizers  # pylint: disable=import-outside-toplevel
  return tokenizers.__version__


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["token_bytes_VxL", "token_length_V", "byte_token_256", "merge_key_M",
                                "merge_token_M", "merge_rank_M", "pair_table_VV", "added_text_AxL", "added_length_A", "added_token_A",
                                "class_C", "digit_C", "contraction_single_K", "contraction_pairs_Kx2"],
                   meta_fields=["vocab_size", "brace_leads_word"])
@dataclasses.dataclass(frozen=True)
class TokenizerTables:
  """Everything the in-graph codec reads (arrays, so a jitted function takes it as an argument)."""

  token_bytes_VxL: Any  # int32: the bytes `decode([id])` gives, -1 padded
  token_length_V: Any  # int32
  byte_token_256: Any  # int32: the id of each single byte's symbol
  merge_key_M: Any  # int32, sorted: left * vocab_size + right
  merge_token_M: Any  # int32: the merged id
  merge_rank_M: Any  # int32: the merge's priority (lower first)
  pair_table_VV: Any  # int32 [V * V]: rank * V + merged id of each pair, -1 for none ([1] for a large vocabulary)
  added_text_AxL: Any  # int32: each added token's content as code points, -1 padded
  added_length_A: Any  # int32
  added_token_A: Any  # int32
  class_C: Any  # uint8 [0x110000]: `unicode_classes` bits
  digit_C: Any  # int8 [0x110000]: decimal digit value or -1
  contraction_single_K: Any  # int32 code points c with "'c" a contraction
  contraction_pairs_Kx2: Any  # int32 code point pairs with "'c1c2" a contraction
  vocab_size: int
  brace_leads_word: bool

  @classmethod
  def from_tokenizer(cls, tokenizer: Any) -> "TokenizerTables":
    reasons = unsupported_reasons(tokenizer)
    if reasons:
      raise ValueError("the in-graph tokenizer cannot reproduce this tokenizer exactly: " + "; ".join(reasons))
    spec = _backend(tokenizer)
    model, added = spec["model"], spec.get("added_tokens", [])
    vocab = dict(model["vocab"])
    vocab.update({t["content"]: t["id"] for t in added})
    size = max(vocab.values()) + 1
    char_byte = {char: byte for byte, char in byte_to_char().items()}
    # ByteLevel decoding maps a token's characters back to bytes when all are in the alphabet, else keeps its UTF-8.
    token_bytes = [b""] * size
    for text, token in vocab.items():
      token_bytes[token] = (bytes(char_byte[c] for c in text) if all(c in char_byte for c in text)
                            else text.encode("utf-8"))
    for t in added:
      text = t["content"]
      token_bytes[t["id"]] = (bytes(char_byte[c] for c in text) if all(c in char_byte for c in text)
                              else text.encode("utf-8"))
    width = max(len(b) for b in token_bytes)
    bytes_VxL = np.full((size, width), -1, np.int32)
    for token, data in enumerate(token_bytes):
      bytes_VxL[token, :len(data)] = list(data)
    pairs = _merge_pairs(model)
    keys = np.array([vocab[a] * size + vocab[b] for a, b in pairs], np.int64)
    order = np.argsort(keys, kind="stable")
    if len(set(keys.tolist())) != len(keys):
      raise ValueError("the tokenizer lists a merge pair twice")
    ranks = np.arange(len(pairs), dtype=np.int64)
    pair_table = np.full((size * size if size <= _DENSE_VOCAB else 1,), -1, np.int32)
    if size <= _DENSE_VOCAB:  # one gather per pair instead of a binary search
      pair_table[keys] = (ranks * size + np.array([vocab[a + b] for a, b in pairs], np.int64)).astype(np.int32)
    added_width = max([len(t["content"]) for t in added] + [1])
    added_text = np.full((max(len(added), 1), added_width), -1, np.int32)
    for i, t in enumerate(added):
      added_text[i, :len(t["content"])] = [ord(c) for c in t["content"]]
    classes, digits = unicode_classes.code_point_classes()
    regex = unicode_classes.regex_classes()
    pattern = spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    return cls(
        token_bytes_VxL=bytes_VxL, token_length_V=np.array([len(b) for b in token_bytes], np.int32),
        byte_token_256=np.array([vocab[byte_to_char()[b]] for b in range(256)], np.int32),
        merge_key_M=keys[order].astype(np.int32),
        merge_token_M=np.array([vocab[a + b] for a, b in pairs], np.int32)[order],
        merge_rank_M=np.arange(len(pairs), dtype=np.int32)[order], pair_table_VV=pair_table,
        added_text_AxL=added_text, added_length_A=np.array([len(t["content"]) for t in added] or [0], np.int32),
        added_token_A=np.array([t["id"] for t in added] or [-1], np.int32),
        class_C=classes, digit_C=digits,
        contraction_single_K=np.array(regex["contraction_single"], np.int32),
        contraction_pairs_Kx2=np.array(regex["contraction_pairs"], np.int32).reshape(-1, 2),
        vocab_size=size, brace_leads_word=SUPPORTED_PATTERNS[pattern])
