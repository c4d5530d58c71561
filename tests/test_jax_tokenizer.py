"""The in-graph tokenizer against the Hugging Face one it reproduces: decode, encode, the split regex's character
classes, and the conditions it refuses."""
import json

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from tokenizers import Tokenizer

from atommem_jax.data.jax_tokenizer import codec, tables as tables_lib, unicode_classes
from atommem_jax.data.tokenizer import SPLIT_PATTERN, load_tiny_tokenizer

WIDTH = 96  # code points per encoded row

# Pieces that meet every branch of the split regex and of BPE: contractions (with U+017F, which folds to "s"),
# letter runs with and without a lead character, `{`, digits (ASCII and Arabic-Indic), punctuation runs with a space
# before and newlines after, whitespace runs ending in newlines or before text, Unicode spaces, added tokens (tags
# and special tokens), U+FFFD, letters Python's unicodedata does not know yet (U+1C89).
PIECES = ["Paris", " fact", "'s", "'S", "'re", "'LL", "'ve", "'ſ", "'x", "{", "}", "\\boxed{", "Memory", "1", "٣",
          ":", ".", "!!", " (x)", "\t", "\u00a0", "\u3000", "\x1c", "é", "日本", "\ufffd", "\u1c89", "𝔸", "😀", " ",
          "  ", "\n", "\n\n", " \n", "\r\n", "<add_memory>", "</add_memory>", "<|im_start|>", "<think>", "</think>",
          "<|endoftext|>", "a'b", "Kalomi", " Tesuna", "ǅ", "_x", "<b>"]


@pytest.fixture(scope="module")
def tokenizer():
  return load_tiny_tokenizer()


@pytest.fixture(scope="module")
def tables(tokenizer):
  return jax.device_put(tables_lib.TokenizerTables.from_tokenizer(tokenizer))


@pytest.fixture(scope="module")
def encode():
  """`codec.split` then `codec.merge` with room for any word of these texts (checked)."""
  def one(tables, code, n, starts):
    words = codec.split(tables, code, n, starts)
    tokens, count, strings = codec.merge(tables, words, code.shape[0], 4 * 24)
    return tokens, count, strings, words.longest
  run = jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0)))

  def encode(*args):
    tokens, counts, strings, longest = jax.device_get(run(*args))
    assert longest.max() <= 4 * 24
    return tokens, counts, strings
  return encode


def _rows(texts, width=WIDTH):
  codes = np.zeros((len(texts), width), np.int32)
  for i, text in enumerate(texts):
    codes[i, :len(text)] = [ord(c) for c in text]
  return codes, np.array([len(t) for t in texts], np.int32)


def test_decode_matches_the_tokenizer_on_any_ids(tokenizer, tables):
  rng = np.random.default_rng(0)
  ids = rng.integers(0, len(tokenizer), size=(64, 24)).astype(np.int32)
  ids[:8] = rng.integers(3, 259, size=(8, 24))  # runs of byte tokens: invalid and cut UTF-8
  lengths = rng.integers(0, 25, size=64).astype(np.int32)
  codes, counts = jax.device_get(jax.jit(jax.vmap(codec.decode, in_axes=(None, 0, 0)))(tables, ids, lengths))
  for row in range(64):
    expected = tokenizer.decode(ids[row, :lengths[row]].tolist(), skip_special_tokens=False)
    assert "".join(map(chr, codes[row, :counts[row]])) == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(PIECES), max_size=14).map("".join), min_size=8, max_size=8))
def test_encode_matches_the_tokenizer(tokenizer, tables, encode, texts):
  texts = [t[:WIDTH] for t in texts]
  codes, lengths = _rows(texts)
  tokens, counts, _ = encode(tables, codes, lengths, np.zeros(codes.shape, bool))
  for row, text in enumerate(texts):
    assert tokens[row, :counts[row]].tolist() == tokenizer.encode(text, add_special_tokens=False), text


def test_encode_tokenizes_several_strings_of_a_row_apart(tokenizer, tables, encode):
  parts = [["Paris", "'s", " x"], ["ab", "c\n", "\nd", "<think>"], ["\u00a0", "\u00a0b"], ["", "word"]]
  codes, lengths = _rows(["".join(p) for p in parts])
  starts = np.zeros(codes.shape, bool)
  for row, row_parts in enumerate(parts):
    offsets = np.cumsum([0] + [len(p) for p in row_parts])[:-1]
    starts[row, [o for o, p in zip(offsets, row_parts) if p]] = True
  tokens, counts, strings = encode(tables, codes, lengths, starts)
  for row, row_parts in enumerate(parts):
    expected = [(i, t) for i, p in enumerate(q for q in row_parts if q)
                for t in tokenizer.encode(p, add_special_tokens=False)]
    assert list(zip(strings[row, :counts[row]].tolist(), tokens[row, :counts[row]].tolist())) == expected


def test_stored_character_classes_match_this_tokenizers_regex():
  """Every code point below U+0800 (what a model most often assembles from byte tokens), every one where Python's
  Unicode tables disagree with the stored ones, and a random sample of the rest."""
  stored = unicode_classes.regex_classes()["masks"]
  code_points = np.arange(unicode_classes.NUM_CODE_POINTS)
  import unicodedata  # pylint: disable=import-outside-toplevel
  letters = np.array([unicodedata.category(chr(c)).startswith("L") for c in range(0x30000)])
  disagree = np.flatnonzero(letters != stored["letter"][:0x30000])
  rng = np.random.default_rng(0)
  sample = np.unique(np.concatenate([np.arange(0x800), disagree[:3000], rng.choice(code_points, 3000)]))
  sample = sample[(sample < 0xD800) | (sample > 0xDFFF)]
  probed = unicode_classes.probe(SPLIT_PATTERN, sample)
  for name in ("letter", "number", "space"):
    np.testing.assert_array_equal(probed[name], stored[name][sample], err_msg=name)
  assert unicode_classes.regex_classes()["tokenizers"] == __import__("tokenizers").__version__


def _variant(tokenizer, change) -> Tokenizer:
  spec = json.loads(tokenizer.backend_tokenizer.to_str())
  change(spec)
  return Tokenizer.from_str(json.dumps(spec))


@pytest.mark.parametrize("change, cause", [
    (lambda s: s.update(normalizer={"type": "NFC"}), "normalises text (NFC)"),
    (lambda s: s["pre_tokenizer"]["pretokenizers"][0]["pattern"].update(Regex=r"\s+|\S+"), "split regex"),
    (lambda s: s["added_tokens"][3].update(lstrip=True), "strips spaces"),
    (lambda s: s["added_tokens"].append(dict(s["added_tokens"][3], id=5000, content="<update_memory>x")),
     "can overlap"),
    (lambda s: s["model"].update(dropout=0.1), "dropout"),
])
def test_unsupported_tokenizers_are_refused_with_the_cause(tokenizer, change, cause):
  assert tables_lib.unsupported_reasons(tokenizer) == []
  reasons = tables_lib.unsupported_reasons(_variant(tokenizer, change))
  assert any(cause in reason for reason in reasons), reasons
  with pytest.raises(ValueError, match="cannot reproduce"):
    tables_lib.TokenizerTables.from_tokenizer(_variant(tokenizer, change))
