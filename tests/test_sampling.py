"""The sampler on a tiny random Qwen3 saved by transformers: parity with HF `generate` and HF logprobs, seeding,
stop conditions, G samples per prompt, bounded compilations, and the sharded path."""
import dataclasses

import jax
import numpy as np
import pytest
import torch

from atommem_jax import sharding
from atommem_jax.checkpoint import copy_tokenizer_files, load_hf
from atommem_jax.data.tokenizer import load_tiny_tokenizer, tiny_tokenizer_dir
from atommem_jax.sampling import chat
from atommem_jax.sampling.config import SamplerConfig, StopReason
from atommem_jax.sampling.sampler import Sampler
from hf_fixtures import make_tiny_hf_checkpoint

VOCAB = 2048  # the tiny default tokenizer's vocabulary, so generated ids decode to text
NEW = 12
rng = np.random.default_rng(0)
PROMPTS = [rng.integers(3, VOCAB, n).tolist() for n in (3, 7, 12, 5)]
GREEDY = SamplerConfig(max_new_tokens=NEW, greedy=True, prompt_buckets=(16, 32), pad_id=0)
SAMPLED = SamplerConfig(max_new_tokens=NEW, temperature=0.9, top_k=200, top_p=0.95, prompt_buckets=(16, 32), pad_id=0)


@pytest.fixture(scope="module")
def hf_dir_and_model(tmp_path_factory):
  path = tmp_path_factory.mktemp("tiny_qwen3")
  hf_model = make_tiny_hf_checkpoint(path, vocab_size=VOCAB)
  copy_tokenizer_files(tiny_tokenizer_dir(), path)
  return path, hf_model


@pytest.fixture(scope="module")
def model(hf_dir_and_model):
  return load_hf(hf_dir_and_model[0])[1]


@pytest.fixture(scope="module")
def greedy(model):
  return Sampler(model, GREEDY)


@pytest.fixture(scope="module")
def sampled(model):
  return Sampler(model, SAMPLED)


@pytest.fixture(scope="module")
def greedy_output(greedy):
  return greedy.generate(PROMPTS)


def hf_logprobs(hf_model, prompt, generated, temperature=1.0):
  """log-softmax of HF's full forward over prompt + generated (logits / temperature), at the generated tokens."""
  ids = torch.tensor([list(prompt) + list(generated)])
  with torch.no_grad():
    logprobs = torch.log_softmax(hf_model(ids).logits[0].double() / temperature, dim=-1)
  return logprobs[len(prompt) - 1:-1].gather(-1, ids[0, len(prompt):, None])[:, 0].numpy()


def hf_greedy(hf_model, prompts):
  """HF `generate`'s NEW greedy tokens for the prompts, left-padded into one batch."""
  width = max(map(len, prompts))
  input_ids = torch.zeros((len(prompts), width), dtype=torch.long)
  attention_mask = torch.zeros_like(input_ids)
  for row, prompt in enumerate(prompts):
    input_ids[row, width - len(prompt):] = torch.tensor(prompt)
    attention_mask[row, width - len(prompt):] = 1
  with torch.no_grad():
    return hf_model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False, max_new_tokens=NEW,
                             min_new_tokens=NEW, eos_token_id=None, pad_token_id=0)[:, width:].numpy()


def test_greedy_equals_hf_generate_on_left_padded_batch(hf_dir_and_model, greedy_output):
  hf_model = hf_dir_and_model[1]
  hf_ids = hf_greedy(hf_model, PROMPTS)
  np.testing.assert_array_equal(greedy_output.tokens_RxN, hf_ids)
  assert greedy_output.lengths_R.tolist() == [NEW] * len(PROMPTS)
  assert greedy_output.stop_reasons_R.tolist() == [StopReason.LENGTH] * len(PROMPTS)


