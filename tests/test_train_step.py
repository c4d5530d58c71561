"""The jitted train step: accumulation equals the full batch, a (2, 2, 2) mesh equals one device, NaN is skipped,
the advantage's sign decides which way a response moves."""
import jax
import numpy as np
import pytest
from flax import nnx

from atommem_jax import sharding
from atommem_jax.model import Qwen3
from atommem_jax.model.config import PRESETS
from atommem_jax.sampling import Sampler, SamplerConfig
from atommem_jax.train import batching, grpo, step

MODEL = PRESETS["tiny"]
OPT = step.OptimizerConfig(learning_rate=1e-3, warmup_steps=1, decay_steps=10, weight_decay=0.0)
GRPO = step.StepConfig(objective="grpo", grpo=grpo.GRPOConfig(kl_coef=0.1, kl_estimator="k3"))


def _batch(seed: int, rows: int = 8, microbatches: int = 1) -> batching.TrainBatch:
  rng = np.random.default_rng(seed)
  prompts = [list(rng.integers(3, MODEL.vocab_size, size=rng.integers(2, 8))) for _ in range(rows)]
  responses = [list(rng.integers(3, MODEL.vocab_size, size=rng.integers(1, 8))) for _ in range(rows)]
  logprobs = [list(rng.normal(-6.0, 0.3, size=len(r))) for r in responses]
  batch, _ = batching.pack_rows(prompts, responses, buckets=(16,), pad_id=0, response_logprobs=logprobs,
                                advantages=list(rng.normal(size=rows)))
  batch = batch.replace(ref_logprobs_NxT=np.where(batch.loss_mask_NxT, -6.2, 0.0).astype(np.float32))
  return batching.split_microbatches(batch, microbatches)


def _setup(mesh_config: sharding.MeshConfig, config: step.StepConfig = GRPO):
  devices = jax.devices()[:int(np.prod(mesh_config.shape))]
  mesh = sharding.make_mesh(mesh_config, devices)
  graphdef, params, params_sharding = step.init_params(MODEL, seed=0, mesh=mesh)
  tx = step.make_optimizer(OPT)
  shardings = step.state_shardings(tx, params_sharding, jax.eval_shape(lambda: params), mesh)
  state = step.init_train_state(params, tx, shardings)
  return mesh, state, step.make_train_step(graphdef, tx, config, shardings, mesh), step.make_logprobs_fn(
      graphdef, params_sharding, mesh)


def _run(mesh_config, microbatches, num_steps=2):
  mesh, state, step_fn, _ = _setup(mesh_config)
  losses = []
  for i in range(num_steps):
    batch = step.shard_batch(_batch(i, microbatches=microbatches), step.batch_shardings(mesh))
    state, metrics = step_fn(state, batch)
    losses.append(float(metrics["loss"]))
  return losses, jax.device_get(state.params), metrics


@pytest.fixture(scope="module")
def single_device_run():
  return _run(sharding.MeshConfig(), microbatches=1)


def test_gradient_accumulation_equals_full_batch(single_device_run):
  losses, params, metrics = single_device_run
  acc_losses, acc_params, _ = _run(sharding.MeshConfig(), microbatches=4)
  np.testing.assert_allclose(acc_losses, losses, rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), acc_params, params)
  assert losses[0] != 0.0 and float(metrics["update_skipped"]) == 0.0
  for key in ("kl", "clip_fraction", "entropy", "grad_norm"):
    assert np.isfinite(float(metrics[key]))


def test_data_fsdp_tensor_mesh_matches_single_device(single_device_run):
  losses, params, _ = single_device_run
  mesh_losses, mesh_params, _ = _run(sharding.MeshConfig(data=2, fsdp=2, tensor=2), microbatches=1)
  np.testing.assert_allclose(mesh_losses, losses, rtol=0, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), mesh_params, params)


