"""GRPO math against hand-computed values."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from atommem_jax.train import grpo

DEFAULT = grpo.GRPOConfig()


def test_group_advantages_mean_only_and_std_scaled():
  rewards = jnp.array([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
  adv, valid = grpo.group_advantages(rewards, DEFAULT)
  np.testing.assert_allclose(adv, [[0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0]], atol=1e-7)
  assert bool(valid.all())
  scaled = grpo.GRPOConfig(scale_advantage_by_std=True, advantage_eps=1e-6)
  adv, _ = grpo.group_advantages(rewards, scaled)
  std = np.std([1.0, 0.0, 0.0, 1.0], ddof=1)  # 0.57735
  np.testing.assert_allclose(adv[0], np.array([0.5, -0.5, -0.5, 0.5]) / (std + 1e-6), rtol=1e-6)
  np.testing.assert_allclose(adv[1], 0.0, atol=1e-7)  # zero variance: 0 / eps stays 0


def test_group_of_one_gets_zero_and_zero_variance_filter():
  adv, valid = grpo.group_advantages(jnp.array([[1.0], [0.0]]), DEFAULT)
  np.testing.assert_array_equal(adv, 0.0)
  assert bool(valid.all())
  rewards = jnp.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
  _, valid = grpo.group_advantages(rewards, grpo.GRPOConfig(zero_variance_groups="filter"))
  np.testing.assert_array_equal(valid, [[False] * 3, [True] * 3])
  _, valid = grpo.group_advantages(rewards, grpo.GRPOConfig(zero_variance_groups="keep"))
  assert bool(valid.all())


def test_token_advantages_broadcast_on_generated_tokens_only():
  mask = jnp.array([[0, 1, 1, 0], [1, 0, 0, 1]], bool)
  out = grpo.token_advantages(jnp.array([2.0, -1.0]), mask)
  np.testing.assert_array_equal(out, [[0, 2, 2, 0], [-1, 0, 0, -1]])


def _loss(ratio, adv, config=DEFAULT):
  old = jnp.zeros((1, 1))
  loss, clipped = grpo.clipped_policy_loss(jnp.log(jnp.array([[ratio]])), old, jnp.array([[adv]]), config)
  return float(loss[0, 0]), bool(clipped[0, 0])


@pytest.mark.parametrize("ratio,adv,want,clipped", [
    (1.0, 1.0, -1.0, False),
    (1.1, 1.0, -1.1, False),
    (1.5, 1.0, -1.28, True),     # positive advantage: capped at 1 + clip_high
    (0.5, 1.0, -0.5, False),     # positive advantage, low ratio: pessimistic unclipped term wins
    (0.5, -1.0, 0.8, True),      # negative advantage: floored at 1 - clip_low
    (1.5, -1.0, 1.5, False),     # negative advantage, high ratio: unclipped term wins
    (5.0, -1.0, 3.0, True),      # dual clip: capped at c * |A|
    (2.9, -1.0, 2.9, False),     # just under the dual clip
])
def test_clip_boundaries_and_dual_clip(ratio, adv, want, clipped):
  loss, was_clipped = _loss(ratio, adv)
  assert loss == pytest.approx(want, rel=1e-5)
  assert was_clipped == clipped


def test_dual_clip_off_and_log_ratio_clamp():
  loss, _ = _loss(5.0, -1.0, grpo.GRPOConfig(dual_clip=None))
  assert loss == pytest.approx(5.0, rel=1e-5)
  config = grpo.GRPOConfig(dual_clip=None, log_ratio_clamp=1.0)
  loss, _ = grpo.clipped_policy_loss(jnp.array([[100.0]]), jnp.array([[0.0]]), jnp.array([[-1.0]]), config)
  assert float(loss[0, 0]) == pytest.approx(math.e, rel=1e-6)
  assert np.isfinite(float(loss[0, 0]))


def test_kl_estimators_hand_values():
  logp = jnp.array([[math.log(0.5)]])
  ref = jnp.array([[math.log(0.25)]])
  lr = math.log(2.0)  # log pi / pi_ref
  assert float(grpo.kl_penalty(logp, ref, "k1")[0, 0]) == pytest.approx(lr, rel=1e-6)
  assert float(grpo.kl_penalty(logp, ref, "k2")[0, 0]) == pytest.approx(0.5 * lr * lr, rel=1e-6)
  assert float(grpo.kl_penalty(logp, ref, "k3")[0, 0]) == pytest.approx(0.5 - 1.0 + lr, rel=1e-6)
  assert float(grpo.kl_penalty(ref, ref, "k3")[0, 0]) == 0.0


def test_aggregations():
  loss = jnp.array([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0]])
  mask = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)
  assert float(grpo.aggregate_loss(loss, mask, "token-mean")) == pytest.approx(10.0 / 4)
  assert float(grpo.aggregate_loss(loss, mask, "seq-mean-token-mean")) == pytest.approx((2.0 + 4.0) / 2)
  assert float(grpo.aggregate_loss(loss, mask, "seq-mean-token-sum")) == pytest.approx((6.0 + 4.0) / 2)
  # Micro-batches with the global normalisers sum to the full-batch value.
  for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
    full = grpo.aggregate_loss(loss, mask, mode)
    parts = sum(grpo.aggregate_loss(loss[i:i + 1], mask[i:i + 1], mode, num_tokens=jnp.float32(4),
                                    num_rows=jnp.float32(2)) for i in range(2))
    assert float(parts) == pytest.approx(float(full), rel=1e-6)


def test_entropy_and_full_loss():
  uniform = jnp.zeros((1, 1, 4))
  assert float(grpo.entropy_from_logits(uniform)[0, 0]) == pytest.approx(math.log(4), rel=1e-6)
  config = grpo.GRPOConfig(kl_coef=0.5, kl_estimator="k1", loss_aggregation="token-mean")
  logp = jnp.log(jnp.array([[1.0, 1.5]]))
  loss, metrics = grpo.grpo_loss(logp, jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.array([1.0]),
                                 jnp.array([[True, True]]), jnp.zeros((1, 2)), config)
  policy = (-1.0 + -1.28) / 2
  kl = (0.0 + math.log(1.5)) / 2
  assert float(metrics["policy_loss"]) == pytest.approx(policy, rel=1e-6)
  assert float(metrics["kl"]) == pytest.approx(kl, rel=1e-6)
  assert float(metrics["clip_fraction"]) == pytest.approx(0.5)
  assert float(loss) == pytest.approx(policy + 0.5 * kl, rel=1e-6)
  _, metrics = grpo.grpo_loss(logp, jnp.zeros((1, 2)), None, jnp.array([1.0]), jnp.array([[True, True]]),
                              jnp.zeros((1, 2)), grpo.GRPOConfig(use_kl=False))
  assert "kl" not in metrics


@pytest.mark.parametrize("bad", [dict(clip_low=1.0), dict(dual_clip=0.5), dict(kl_estimator="k4"),
                                 dict(loss_aggregation="sum"), dict(num_generations=0), dict(kl_coef=-1.0)])
def test_config_validation(bad):
  with pytest.raises(ValueError):
    grpo.GRPOConfig(**bad)
