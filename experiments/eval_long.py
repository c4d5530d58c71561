r"""Long evaluations at MemAgent's scales: EM and time per episode at N = 50, 100, ..., 6400 documents (about 900K
tokens at 6400 for HotpotQA), the whole document read (no chunk cap), storage spilling to the host ScaNN tier.

  python -m atommem_jax.evaluate --config experiments/eval_long.py --config.checkpoint=CKPT \
      --config.datasets.hotpotqa.path=hotpot_dev_distractor_v1.json --config.embedder=QWEN3_EMBEDDING_0_6B --workdir OUT

results.md holds the EM table, the time-per-episode table (seconds per episode and per step at each N) and
em_vs_documents.png. Single questions with their whole context (10 paragraphs), so every N from 50 holds them.

The embedded default (synthetic worlds of max(2N, 64) documents, the tiny default run's checkpoint):

  python -m atommem_jax.evaluate --config experiments/eval_long.py:tiny --config.checkpoint=RUN --workdir OUT
"""
import ml_collections

from atommem_jax import configlib

NUM_DOCS = (50, 100, 200, 400, 800, 1600, 3200, 6400)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  eval_hotpot = configlib.load_config_file(__file__, "eval_hotpot")
  if arg == "tiny":
    config = eval_hotpot.tiny_config()
    config.datasets = ml_collections.ConfigDict({
        "synthetic": dict(num_docs=NUM_DOCS, max_examples=2, seed=10**6, synthetic_num_questions=24,
                          synthetic_question_kinds=("birth_country",))})
    # 6400 synthetic documents are about 172K tokens: 1800 chunks of 96.
    config.agent.update(max_chunks=2048, max_steps=2300)
    config.batch_size = 2
  elif not arg:
    config = eval_hotpot.base_config()
    config.datasets = ml_collections.ConfigDict({
        "hotpotqa": dict(path="", num_docs=NUM_DOCS, max_examples=128, single_question_fraction=1.0,
                         gold="all_context")})
    config.agent.update(max_chunks=256, max_steps=1024)  # 256 x 4000 tokens hold the 6400-document contexts
  else:
    raise ValueError(f"unknown config argument {arg!r}; use '' (HotpotQA, full size) or 'tiny'")
  config.memory.spill = "scann"
  return config
