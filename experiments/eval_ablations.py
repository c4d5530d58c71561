r"""Baselines and ablations side by side: AtomMem, its ablations and any K, MemAgent, RAG and full context.

  python -m atommem_jax.evaluate --config experiments/eval_ablations.py --config.checkpoint=CKPT \
      --config.datasets.hotpotqa.path=hotpot.json --config.datasets.twowiki.path=2wiki.json \
      --config.datasets.musique.path=musique.jsonl --config.embedder=QWEN3_EMBEDDING_0_6B --workdir OUT

Every variant runs on every dataset and document count; results.md shows them as rows of one table per metric.
Embedded default (synthetic task, CPU):

  python -m atommem_jax.evaluate --config experiments/eval_ablations.py:tiny --config.checkpoint=RUN --workdir OUT
"""
import ml_collections

from atommem_jax import configlib


def variants(top_k: int) -> dict[str, dict]:
  """The paper's ablations (switches off become counted invalid no-ops), a smaller K, and the baselines, in the
  order the tables list them."""
  return {
      "atommem": {},
      "no_scratchpad": {"agent": {"use_scratchpad": False}},
      "no_storage": {"agent": {"use_storage": False}},
      "no_update": {"agent": {"allow_update": False}},
      "no_delete": {"agent": {"allow_delete": False}},
      f"k{max(1, top_k // 2)}": {"memory": {"top_k": max(1, top_k // 2)}},
      "memagent": {"agent": {"method": "memagent"}},
      "rag": {"agent": {"method": "rag"}},
      "full_context": {"agent": {"method": "full_context"}},
  }


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  eval_hotpot = configlib.load_config_file(__file__, "eval_hotpot")
  if arg == "tiny":
    config = eval_hotpot.tiny_config()
    config.datasets.synthetic.num_docs = (8,)
    config.datasets.synthetic.max_examples = 8
  elif not arg:
    config = eval_hotpot.base_config()
    config.datasets = ml_collections.ConfigDict({
        "hotpotqa": dict(path="", num_docs=(200, 400, 800)),
        "twowiki": dict(format="2wiki", label="2wiki", path="", num_docs=(800,)),
        "musique": dict(path="", num_docs=(800,)),
    })
  else:
    raise ValueError(f"unknown config argument {arg!r}; use '' (full size) or 'tiny'")
  config.variants = ml_collections.ConfigDict(variants(config.memory.top_k))
  config.variant_order = tuple(variants(config.memory.top_k))
  config.dataset_order = ("synthetic",) if arg == "tiny" else ("hotpotqa", "twowiki", "musique")
  return config
