r"""Baselines and ablations side by side: AtomMem, its ablations (add-only memory among them) and K = 3 / 12, MemAgent,
RAG and full context.

  python -m atommem_jax.evaluate --config experiments/eval_ablations.py --config.checkpoint=CKPT \
      --config.datasets.hotpotqa.path=hotpot.json --config.datasets.twowiki.path=2wiki.json \
      --config.datasets.musique.path=musique.jsonl --config.embedder=QWEN3_EMBEDDING_0_6B --workdir OUT

Every variant runs on every dataset and document count; results.md shows them as rows of one table per metric.
Embedded default (synthetic task, CPU):

  python -m atommem_jax.evaluate --config experiments/eval_ablations.py:tiny --config.checkpoint=RUN --workdir OUT
"""
import ml_collections

from atommem_jax import configlib


def variants() -> dict[str, dict]:
  """The paper's ablations (switches off become counted invalid no-ops), the released evaluation's add-only memory
  (Create only: no Update, no Delete) and K = 3 and 12 (ours is K = 6), and the baselines, in the order the tables
  list them."""
  return {
      "atommem": {},
      "no_scratchpad": {"agent": {"use_scratchpad": False}},
      "no_storage": {"agent": {"use_storage": False}},
      "no_update": {"agent": {"allow_update": False}},
      "no_delete": {"agent": {"allow_delete": False}},
      "add_only": {"agent": {"allow_update": False, "allow_delete": False}},
      "k3": {"memory": {"top_k": 3}},
      "k12": {"memory": {"top_k": 12}},
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
    released = eval_hotpot.RELEASED_EXAMPLES
    config.datasets = ml_collections.ConfigDict({
        "hotpotqa": dict(path="", num_docs=(200, 400, 800), **released),
        "twowiki": dict(format="2wiki", label="2wiki", path="", num_docs=(800,), **released),
        "musique": dict(path="", num_docs=(800,), **released),
    })
  else:
    raise ValueError(f"unknown config argument {arg!r}; use '' (full size) or 'tiny'")
  config.variants = ml_collections.ConfigDict(variants())
  config.variant_order = tuple(variants())
  config.dataset_order = ("synthetic",) if arg == "tiny" else ("hotpotqa", "twowiki", "musique")
  return config
