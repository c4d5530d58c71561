"""The committed tiny tokenizer: loading, protocol tags, chat template, digits, and deterministic regeneration."""
import os

import pytest
import transformers

from atommem_jax.data import synthetic
from atommem_jax.data import tokenizer as tiny


@pytest.fixture(scope="module")
def tok():
  return tiny.load_tiny_tokenizer()


def test_loads_with_auto_tokenizer(tok):
  direct = transformers.AutoTokenizer.from_pretrained(tiny.tiny_tokenizer_dir())
  assert len(direct) == len(tok) <= tiny.VOCAB_SIZE
  assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 0
  assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
  assert tok.convert_tokens_to_ids("<|im_start|>") == 1
  text = "Kalomi was born in 1875."
  assert direct.encode(text) == tok.encode(text)


def test_protocol_tags_are_single_tokens_that_round_trip(tok):
  ids = set()
  for tag in tiny.PROTOCOL_TAGS:
    encoded = tok.encode(tag, add_special_tokens=False)
    assert len(encoded) == 1, tag
    ids.add(encoded[0])
  assert len(ids) == 14 and max(ids) < tiny.VOCAB_SIZE
  response = ("<think>the founder first</think><update_query>founder of Rativo</update_query>"
              "<add_memory>Rativo was founded by Kalomi.</add_memory>"
              "<modify_memory>Memory 2: Kalomi was born in Tesuna.</modify_memory><delete_memory>Memory 1"
              "</delete_memory><update_memory>need country</update_memory>"
              "<final_answer>\\boxed{Vorika}</final_answer><|im_end|>")
  encoded = tok.encode(response, add_special_tokens=False)
  assert tok.decode(encoded) == response
  assert tok.decode(encoded, skip_special_tokens=True) == response.replace("<|im_end|>", "")
  tag_ids = {tok.convert_tokens_to_ids(t) for t in tiny.PROTOCOL_TAGS}
  assert sum(i in tag_ids for i in encoded) == 14


def test_digits_boxes_and_bytes(tok):
  pieces = [tok.decode([i]) for i in tok.encode("<final_answer>\\boxed{1875}</final_answer>", add_special_tokens=False)]
  assert pieces == ["<final_answer>", "\\boxed", "{", "1", "8", "7", "5", "}", "</final_answer>"]
  pieces = [tok.decode([i]) for i in tok.encode("\\boxed{Vorika}", add_special_tokens=False)]
  assert pieces[:2] == ["\\boxed", "{"] and pieces[-1] == "}" and "".join(pieces[2:-1]) == "Vorika"
  for text in ["Zürich – São Paulo 😀", "a\n\n  b\t{}", "Document 12:\nTesuna\nTesuna is located in Vorika."]:
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
  # The synthetic task is what the vocabulary was fit to: its documents need few tokens per word.
  doc = synthetic.generate(synthetic.SyntheticConfig(seed=5, num_documents=20, num_questions=1)).documents[0]
  assert len(tok.encode(doc.text)) <= 3 * len(doc.text.split())


def test_short_names_are_single_tokens(tok):
  for name in synthetic.SHORT_NAMES:
    assert len(tok.encode(name)) == 1 and len(tok.encode(f" {name}")) == 1, name
    assert [tok.decode([i]) for i in tok.encode(f"\\boxed{{{name}}}")] == ["\\boxed", "{", name, "}"]


def test_chat_template(tok):
  messages = [{"role": "system", "content": "You read."}, {"role": "user", "content": "Question: Who?"}]
  text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
  assert text == ("<|im_start|>system\nYou read.<|im_end|>\n<|im_start|>user\nQuestion: Who?<|im_end|>\n"
                  "<|im_start|>assistant\n")
  without = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
  assert without == text[:-len("<|im_start|>assistant\n")]
  ids = tok.encode(text, add_special_tokens=False)
  assert ids[0] == 1 and ids.count(1) == 3 and ids.count(2) == 2


def test_regeneration_is_byte_identical(tmp_path):
  tiny.train_tiny_tokenizer(str(tmp_path))
  committed = tiny.tiny_tokenizer_dir()
  names = sorted(os.listdir(tmp_path))
  assert "tokenizer.json" in names
  assert names == sorted(n for n in os.listdir(committed) if not n.startswith("__"))
  for name in names:
    with open(tmp_path / name, "rb") as a, open(os.path.join(committed, name), "rb") as b:
      assert a.read() == b.read(), name


def test_chat_template_names_the_tools_it_is_given(tok):
  messages = [{"role": "system", "content": "You search."}, {"role": "user", "content": "Question: Who?"}]
  tools = [{"type": "function", "function": {"name": "search", "description": "Search the web.", "parameters": {
      "type": "object", "properties": {"query": {"type": "string"}, "num_results": {"type": "integer"}}}}},
           {"type": "function", "function": {"name": "fetch_url", "description": "Fetch a page.", "parameters": {
               "type": "object", "properties": {"url": {"type": "string"}}}}}]
  text = tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
  assert text == ("<|im_start|>system\nYou search.\nTools: search(query, num_results) fetch_url(url)<|im_end|>\n"
                  "<|im_start|>user\nQuestion: Who?<|im_end|>\n<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def web_tok():
  return tiny.load_tiny_tokenizer(tiny.tiny_web_tokenizer_dir())


def test_web_variant_keeps_the_tags_and_names_and_makes_calls_short(web_tok):
  assert len(web_tok) <= tiny.VOCAB_SIZE and web_tok.eos_token_id == 2 and web_tok.pad_token_id == 0
  for tag in tiny.PROTOCOL_TAGS + tiny.TOOL_CALL_TAGS:
    assert len(web_tok.encode(tag, add_special_tokens=False)) == 1, tag
  for name in synthetic.SHORT_NAMES:
    assert len(web_tok.encode(name)) == 1 and len(web_tok.encode(f" {name}")) == 1, name
  call = ('<tool_call>{"name": "fetch_url", "arguments": {"url": "https://world17.example/wiki/Riti"}}'
          '</tool_call>')
  ids = web_tok.encode(call, add_special_tokens=False)
  assert web_tok.decode(ids) == call and len(ids) <= 30
  assert len(tiny.load_tiny_tokenizer().encode(call, add_special_tokens=False)) > 80


def test_web_regeneration_is_byte_identical(tmp_path):
  tiny.train_tiny_tokenizer(str(tmp_path), web=True)
  committed = tiny.tiny_web_tokenizer_dir()
  names = sorted(os.listdir(tmp_path))
  assert names == sorted(n for n in os.listdir(committed) if not n.startswith("__"))
  for name in names:
    with open(tmp_path / name, "rb") as a, open(os.path.join(committed, name), "rb") as b:
      assert a.read() == b.read(), name