def test_logprobs_are_the_tempered_untruncated_model_distribution(hf_dir_and_model, greedy_output, sampled):
  """Greedy rows report log softmax(logits); rows sampled at T report log softmax(logits / T), before top-k/top-p:
  the policy GRPO trains."""
  hf_model = hf_dir_and_model[1]
  sampled_output = sampled.generate(PROMPTS, seed=3)
  for output, temperature in ((greedy_output, 1.0), (sampled_output, SAMPLED.temperature)):
    for row, prompt in enumerate(PROMPTS):
      reference = hf_logprobs(hf_model, prompt, output.token_ids(row), temperature)
      np.testing.assert_allclose(output.logprobs_RxN[row], reference, atol=1e-4)
    assert output.logprobs_RxN.any()
  # Truncation renormalises onto fewer tokens: the distribution actually sampled is sharper.
  assert np.all(sampled_output.sampling_logprobs_RxN >= sampled_output.logprobs_RxN - 1e-6)
  assert np.any(sampled_output.sampling_logprobs_RxN > sampled_output.logprobs_RxN + 1e-3)


def test_one_query_head_per_kv_head_decodes_as_hf(tmp_path):
  """The embedded default's layout (as many kv heads as query heads: its own decode-attention path) against HF."""
  hf_model = make_tiny_hf_checkpoint(tmp_path, vocab_size=VOCAB, num_key_value_heads=4, seed=5)
  output = Sampler(load_hf(tmp_path)[1], GREEDY).generate(PROMPTS)
  hf_ids = hf_greedy(hf_model, PROMPTS)
  np.testing.assert_array_equal(output.tokens_RxN, hf_ids)
  for row, prompt in enumerate(PROMPTS):
    np.testing.assert_allclose(output.logprobs_RxN[row], hf_logprobs(hf_model, prompt, output.token_ids(row)),
                               atol=1e-4)


def test_compilations_bounded_by_buckets_and_params_are_an_argument(greedy, greedy_output):
  prefill, decode = greedy.functions(1)
  compiled = greedy.trace_count
  assert compiled == 2 and prefill._cache_size() == 1 and decode._cache_size() == 1
  for prompts in ([[5] * 2, [6] * 9, [7] * 16], [[9] * 4] * 3, [[1, 2, 3]] * 4):
    greedy.generate(prompts)
  assert greedy.trace_count == compiled, "prompt lengths or counts inside one bucket recompiled"
  # New weights (as the trainer passes them) change the output without a recompile.
  scaled = jax.tree.map(lambda x: x * 1.5, greedy.params)
  out = greedy.generate(PROMPTS, params=scaled)
  assert greedy.trace_count == compiled and not np.array_equal(out.tokens_RxN, greedy_output.tokens_RxN)
  greedy.generate([[4] * 20])  # the next length bucket: one more prefill and decode
  assert greedy.trace_count == compiled + 2 and decode._cache_size() == 2


def test_seeding_is_per_row_and_independent_of_the_batch(sampled):
  first = sampled.generate(PROMPTS, seed=7)
  np.testing.assert_array_equal(sampled.generate(PROMPTS, seed=7).tokens_RxN, first.tokens_RxN)
  assert not np.array_equal(sampled.generate(PROMPTS, seed=8).tokens_RxN, first.tokens_RxN)
  # One prompt in two rows with different row ids: independent draws.
  twice = sampled.generate([PROMPTS[1], PROMPTS[1]], seed=7, row_ids=[1, 5])
  np.testing.assert_array_equal(twice.tokens_RxN[0], first.tokens_RxN[1])
  assert not np.array_equal(twice.tokens_RxN[0], twice.tokens_RxN[1])
  # Rows 0 and 2 moved to other positions among other prompts, with their row ids: the same samples.
  other = [PROMPTS[2], rng.integers(3, VOCAB, 9).tolist(), PROMPTS[0], PROMPTS[3][:2]]
  moved = sampled.generate(other, seed=7, row_ids=[2, 11, 0, 12])
  np.testing.assert_array_equal(moved.tokens_RxN[0], first.tokens_RxN[2])
  np.testing.assert_array_equal(moved.tokens_RxN[2], first.tokens_RxN[0])
  np.testing.assert_allclose(moved.logprobs_RxN[2], first.logprobs_RxN[0], atol=1e-5)


