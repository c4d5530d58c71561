"""SFT: JSONL reading, packing with a completion-only loss mask, the loss against torch, zero gradient when masked."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atommem_jax.train import batching, sft


def test_read_write_roundtrip_and_errors(tmp_path):
  path = tmp_path / "pairs.jsonl"
  sft.write_sft_pairs(path, [("p1 ü", "c1"), ("p2", "c2")])
  assert sft.read_sft_pairs(path) == [("p1 ü", "c1"), ("p2", "c2")]
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
  with pytest.raises(ValueError, match=r"bad.jsonl: line 2: key 'completion'"):
    sft.read_sft_pairs(bad)
  bad.write_text('{"prompt": "a", "completion": "b"}\nnot json\n')
  with pytest.raises(ValueError, match=r"bad.jsonl: line 2: not valid JSON"):
    sft.read_sft_pairs(bad)
  bad.write_text("\n")
  with pytest.raises(ValueError, match="no \\(prompt, completion\\) pairs"):
    sft.read_sft_pairs(bad)


def test_pack_rows_masks_completion_only_and_buckets():
  batch, stats = batching.pack_rows([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], buckets=(4, 8, 16), pad_id=0, num_rows=3)
  assert batch.shape == (3, 8)
  np.testing.assert_array_equal(batch.tokens_NxT[0], [1, 2, 3, 5, 6, 0, 0, 0])
  np.testing.assert_array_equal(batch.loss_mask_NxT[0], [0, 0, 0, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(batch.loss_mask_NxT[1], [0, 1, 1, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(batch.positions_NxT[1], [0, 1, 2, 3, 0, 0, 0, 0])
  assert not batch.mask_NxT[2].any() and not batch.loss_mask_NxT[2].any()
  # Too long: the prompt loses its start, the response stays whole.
  batch, stats = batching.pack_rows([[1, 2, 3, 4, 5]], [[6, 7]], buckets=(4,), pad_id=0)
  np.testing.assert_array_equal(batch.tokens_NxT[0], [4, 5, 6, 7])
  assert stats["truncated_rows"] == 1
  with pytest.raises(ValueError, match="row 0: response of 4 tokens"):
    batching.pack_rows([[1]], [[1, 2, 3, 4]], buckets=(4,), pad_id=0)


def test_sft_loss_matches_torch_cross_entropy():
  import torch
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 6, 11)).astype(np.float32)
  tokens = rng.integers(0, 11, size=(2, 6)).astype(np.int32)
  loss_mask = np.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]], bool)
  loss, metrics = sft.sft_loss(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(loss_mask))
  labels = np.where(loss_mask, tokens, -100)[:, 1:]
  want = torch.nn.functional.cross_entropy(torch.from_numpy(logits[:, :-1]).reshape(-1, 11),
                                           torch.from_numpy(labels.astype(np.int64)).reshape(-1), ignore_index=-100)
  assert float(loss) == pytest.approx(float(want), rel=1e-5)
  assert 0.0 <= float(metrics["token_accuracy"]) <= 1.0


def test_masked_token_logits_get_exactly_zero_gradient():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(2, 6, 11)).astype(np.float32))
  tokens = jnp.asarray(rng.integers(0, 11, size=(2, 6)).astype(np.int32))
  loss_mask = np.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]], bool)
  grad = jax.grad(lambda x: sft.sft_loss(x, tokens, jnp.asarray(loss_mask))[0])(logits)
  # The logits at t predict token t + 1: they carry gradient exactly when token t + 1 is a completion token.
  predicts_target = np.zeros_like(loss_mask)
  predicts_target[:, :-1] = loss_mask[:, 1:]
  grad = np.asarray(grad)
  assert np.all(grad[~predicts_target] == 0.0)
  assert np.all(np.abs(grad[predicts_target]).sum(-1) > 0)


def test_token_logprobs_alignment():
  logits = jnp.log(jnp.array([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]]))
  lp = batching.token_logprobs(logits, jnp.array([[0, 1, 0]]))
  np.testing.assert_allclose(lp, np.log([[1.0, 0.5, 0.9]]), rtol=1e-6)
