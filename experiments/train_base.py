r"""Shared settings of the training experiment files (not an experiment itself: it has no `get_config`).

`released()` holds the released AtomMem run's settings (DESIGN.md "Training" and "Released long-context details":
bundles of 2..10 questions for half of the documents, every question's whole context as gold, the released chunk
windows and middle truncation, the prompt that shows the reads in a row); `tiny()` the embedded default that trains
on CPU with no downloads. The experiment files start from one of them and set their task and stages.
"""
import ml_collections


def released() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 200
  c.checkpoint_every = 10
  c.keep_checkpoints = 3
  c.log_every = 1
  c.max_nonfinite_streak = 5
  c.debug_kill_at_step = -1
  c.mesh = dict(data=1, fsdp=1, tensor=1)
  # bfloat16 activations over float32 master weights; per-layer remat; attention by platform (splash on TPU).
  c.model = dict(preset="qwen3_8b", checkpoint="", tokenizer="", attention="auto", remat="full", logits_chunk=1024,
                 dtype="bfloat16", param_dtype="float32", initializer_range=0.0)
  c.task = dict(dataset="hotpotqa", path="", examples_path="", num_eval_episodes=64, grpo_num_docs=0,
                grpo_short_fraction=0.0,
                synthetic=dict(seed=0, num_documents=256, num_questions=64), synthetic_worlds=1,
                long_context=dict(num_docs=200, seed=0, single_question_fraction=0.5, gold="all_context"))
  c.agent = dict(method="atommem", chunk_tokens=4000, overlap_tokens=100, max_chunks=40, max_steps=40,
                 query_limit=3, query_limit_action="give_up", template_dir="released", chunking="released",
                 truncation="middle", reward="per_question", format_penalty=0.0)
  c.memory = dict(capacity=256, entry_tokens=256, scratchpad_tokens=1024, query_tokens=128, embed_dim=256, top_k=6,
                  overflow="evict_oldest", max_ops_per_turn=16, spill="none")
  c.embedder = "hashing"  # or a Qwen3-Embedding checkpoint dir of width memory.embed_dim
  c.rollout = dict(engine="host")
  c.sft = dict(steps=0, pairs_path="", oracle_episodes=64, min_reward=0.5, recitation_pairs=0, oracle_extra_notes=0.0,
               oracle_extra_notes_from=0, drill="copy", recite_layout="inline",
               drill_steps=0, drill_every=0, drill_batch_size=32, batch_size=64, num_microbatches=8,
               max_prompt_tokens=8192, max_completion_tokens=4096,
               optimizer=dict(learning_rate=1e-5, warmup_steps=10, decay_steps=200, end_learning_rate_ratio=0.1,
                              b1=0.9, b2=0.999, weight_decay=0.01, max_grad_norm=1.0))
  c.grpo = dict(
      loss=dict(num_generations=8, scale_advantage_by_std=False, zero_variance_groups="keep", clip_low=0.2,
                clip_high=0.28, dual_clip=3.0, kl_coef=0.001, kl_estimator="k3", use_kl=True,
                loss_aggregation="token-mean", entropy_coef=0.0, recompute_old_logprobs=False),
      prompts_per_rollout=16, updates_per_rollout=1, microbatch_rows=8,
      length_buckets=(4096, 8192, 12288, 16384),
      # Rollouts generate in waves of 16 rows (prompts x samples), so the KV cache (~3 GB a row at 20K slots)
      # does not grow with prompts_per_rollout.
      sampler=dict(temperature=1.0, top_p=0.99, max_new_tokens=4096,
                   prompt_buckets=(4096, 8192, 12288, 16384), wave_rows=16),
      optimizer=dict(learning_rate=1e-6, warmup_steps=20, decay_steps=200, end_learning_rate_ratio=1.0,
                     b1=0.9, b2=0.999, weight_decay=0.01, max_grad_norm=1.0))
  c.eval = dict(num_episodes=64, max_new_tokens=4096)
  return c


def tiny() -> ml_collections.ConfigDict:
  """The embedded default: tiny_default Qwen3 (random init), the tiny tokenizer, the synthetic task.

  1000 small worlds (16 documents, 4 birth-country questions each, two-syllable single-token names); the held-out
  episodes come from worlds never trained on, so they measure reading, not recall. The compact system prompt keeps
  each turn near 180 tokens. SFT's oracle demonstrations read 4-document contexts (one chunk); GRPO reads
  8-document ones (two chunks, memory carried between them), and the held-out questions are scored at both sizes.
  """
  c = released()
  c.total_steps = 880  # 850 SFT (250 recitation drills, then every third step one) + 30 GRPO
  c.checkpoint_every = 100
  c.model.update(preset="tiny_default", remat="none", dtype="", param_dtype="")
  c.task.dataset = "synthetic"
  c.task.num_eval_episodes = 64
  c.task.synthetic = dict(seed=0, num_documents=16, num_questions=4, question_kinds=("birth_country",))
  c.task.synthetic_worlds = 1000
  c.task.long_context = dict(num_docs=4, seed=0, single_question_fraction=1.0)
  c.task.grpo_num_docs = 8  # SFT's demonstrations read one chunk; GRPO reads two (evaluated at both sizes)
  c.agent.update(chunk_tokens=96, overlap_tokens=8, max_chunks=8, max_steps=6, query_limit=3, template_dir="compact",
                 chunking="stride", truncation="tail")
  c.memory = dict(capacity=16, entry_tokens=32, scratchpad_tokens=48, query_tokens=32, embed_dim=64, top_k=4,
                  overflow="evict_oldest", max_ops_per_turn=4)
  # From step 700 the oracle's pairs change: a quarter of its read turns also store one sentence the question does
  # not need, so its answer turns show notes to look past (as at 8 documents, where the notes of two chunks meet).
  # From the start, the extra notes slow the oracle's format down (EM after SFT 0.672 on seed 0, BUILD_NOTES); on
  # half of the turns they broke seed 1's answer turns (run-on chains, EM after SFT 0.696 against 0.981 at 0.25).
  # The recitation drills write chains one fact per line and end them in `\boxed{answer}`, so the bare name tokens the
  # oracle's turns copy are drilled too (without them seed 2 never learned those copies: BUILD_NOTES).
  c.sft.update(steps=850, oracle_episodes=1500, oracle_extra_notes=0.25, oracle_extra_notes_from=700, drill="recite",
               recite_layout="lines", drill_steps=250, drill_every=3, batch_size=16, num_microbatches=1,
               max_prompt_tokens=216, max_completion_tokens=40)
  c.sft.optimizer.update(learning_rate=1e-3, warmup_steps=20, decay_steps=850)
  c.grpo.loss.num_generations = 4
  # A KL weight 50x the released one: with 0.001 the policy drifted (KL peaking at 0.32 and 0.43 on seeds 3 and 4)
  # into run-on turns, and seed 3 lost 0.033 at 4 documents and 0.248 at 8 (BUILD_NOTES); 0.05 keeps KL under 0.07.
  c.grpo.loss.kl_coef = 0.05
  c.grpo.update(prompts_per_rollout=4, microbatch_rows=16, length_buckets=(384, 512))
  c.grpo.sampler.update(max_new_tokens=64, prompt_buckets=(256, 384), wave_rows=0)
  c.grpo.optimizer.update(learning_rate=5e-5, warmup_steps=2, decay_steps=30)
  c.eval = dict(num_episodes=64, max_new_tokens=64)
  return c
