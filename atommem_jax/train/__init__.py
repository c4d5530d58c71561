"""Training: GRPO math, the SFT loss, the sharded train step, and the resumable main loop.

Public API:
  grpo.GRPOConfig, grpo.group_advantages / token_advantages / clipped_policy_loss / kl_penalty / aggregate_loss /
    entropy_from_logits / grpo_loss                 -- small pure functions chosen by `if` on the config
  sft.read_sft_pairs / write_sft_pairs / tokenize_pairs / sft_loss
  batching.TrainBatch, pack_rows, token_logprobs, split_microbatches
  step.OptimizerConfig, StepConfig, TrainState, make_optimizer, init_params, state_shardings, init_train_state,
    batch_shardings, shard_batch, train_step, make_train_step, make_logprobs_fn
  config.TrainConfig (+ stage configs; `eval` is a HeldOutEvalConfig), loop.train_and_evaluate(config, workdir,
    *, reward_fn=None)   reward_fn(trajectory) -> float scores rollouts and evaluations (default: agent.reward)
  task_split.split_task(task_config) -> TaskSplit   the training examples and held-out episodes
  oracle_pairs.sft_pairs / recitation_pairs         the SFT stage's (prompt, completion) pairs
  drills.is_drill_step / drill_batch                SFT drills, each a pure function of (seed, step)
  params_io.init_model / export_params              the starting model (preset or checkpoint) and exported params
  grpo_stage.GRPOStage(.collect -> RolloutUpdates, .update), begin   rollout -> rows -> advantages -> batches -> updates
  python -m atommem_jax.train --config experiments/grpo_hotpot.py[:tiny] --workdir DIR [--config.key=value]

Workdir layout: checkpoints/<step>/{state,data,meta} (Orbax; state = TrainState with params as a pure dict),
reference/ (the frozen KL policy), metrics.jsonl (one row per optimizer step), eval.jsonl (greedy evaluations,
one row per size evaluated), tensorboard/, sft_pairs.jsonl (oracle pairs), params_sft/ and params/ (Orbax parameter
dirs in the `checkpoint.save_params` layout, for evaluation).
"""
