r"""Evaluate a checkpoint on HotpotQA at 200 / 400 / 800 documents, greedy (the paper's long-context setting).

  python -m atommem_jax.evaluate --config experiments/eval_hotpot.py \
      --config.checkpoint=CKPT --config.datasets.hotpotqa.path=hotpot_dev_distractor_v1.json \
      --config.embedder=QWEN3_EMBEDDING_0_6B --workdir OUT

CKPT is an Orbax parameter dir (`python -m atommem_jax.convert --src HF_DIR --dst CKPT`) or a trainer workdir (its
latest checkpoint); QWEN3_EMBEDDING_0_6B an HF or Orbax dir of the embedder (or `hashing`, weight-free, with
`--config.memory.embed_dim=256`). 2WikiMultihopQA and MuSiQue at 800 documents, with the baselines and
ablations side by side: `experiments/eval_ablations.py`.

The embedded default, on CPU with no downloads (the synthetic task, the checkpoint of
`python -m atommem_jax.train --config experiments/grpo_hotpot.py:tiny --workdir RUN`):

  python -m atommem_jax.evaluate --config experiments/eval_hotpot.py:tiny --config.checkpoint=RUN --workdir OUT
"""
import ml_collections

from atommem_jax import configlib


# The released builder's examples: half of the documents bundle 2..10 questions, every question's whole context
# (hard distractors included) is in.
RELEASED_EXAMPLES = dict(single_question_fraction=0.5, gold="all_context")


def base_config() -> ml_collections.ConfigDict:
  """The released full-size settings (DESIGN.md "Released settings" and "Released long-context details")."""
  config = ml_collections.ConfigDict()
  config.checkpoint = ""
  config.expected_model = ""
  config.tokenizer = ""
  config.embedder = ""
  config.seed = 0
  config.batch_size = 8
  config.mesh = dict(data=0, fsdp=1, tensor=1)
  config.datasets = ml_collections.ConfigDict()
  config.variants = ml_collections.ConfigDict({"atommem": {}})
  config.variant_order = ("atommem",)
  config.dataset_order = ()
  config.agent = dict(method="atommem", chunk_tokens=4000, overlap_tokens=100, max_chunks=40, max_steps=40,
                      query_limit=3, query_limit_action="give_up", context_tokens=32768, template_dir="released",
                      chunking="released", truncation="middle", reward="per_question")
  config.memory = dict(capacity=256, entry_tokens=256, scratchpad_tokens=1024, query_tokens=128, embed_dim=1024,
                       top_k=6, overflow="evict_oldest", retrieval="exact", max_ops_per_turn=16, spill="none")
  config.sampler = dict(greedy=True, max_new_tokens=4096, prompt_buckets=(4096, 8192, 12288, 16384, 24576, 32768, 40960))
  config.rollout = dict(engine="host")
  return config


def tiny_config() -> ml_collections.ConfigDict:
  """The embedded default: the synthetic task with the tiny default run's agent, memory and embedder settings."""
  config = base_config()
  train = configlib.load_config_file(__file__, "train_base").tiny()
  config.expected_model = train.model.preset
  config.tokenizer = ""
  config.embedder = train.embedder
  config.rollout = train.rollout
  config.agent = train.agent
  config.memory = train.memory
  config.batch_size = 8
  # The trainer's tiny task (birth-country questions, 4-document contexts), in a world of its own (seed 10**6, far
  # from the training worlds' seeds); longer contexts test length generalisation. 64 documents keep the names short
  # (two syllables, one token each), as in training.
  config.datasets = ml_collections.ConfigDict({
      "synthetic": dict(num_docs=(4, 8, 16), max_examples=16, seed=10**6, synthetic_num_questions=24,
                        synthetic_num_documents=64, synthetic_question_kinds=("birth_country",), synthetic_worlds=1)})
  config.agent.context_tokens = 1024  # the full-context baseline's window, at the tiny model's scale
  # The trainer's buckets first (AtomMem's prompts at 4-16 documents fit them), then the full-context baseline's.
  config.sampler.update(max_new_tokens=train.eval.max_new_tokens,
                        prompt_buckets=tuple(train.grpo.sampler.prompt_buckets) + (768, 1024, 1536))
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg == "tiny":
    return tiny_config()
  if arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' (HotpotQA, full size) or 'tiny'")
  config = base_config()
  config.datasets = ml_collections.ConfigDict({
      "hotpotqa": dict(path="", num_docs=(200, 400, 800), max_examples=0, **RELEASED_EXAMPLES)})
  return config