def test_num_samples_share_one_prefill(hf_dir_and_model, sampled):
  hf_model = hf_dir_and_model[1]
  single = sampled.generate(PROMPTS, seed=4)
  grouped = sampled.generate(PROMPTS, seed=4, num_samples=3)
  assert grouped.tokens_RxN.shape == (3 * len(PROMPTS), NEW) and grouped.num_samples == 3
  for prompt_index, prompt in enumerate(PROMPTS):
    rows = grouped.tokens_RxN[3 * prompt_index:3 * prompt_index + 3]
    # Sample 0 of each prompt is what G = 1 draws; the G samples differ from one another.
    np.testing.assert_array_equal(rows[0], single.tokens_RxN[prompt_index])
    assert len({tuple(r) for r in rows.tolist()}) == 3
    for g in range(3):
      row = 3 * prompt_index + g
      np.testing.assert_allclose(grouped.logprobs_RxN[row],
                                 hf_logprobs(hf_model, prompt, grouped.token_ids(row), SAMPLED.temperature), atol=1e-4)


def _pick_stops(tokenizer, row_tokens):
  """From greedy rows: a token to use as EOS in row 0, a stop string crossing a token boundary in row 1, and a
  one-token stop string in row 2 (so the in-graph match fires), each with the step it completes at."""
  # Whole-character ASCII pieces only: byte fragments of multi-byte characters do not decode on their own.
  is_plain = lambda text: bool(text) and text.isascii() and text.isprintable()
  decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)
  eos_step = next(k for k in range(2, NEW - 2) if row_tokens[0][k] not in row_tokens[0][:k])
  boundary = None
  for j in range(1, NEW - 2):
    left, right = decode([row_tokens[1][j]]), decode([row_tokens[1][j + 1]])
    candidate = left[-1:] + right[:1]
    if is_plain(left) and is_plain(right) and candidate not in decode(row_tokens[1][:j + 1]):
      boundary = (candidate, j + 1)
      break
  single = None
  for m in range(1, NEW - 1):
    text = decode([row_tokens[2][m]])
    if (is_plain(text) and tokenizer.encode(text, add_special_tokens=False) == [row_tokens[2][m]]
        and text not in decode(row_tokens[2][:m])):
      single = (text, m)
      break
  assert boundary and single, "the random model's greedy rows offered no usable stop strings"
  return eos_step, boundary, single


