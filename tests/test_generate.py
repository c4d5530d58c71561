"""`python -m atommem_jax.generate` on a tiny random Qwen3 saved by transformers, with the tiny default tokenizer."""
import json
import os
import subprocess
import sys

import pytest
import torch

from atommem_jax.sampling.from_checkpoint import generate_from_dir
from atommem_jax.checkpoint import copy_tokenizer_files, load_hf, save_params
from atommem_jax.data.tokenizer import load_tiny_tokenizer, tiny_tokenizer_dir
from atommem_jax.model import attention as attention_lib
from atommem_jax.sampling import chat
from hf_fixtures import make_tiny_hf_checkpoint

PROMPTS = ["Document 1: Kamipe was born in Loraka.", "Question: where"]
NEW = 10


@pytest.fixture(scope="module")
def hf_dir_and_model(tmp_path_factory):
  path = tmp_path_factory.mktemp("hf_with_tokenizer")
  hf_model = make_tiny_hf_checkpoint(path, vocab_size=2048, seed=1)
  copy_tokenizer_files(tiny_tokenizer_dir(), path)
  return path, hf_model


def hf_greedy_until_eos(hf_model, tokenizer, prompt_ids):
  """HF `generate` on the left-padded batch, each row cut before its first EOS."""
  width = max(map(len, prompt_ids))
  input_ids = torch.full((len(prompt_ids), width), tokenizer.pad_token_id, dtype=torch.long)
  attention_mask = torch.zeros_like(input_ids)
  for row, ids in enumerate(prompt_ids):
    input_ids[row, width - len(ids):] = torch.tensor(ids)
    attention_mask[row, width - len(ids):] = 1
  with torch.no_grad():
    out = hf_model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False, max_new_tokens=NEW,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
  rows = []
  for ids in out[:, width:].tolist():
    rows.append(ids[:ids.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in ids else ids)
  return rows


def test_cli_json_equals_hf_generate(hf_dir_and_model):
  path, hf_model = hf_dir_and_model
  tokenizer = load_tiny_tokenizer()
  prompt_ids = [tokenizer.encode(p, add_special_tokens=False) for p in PROMPTS]
  command = [sys.executable, "-m", "atommem_jax.generate", "--model", str(path), "--max_new_tokens", str(NEW),
             "--greedy", "--json"] + [arg for p in PROMPTS for arg in ("--prompt", p)]
  result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = json.loads(result.stdout.strip().splitlines()[-1])
  expected = hf_greedy_until_eos(hf_model, tokenizer, prompt_ids)
  assert [r["prompt_index"] for r in rows] == [0, 1]
  assert [r["token_ids"] for r in rows] == expected
  for row, ids in zip(rows, expected):
    assert row["text"] == tokenizer.decode(ids, skip_special_tokens=False)
    assert row["stop_reason"] == ("length" if len(ids) == NEW else "eos")


def test_orbax_dir_with_chat_template_and_samples(hf_dir_and_model, tmp_path):
  path, hf_model = hf_dir_and_model
  config, model = load_hf(path)
  save_params(tmp_path / "orbax", model, config, tokenizer_src=path)
  tokenizer = load_tiny_tokenizer()
  chat_ids = [chat.user_prompt_ids(tokenizer, p) for p in PROMPTS]
  rows = generate_from_dir(str(tmp_path / "orbax"), PROMPTS, max_new_tokens=NEW, greedy=True, temperature=1.0,
                           top_k=0, top_p=1.0, num_samples=2, stop=[], seed=0, chat=True)
  expected = hf_greedy_until_eos(hf_model, tokenizer, chat_ids)
  assert [(r["prompt_index"], r["sample_index"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
  assert [r["token_ids"] for r in rows] == [expected[0], expected[0], expected[1], expected[1]]


def test_blockwise_attention_generates_transformers_tokens(hf_dir_and_model, monkeypatch):
  """Greedy generation with `attention="blockwise"` in blocks of 16 queries (the 63-token prefill of the 64 bucket in
  4 blocks) gives transformers' tokens."""
  monkeypatch.setattr(attention_lib, "BLOCK_QUERIES", 16)
  path, hf_model = hf_dir_and_model
  tokenizer = load_tiny_tokenizer()
  rows = generate_from_dir(str(path), PROMPTS, max_new_tokens=NEW, greedy=True, temperature=1.0, top_k=0, top_p=1.0,
                           num_samples=1, stop=[], seed=0, chat=False, attention="blockwise")
  prompt_ids = [tokenizer.encode(p, add_special_tokens=False) for p in PROMPTS]
  assert [r["token_ids"] for r in rows] == hf_greedy_until_eos(hf_model, tokenizer, prompt_ids)


def test_clear_errors(hf_dir_and_model, tmp_path):
  result = subprocess.run([sys.executable, "-m", "atommem_jax.generate", "--prompt", "hi"], capture_output=True,
                          text=True, env=dict(os.environ), timeout=120)
  assert result.returncode != 0 and "--model DIR is required" in result.stderr
  result = subprocess.run([sys.executable, "-m", "atommem_jax.generate", "--model", str(tmp_path), "--prompt", "hi",
                           "--attention", "flash"], capture_output=True, text=True, env=dict(os.environ), timeout=120)
  assert result.returncode != 0 and "--attention" in result.stderr and "blockwise" in result.stderr
  bare = tmp_path / "no_tokenizer"
  make_tiny_hf_checkpoint(bare)
  with pytest.raises(ValueError, match="holds no tokenizer files"):
    generate_from_dir(str(bare), PROMPTS, max_new_tokens=2, greedy=True, temperature=1.0, top_k=0, top_p=1.0,
                      num_samples=1, stop=[], seed=0, chat=False)
  with pytest.raises(ValueError, match="is not a directory"):
    generate_from_dir(str(tmp_path / "missing"), PROMPTS, max_new_tokens=2, greedy=True, temperature=1.0, top_k=0,
                      top_p=1.0, num_samples=1, stop=[], seed=0, chat=False)
  with pytest.raises(ValueError, match="neither an HF Qwen3 directory"):
    copy_tokenizer_files(tiny_tokenizer_dir(), tmp_path)
    generate_from_dir(str(tmp_path), PROMPTS, max_new_tokens=2, greedy=True, temperature=1.0, top_k=0, top_p=1.0,
                      num_samples=1, stop=[], seed=0, chat=False)


def test_cli_refuses_more_new_tokens_than_the_model_has_positions(hf_dir_and_model):
  path, _ = hf_dir_and_model
  result = subprocess.run([sys.executable, "-m", "atommem_jax.generate", "--model", str(path), "--prompt", PROMPTS[1],
                           "--max_new_tokens", "100000"], capture_output=True, text=True, env=dict(os.environ),
                          timeout=120)
  # Before: accepted, and the decode loop ran far past the model's 1024 positions.
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
  prompt_tokens = len(load_tiny_tokenizer().encode(PROMPTS[1], add_special_tokens=False))
  assert lines[0] == (f"error: --max_new_tokens 100000 after the longest prompt ({prompt_tokens} tokens) needs "
                      f"{100000 + prompt_tokens} positions; the model in {path} has 1024 (max_position_embeddings): "
                      f"use --max_new_tokens {1024 - prompt_tokens} or less")