def test_nonfinite_loss_skips_update_and_counts():
  mesh, state, step_fn, _ = _setup(sharding.MeshConfig())
  before = jax.device_get(state.params)
  bad = _batch(0)
  bad = bad.replace(advantage_N=np.full_like(bad.advantage_N, np.nan))
  state, metrics = step_fn(state, step.shard_batch(bad, step.batch_shardings(mesh)))
  assert float(metrics["update_skipped"]) == 1.0
  assert int(state.nonfinite_streak) == 1 and int(state.skipped_updates) == 1 and int(state.step) == 1
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), before)
  # The skipped update did not advance the schedule: the next one has warm-up lr 0, the one after moves params.
  for i in (1, 2):
    state, metrics = step_fn(state, step.shard_batch(_batch(i), step.batch_shardings(mesh)))
  assert int(state.nonfinite_streak) == 0 and int(state.skipped_updates) == 1 and int(state.step) == 3
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), jax.device_get(state.params), before)
  assert any(jax.tree.leaves(changed))


def test_grpo_updates_raise_rewarded_responses_and_lower_penalised_ones():
  """End to end through the jitted step: the sign of the advantage decides which way a response's logprob moves."""
  mesh, state, step_fn, logprobs_fn = _setup(
      sharding.MeshConfig(), step.StepConfig(objective="grpo", grpo=grpo.GRPOConfig(use_kl=False)))
  prompt = [5, 6, 7, 8]
  batch, _ = batching.pack_rows([prompt] * 4, [[11, 12, 13], [21, 22, 23], [31, 32], [41, 42, 43, 44]], buckets=(16,),
                                pad_id=0, advantages=[0.75, -0.25, -0.25, -0.25])
  batch = step.shard_batch(batching.split_microbatches(batch, 1), step.batch_shardings(mesh))

  def response_logprobs(params):
    return np.asarray((logprobs_fn(params, batch) * batch.loss_mask_NxT).sum(-1))[0]

  before = response_logprobs(state.params)
  for _ in range(3):  # the first update is at warm-up lr 0; old logprobs are the current policy's (on-policy)
    state, _ = step_fn(state, batch.replace(old_logprobs_NxT=logprobs_fn(state.params, batch)))
  change = response_logprobs(state.params) - before
  assert change[0] > 0.1, change
  assert np.all(change[1:] < 0), change


def test_grpo_trains_the_tempered_policy_the_sampler_draws_from():
  """With a sampler temperature T, log pi, pi_old, the reference and the entropy metric are all softmax(logits / T)'s,
  so old logprobs recomputed at T make the first update exactly on-policy (ratio 1)."""
  temperature = 0.5
  config = step.StepConfig(objective="grpo", grpo=grpo.GRPOConfig(use_kl=False), temperature=temperature)
  mesh, state, step_fn, _ = _setup(sharding.MeshConfig(), config)
  graphdef, params, params_sharding = step.init_params(MODEL, seed=0, mesh=mesh)
  tempered_logprobs_fn = step.make_logprobs_fn(graphdef, params_sharding, mesh, temperature=temperature)
  batch = step.shard_batch(_batch(0), step.batch_shardings(mesh))

  micro = jax.tree.map(lambda x: x[0], batch)
  logits, _ = nnx.merge(graphdef, params)(micro.tokens_NxT, micro.positions_NxT, micro.mask_NxT)
  by_hand = jax.nn.log_softmax(np.asarray(logits, np.float32)[:, :-1] / temperature, axis=-1)
  expected = np.take_along_axis(by_hand, np.asarray(micro.tokens_NxT)[:, 1:, None], axis=-1)[..., 0]
  mask = np.asarray(micro.loss_mask_NxT)[:, 1:]
  got = np.asarray(tempered_logprobs_fn(params, batch))[0, :, 1:]
  np.testing.assert_allclose(got[mask], expected[mask], atol=1e-5)
  untempered = np.asarray(step.make_logprobs_fn(graphdef, params_sharding, mesh)(params, batch))[0, :, 1:]
  assert np.abs(untempered[mask] - expected[mask]).max() > 0.1

  on_policy = batch.replace(old_logprobs_NxT=tempered_logprobs_fn(params, batch))
  _, metrics = step_fn(state, on_policy)
  entropy = -(np.exp(by_hand) * by_hand).sum(-1)
  assert float(metrics["clip_fraction"]) == 0.0
  np.testing.assert_allclose(float(metrics["entropy"]), entropy[mask].mean(), rtol=1e-5)
  advantages = np.asarray(micro.advantage_N)[:, None] * mask
  np.testing.assert_allclose(float(metrics["policy_loss"]), -advantages.sum() / mask.sum(), rtol=1e-5, atol=1e-6)