def test_rows_stop_at_eos_and_stop_strings_exactly(model, greedy_output):
  tokenizer = load_tiny_tokenizer()
  rows = greedy_output.tokens_RxN.tolist()
  eos_step, (boundary_stop, boundary_step), (single_stop, single_step) = _pick_stops(tokenizer, rows)
  config = dataclasses.replace(GREEDY, eos_ids=(rows[0][eos_step],), stop_strings=(boundary_stop, single_stop))
  sampler = Sampler(model, config, tokenizer=tokenizer)
  out = sampler.generate(PROMPTS)
  decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)

  assert out.stop_reasons_R[0] == StopReason.EOS and out.lengths_R[0] == eos_step + 1
  assert out.token_ids(0) == rows[0][:eos_step + 1] and out.token_ids(0, include_eos=False) == rows[0][:eos_step]
  assert out.texts[0] == decode(rows[0][:eos_step])
  np.testing.assert_array_equal(out.tokens_RxN[0, eos_step + 1:], 0)
  np.testing.assert_array_equal(out.logprobs_RxN[0, eos_step + 1:], 0.0)
  np.testing.assert_allclose(out.logprobs_RxN[0, :eos_step + 1], greedy_output.logprobs_RxN[0, :eos_step + 1],
                             atol=1e-5)

  # Crossing a token boundary: the text ends exactly at the stop string; tokens end with the one completing it.
  assert out.stop_reasons_R[1] == StopReason.STOP
  assert out.texts[1].endswith(boundary_stop) and out.texts[1].count(boundary_stop) == 1
  assert decode(rows[1][:boundary_step + 1]).startswith(out.texts[1])
  assert out.token_ids(1) == rows[1][:boundary_step + 1]

  assert out.stop_reasons_R[2] == StopReason.STOP and out.token_ids(2) == rows[2][:single_step + 1]
  assert out.texts[2] == decode(rows[2][:single_step + 1])
  # The one-token spelling is matched in-graph: the decode loop itself ended that row.
  prefill, decode_fn = sampler.functions(1)
  padded = np.zeros((4, 16), np.int32)
  mask = np.zeros((4, 16), bool)
  for r, prompt in enumerate(PROMPTS):
    padded[r, 16 - len(prompt):], mask[r, 16 - len(prompt):] = prompt, True
  raw, _ = decode_fn(sampler.params, prefill(sampler.params, padded, mask), padded[:, -1], mask.sum(1),
                     np.ones(4, bool), np.arange(4, dtype=np.int32), jax.random.key(0), sampler.eos_ids_E,
                     sampler.stop_table_SxW)
  assert int(raw.lengths_R[2]) == single_step + 1 and int(raw.stop_reason_R[2]) == StopReason.STOP


def test_sharded_sampling_matches_single_device(model, sampled):
  mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
  on_mesh = Sampler(model, SAMPLED, mesh=mesh)
  assert on_mesh.params["embed"][...].sharding.spec == sharding.DEFAULT_RULES.spec(("vocab", "embed"))
  expected = sampled.generate(PROMPTS, seed=2, num_samples=2)
  got = on_mesh.generate(PROMPTS, seed=2, num_samples=2)
  np.testing.assert_array_equal(got.tokens_RxN, expected.tokens_RxN)
  np.testing.assert_allclose(got.logprobs_RxN, expected.logprobs_RxN, atol=1e-4)


def test_chat_formatting_uses_the_tokenizers_template():
  tokenizer = load_tiny_tokenizer()
  text = chat.chat_text(tokenizer, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
  assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
  ids = chat.user_prompt_ids(tokenizer, "Hi", system="Be brief.")
  assert ids == tokenizer.encode(text, add_special_tokens=False) and ids[0] == tokenizer.convert_tokens_to_ids(
      "<|im_start|>")
  tokenizer.chat_template = None
  with pytest.raises(ValueError, match="has no chat template"):
    chat.chat_text(tokenizer, [{"role": "user", "content": "Hi"}])
  with pytest.raises(ValueError, match="message 0 must have a 'role'"):
    chat.chat_text(load_tiny_tokenizer(), [{"content": "Hi"}])


def test_waves_give_the_same_samples_with_one_compilation(model):
  """5 prompts x 2 samples in waves of 4 rows: 3 waves of 2 prompts (the last padded to the same batch), the same
  tokens and logprobs as the whole batch at once, since each row is seeded by its row id."""
  prompts = PROMPTS + [rng.integers(3, VOCAB, 9).tolist()]
  whole = Sampler(model, SAMPLED).generate(prompts, seed=3, num_samples=2)
  waved_sampler = Sampler(model, dataclasses.replace(SAMPLED, wave_rows=4))
  waved = waved_sampler.generate(prompts, seed=3, num_samples=2)
  np.testing.assert_array_equal(waved.tokens_RxN, whole.tokens_RxN)
  np.testing.assert_array_equal(waved.lengths_R, whole.lengths_R)
  np.testing.assert_allclose(waved.logprobs_RxN, whole.logprobs_RxN, atol=1e-5)
  assert waved_sampler.trace_count == 2  # one prefill and one decode for all three waves
  prefill, _ = waved_sampler.functions(2)
  assert prefill._cache_size() == 1
