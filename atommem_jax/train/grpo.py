"""GRPO math: group advantages, the clipped policy loss, KL to the reference, loss aggregation.

Every function is a small pure function over arrays; the variant is chosen by a plain `if` on `GRPOConfig`. Rows are
turns: one (prompt + response) sequence per row, `N` rows of `T` tokens; `loss_mask_NxT` is True on generated
response tokens only (observation tokens never carry loss). The trajectory advantage is the same on every generated
token of every turn of that trajectory.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

KLEstimator = Literal["k1", "k2", "k3"]
LossAggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
  """GRPO settings; the defaults are the released AtomMem run's."""

  num_generations: int = 8  # G: samples per prompt, one group each
  scale_advantage_by_std: bool = False
  advantage_eps: float = 1e-6
  # Groups whose rewards are all equal carry no learning signal; "filter" masks their tokens out of the loss.
  zero_variance_groups: Literal["keep", "filter"] = "keep"
  clip_low: float = 0.2
  clip_high: float = 0.28
  dual_clip: float | None = 3.0  # c > 1 bounds the loss of negative advantages; None disables it
  log_ratio_clamp: float = 20.0  # |log pi/pi_old| is clamped before exp so one bad token cannot overflow
  kl_coef: float = 0.001
  kl_estimator: KLEstimator = "k3"
  use_kl: bool = True
  loss_aggregation: LossAggregation = "token-mean"  # verl's default
  entropy_coef: float = 0.0
  recompute_old_logprobs: bool = False  # False: the sampler's logprobs (at its temperature) are pi_old

  def __post_init__(self):
    if self.num_generations < 1:
      raise ValueError(f"GRPOConfig.num_generations must be >= 1, got {self.num_generations}")
    if not 0.0 <= self.clip_low < 1.0:
      raise ValueError(f"GRPOConfig.clip_low must be in [0, 1), got {self.clip_low}")
    if self.clip_high < 0.0:
      raise ValueError(f"GRPOConfig.clip_high must be >= 0, got {self.clip_high}")
    if self.dual_clip is not None and self.dual_clip <= 1.0:
      raise ValueError(f"GRPOConfig.dual_clip must be > 1 (or None), got {self.dual_clip}")
    if self.log_ratio_clamp <= 0.0:
      raise ValueError(f"GRPOConfig.log_ratio_clamp must be > 0, got {self.log_ratio_clamp}")
    if self.kl_coef < 0.0:
      raise ValueError(f"GRPOConfig.kl_coef must be >= 0, got {self.kl_coef}")
    if self.advantage_eps <= 0.0:
      raise ValueError(f"GRPOConfig.advantage_eps must be > 0, got {self.advantage_eps}")
    if self.kl_estimator not in ("k1", "k2", "k3"):
      raise ValueError(f"GRPOConfig.kl_estimator must be k1, k2 or k3, got {self.kl_estimator!r}")
    if self.loss_aggregation not in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
      raise ValueError(f"GRPOConfig.loss_aggregation: unknown mode {self.loss_aggregation!r}")
    if self.zero_variance_groups not in ("keep", "filter"):
      raise ValueError(f"GRPOConfig.zero_variance_groups must be keep or filter, got {self.zero_variance_groups!r}")


def group_advantages(rewards_PxG: jax.Array, config: GRPOConfig) -> tuple[jax.Array, jax.Array]:
  """Advantage of each sample against its group, and whether the sample's group carries signal.

  Returns `(advantages_PxG, valid_PxG)`. A group of one has advantage 0 (nothing to compare with). With
  `zero_variance_groups == "filter"` every sample of a group whose rewards are all equal is marked invalid.
  """
  rewards_PxG = rewards_PxG.astype(jnp.float32)
  group_size = rewards_PxG.shape[1]
  if group_size == 1:
    return jnp.zeros_like(rewards_PxG), jnp.ones_like(rewards_PxG, dtype=bool)
  mean_Px1 = rewards_PxG.mean(axis=1, keepdims=True)
  advantages_PxG = rewards_PxG - mean_Px1
  # Unbiased std, as torch.std (the reference GRPO implementations) computes it.
  std_Px1 = jnp.std(rewards_PxG, axis=1, keepdims=True, ddof=1)
  if config.scale_advantage_by_std:
    advantages_PxG = advantages_PxG / (std_Px1 + config.advantage_eps)
  if config.zero_variance_groups == "filter":
    has_signal_Px1 = jnp.max(rewards_PxG, axis=1, keepdims=True) > jnp.min(rewards_PxG, axis=1, keepdims=True)
    valid_PxG = jnp.broadcast_to(has_signal_Px1, rewards_PxG.shape)
  else:
    valid_PxG = jnp.ones_like(rewards_PxG, dtype=bool)
  return advantages_PxG, valid_PxG


def token_advantages(advantage_N: jax.Array, loss_mask_NxT: jax.Array) -> jax.Array:
  """The row's (trajectory's) advantage on each of its generated tokens, zero elsewhere."""
  return jnp.where(loss_mask_NxT, advantage_N[:, None].astype(jnp.float32), 0.0)


