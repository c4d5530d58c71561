r"""Evaluate a checkpoint in the web environment: WebWalkerQA and GAIA, greedy, the released web settings.

  python -m atommem_jax.evaluate --config experiments/eval_web.py --config.checkpoint=CKPT \
      --config.datasets.webwalkerqa.path=WebWalkerQA.jsonl --config.datasets.gaia.path=GAIA/2023/validation/metadata.jsonl \
      --config.agent.web.server_url=http://HOST:PORT/mcp --config.embedder=QWEN3_EMBEDDING_0_6B --workdir OUT

The tools come from the MCP server `agent.web.server_url` (streamable HTTP) or `agent.web.server_command` (stdio)
names, or `--config.agent.web.corpus=corpus.jsonl` has the evaluator serve a corpus file with our corpus server on
localhost. `--config.judge.url=http://HOST:PORT/v1 --config.judge.model=NAME` adds an LLM judge's pass rate beside
EM. OUT/results.md has EM per dataset, tool calls per episode by name, memory-op rates and steps;
OUT/trajectories.jsonl every episode's turns with their tool calls and responses.

The embedded web default, on CPU with no downloads (the checkpoint of
`python -m atommem_jax.train --config experiments/grpo_web.py:tiny --workdir RUN`): 16 synthetic worlds no run
trained on, served as websites:

  python -m atommem_jax.evaluate --config experiments/eval_web.py:tiny --config.checkpoint=RUN/params --workdir OUT
"""
import ml_collections

from atommem_jax import configlib


def base_config() -> ml_collections.ConfigDict:
  """The released web settings (DESIGN.md "Web environment")."""
  config = configlib.load_config_file(__file__, "eval_hotpot").base_config()
  grpo_web = configlib.load_config_file(__file__, "grpo_web")
  config.agent.env = "web"
  config.agent.web = dict(grpo_web.RELEASED_WEB)
  config.judge = dict(url="", model="", api_key="", timeout_s=60.0, max_tokens=32, max_concurrency=16)
  config.datasets = ml_collections.ConfigDict({
      "webwalkerqa": dict(path="", max_examples=0),
      "gaia": dict(path="", max_examples=0),
  })
  config.dataset_order = ("webwalkerqa", "gaia")
  return config


def tiny_config() -> ml_collections.ConfigDict:
  """The embedded web default: the trainer's tiny web agent and memory, on 16 worlds of their own (seed 10**6, far
  from the training worlds' seeds) of the trainer's size (16 pages, 4 birth-country questions each)."""
  config = base_config()
  train = configlib.load_config_file(__file__, "grpo_web").get_config("tiny")
  config.expected_model = train.model.preset
  config.embedder = train.embedder
  config.agent = train.agent
  config.memory = train.memory
  config.batch_size = 16
  config.datasets = ml_collections.ConfigDict({
      "synthetic_web": dict(seed=10**6, max_examples=0, synthetic_worlds=16, synthetic_num_documents=16, synthetic_num_questions=4,
                            synthetic_question_kinds=("birth_country",))})
  config.dataset_order = ("synthetic_web",)
  config.sampler.update(max_new_tokens=train.eval.max_new_tokens, prompt_buckets=train.grpo.sampler.prompt_buckets)
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg == "tiny":
    return tiny_config()
  if arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' (WebWalkerQA and GAIA, released settings) or 'tiny'")
  return base_config()