def test_the_samplers_logprobs_are_pi_old_of_the_tempered_policy():
  """Rollouts sampled at temperature T report log softmax(logits / T) of their tokens: the step's tempered pi_old,
  so GRPO at T != 1 needs no recomputation."""
  temperature = 0.7
  mesh = sharding.make_mesh(sharding.MeshConfig(), jax.devices()[:1])
  graphdef, params, params_sharding = step.init_params(MODEL, seed=0, mesh=mesh)
  sampler = Sampler(nnx.merge(graphdef, params), SamplerConfig(max_new_tokens=6, temperature=temperature, top_p=0.9,
                                                               prompt_buckets=(16,), pad_id=0))
  rng = np.random.default_rng(1)
  prompts = [rng.integers(3, MODEL.vocab_size, n).tolist() for n in (3, 7, 5, 9)]
  out = sampler.generate(prompts, seed=2, num_samples=2)
  rows = range(out.tokens_RxN.shape[0])
  batch, _ = batching.pack_rows([prompts[r // 2] for r in rows], [out.token_ids(r) for r in rows], buckets=(16,),
                                pad_id=0, response_logprobs=[out.logprobs_RxN[r, :out.lengths_R[r]] for r in rows])
  batch = step.shard_batch(batching.split_microbatches(batch, 1), step.batch_shardings(mesh))
  mask = np.asarray(batch.loss_mask_NxT)
  for temperature_fn, close in ((temperature, True), (1.0, False)):
    recomputed = np.asarray(step.make_logprobs_fn(graphdef, params_sharding, mesh, temperature=temperature_fn)(
        params, batch))
    gap = np.abs(recomputed[mask] - np.asarray(batch.old_logprobs_NxT)[mask]).max()
    assert (gap < 1e-4) == close, (temperature_fn, gap)


@pytest.mark.parametrize("objective,remat,chunk", [("grpo", "full", 5), ("sft", "dots", 4)])
def test_remat_and_chunked_lm_head_leave_loss_and_gradients_equal(objective, remat, chunk):
  """The LM head in chunks of 5 (4) positions, 3 (4, the last padded) chunks of a 16-token row, under per-layer remat
  gives the loss, metrics and gradients of whole-row logits without remat."""
  config = step.StepConfig(objective=objective, grpo=grpo.GRPOConfig(kl_coef=0.1, entropy_coef=0.01),
                           temperature=0.7 if objective == "grpo" else 1.0)
  mesh = sharding.make_mesh(sharding.MeshConfig(), jax.devices()[:1])
  graphdef, params, _ = step.init_params(MODEL, seed=0, mesh=mesh)
  micro = jax.tree.map(lambda x: x[0], _batch(3))
  num_tokens = micro.loss_mask_NxT.sum().astype(np.float32)
  num_rows = (micro.loss_mask_NxT.sum(-1) > 0).sum().astype(np.float32)

  loss_and_grads = jax.jit(
      lambda params, graphdef: jax.value_and_grad(step._microbatch_loss, has_aux=True)(
          params, graphdef, micro, num_tokens, num_rows, config), static_argnums=1)
  (want_loss, want_metrics), want_grads = loss_and_grads(params, graphdef)
  assert MODEL.logits_chunk >= micro.tokens_NxT.shape[1] and MODEL.remat == "none"
  other = nnx.split(nnx.eval_shape(lambda: Qwen3(MODEL.replace(remat=remat, logits_chunk=chunk),
                                                 rngs=nnx.Rngs(0))))[0]
  (loss, metrics), grads = loss_and_grads(params, other)
  np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-5, atol=1e-5)
  assert set(metrics) == set(want_metrics)
  for key in want_metrics:
    np.testing.assert_allclose(float(metrics[key]), float(want_metrics[key]), rtol=1e-5, atol=1e-5, err_msg=key)
  for a, b in zip(jax.tree.leaves(want_grads), jax.tree.leaves(grads)):
    assert np.abs(np.asarray(a)).max() > 0
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)