def clipped_policy_loss(logprobs_NxT: jax.Array, old_logprobs_NxT: jax.Array, advantages_NxT: jax.Array,
                        config: GRPOConfig) -> tuple[jax.Array, jax.Array]:
  """Per-token PPO loss with asymmetric clip and dual clip; returns `(loss_NxT, clipped_NxT)`.

  loss = -min(r A, clip(r, 1 - low, 1 + high) A); for A < 0 it is further capped at -c A (dual clip), so a token
  whose ratio exploded cannot dominate the batch. `clipped_NxT` marks tokens whose gradient the clip removed.
  """
  log_ratio_NxT = jnp.clip(logprobs_NxT - old_logprobs_NxT, -config.log_ratio_clamp, config.log_ratio_clamp)
  ratio_NxT = jnp.exp(log_ratio_NxT)
  unclipped_NxT = -advantages_NxT * ratio_NxT
  clipped_ratio_NxT = jnp.clip(ratio_NxT, 1.0 - config.clip_low, 1.0 + config.clip_high)
  clipped_NxT = -advantages_NxT * clipped_ratio_NxT
  loss_NxT = jnp.maximum(unclipped_NxT, clipped_NxT)
  was_clipped_NxT = clipped_NxT > unclipped_NxT
  if config.dual_clip is not None:
    dual_bound_NxT = -advantages_NxT * config.dual_clip
    dual_clipped_NxT = (advantages_NxT < 0) & (loss_NxT > dual_bound_NxT)
    loss_NxT = jnp.where(advantages_NxT < 0, jnp.minimum(loss_NxT, dual_bound_NxT), loss_NxT)
    was_clipped_NxT = was_clipped_NxT | dual_clipped_NxT
  return loss_NxT, was_clipped_NxT


def kl_penalty(logprobs_NxT: jax.Array, ref_logprobs_NxT: jax.Array, estimator: KLEstimator) -> jax.Array:
  """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman's k1, k2, k3)."""
  log_ratio_NxT = logprobs_NxT - ref_logprobs_NxT  # log pi / pi_ref
  if estimator == "k1":
    return log_ratio_NxT
  if estimator == "k2":
    return 0.5 * jnp.square(log_ratio_NxT)
  if estimator == "k3":
    # r - 1 - log r with r = pi_ref / pi: unbiased, always >= 0, low variance. Clamped as verl does so that an
    # unlikely token cannot produce an inf.
    neg_log_ratio_NxT = jnp.clip(-log_ratio_NxT, -20.0, 20.0)
    return jnp.clip(jnp.exp(neg_log_ratio_NxT) - neg_log_ratio_NxT - 1.0, -10.0, 10.0)
  raise ValueError(f"unknown KL estimator {estimator!r}")


def aggregate_loss(loss_NxT: jax.Array, loss_mask_NxT: jax.Array, mode: LossAggregation, *,
                   num_tokens: jax.Array | None = None, num_rows: jax.Array | None = None) -> jax.Array:
  """Reduces a per-token loss to a scalar.

  `num_tokens` / `num_rows` are the normalisers of the whole mini-batch; passing them lets micro-batches of one
  mini-batch be summed to exactly the full-batch loss (gradient accumulation). By default they are this batch's.
  """
  mask_NxT = loss_mask_NxT.astype(jnp.float32)
  masked_NxT = loss_NxT * mask_NxT
  tokens_N = mask_NxT.sum(axis=1)
  if num_tokens is None:
    num_tokens = tokens_N.sum()
  if num_rows is None:
    num_rows = (tokens_N > 0).sum()
  if mode == "token-mean":
    return masked_NxT.sum() / jnp.maximum(num_tokens, 1.0)
  if mode == "seq-mean-token-mean":
    return (masked_NxT.sum(axis=1) / jnp.maximum(tokens_N, 1.0)).sum() / jnp.maximum(num_rows, 1.0)
  if mode == "seq-mean-token-sum":
    return masked_NxT.sum() / jnp.maximum(num_rows, 1.0)
  raise ValueError(f"unknown loss aggregation {mode!r}")


def entropy_from_logits(logits_NxTxV: jax.Array) -> jax.Array:
  """Per-token entropy of the softmax distribution, in nats."""
  log_probs_NxTxV = jax.nn.log_softmax(logits_NxTxV.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.exp(log_probs_NxTxV) * log_probs_NxTxV, axis=-1)


def grpo_loss(logprobs_NxT: jax.Array, old_logprobs_NxT: jax.Array, ref_logprobs_NxT: jax.Array | None,
              advantage_N: jax.Array, loss_mask_NxT: jax.Array, entropy_NxT: jax.Array, config: GRPOConfig, *,
              num_tokens: jax.Array | None = None, num_rows: jax.Array | None = None
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The GRPO objective of one (micro-)batch and its metrics (each aggregated like the loss)."""
  advantages_NxT = token_advantages(advantage_N, loss_mask_NxT)
  policy_NxT, clipped_NxT = clipped_policy_loss(logprobs_NxT, old_logprobs_NxT, advantages_NxT, config)

  def aggregate(x_NxT):
    return aggregate_loss(x_NxT, loss_mask_NxT, config.loss_aggregation, num_tokens=num_tokens, num_rows=num_rows)

  loss = aggregate(policy_NxT)
  metrics = {"policy_loss": loss, "clip_fraction": aggregate(clipped_NxT.astype(jnp.float32)),
             "entropy": aggregate(jax.lax.stop_gradient(entropy_NxT))}
  if config.use_kl and ref_logprobs_NxT is not None:
    kl = aggregate(kl_penalty(logprobs_NxT, ref_logprobs_NxT, config.kl_estimator))
    loss = loss + config.kl_coef * kl
    metrics["kl"] = kl
  if config.entropy_coef:
    loss = loss - config.entropy_coef * aggregate(entropy_NxT)
  metrics["loss"] = loss
  return loss, metrics
