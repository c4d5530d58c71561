r"""GRPO in the web environment: search and page-fetch tools over MCP beside the memory ops (DESIGN.md "Web
environment"), from an SFT'd Qwen3 checkpoint, the released settings.

  python -m atommem_jax.train --config experiments/grpo_web.py --workdir RUN \
      --config.task.dataset=webwalkerqa --config.task.path=WebWalkerQA.jsonl \
      --config.model.checkpoint=SFT_PARAMS_DIR --config.agent.web.server_url=http://HOST:PORT/mcp

The tools come from the MCP server `agent.web.server_url` (streamable HTTP) or `agent.web.server_command` (stdio)
names; or `--config.agent.web.corpus=corpus.jsonl` has the trainer serve a corpus file with our corpus server
(`python -m atommem_jax.tools.build_corpus` writes one from saved HTML pages), one per process on localhost.
`task.dataset` is `webwalkerqa`, `gaia` or `web_plain` (`{question, answers}` JSON lines); with those, SFT needs
`sft.pairs_path` (the web oracle plays the synthetic websites only).

The embedded web default (CPU, no downloads): synthetic worlds served as websites; the web oracle searches, fetches,
stores the facts it needs and answers; SFT on its turns (after copy drills), then GRPO; held-out EM on worlds never
trained on at the start, after SFT and at the end:

  python -m atommem_jax.train --config experiments/grpo_web.py:tiny --workdir RUN
"""
from atommem_jax import configlib

# The released web agent's settings (DESIGN.md "Web environment"): 10 steps, the tools withdrawn on the last.
RELEASED_WEB = dict(max_steps=10, tool_response_tokens=4000, tools=("search", "fetch_url"), server_url="",
                    server_command="", corpus="", corpus_flags=(), call_timeout_s=60.0)


def tiny(base):
  """The embedded web default: tiny_default Qwen3 from random init, the tiny web tokenizer (the tool-call tags and
  the sites' urls are short), 300 synthetic worlds of 16 pages (birth-country questions: search the person, fetch
  their page, fetch their city's page, answer), 16 of them held out."""
  from atommem_jax.data import tokenizer  # pylint: disable=g-import-not-at-top
  c = base.tiny()
  c.model.tokenizer = tokenizer.tiny_web_tokenizer_dir()
  c.task.dataset = "web_synthetic"
  c.task.synthetic_worlds = 300
  c.task.grpo_num_docs = 0
  c.agent.env = "web"
  c.agent.web = dict(RELEASED_WEB, max_steps=6, tool_response_tokens=160)
  c.total_steps = 315  # 300 SFT (the first 100 copy drills, then every fourth step one) + 15 GRPO
  c.checkpoint_every = 50
  c.sft.update(steps=300, oracle_episodes=1200, drill="copy", drill_steps=100, drill_every=4, drill_batch_size=32,
               batch_size=16, max_prompt_tokens=448, max_completion_tokens=48)
  c.sft.optimizer.update(learning_rate=1e-3, warmup_steps=20, decay_steps=300)
  c.grpo.update(prompts_per_rollout=4, microbatch_rows=16, length_buckets=(384, 512))
  c.grpo.sampler.update(max_new_tokens=48, prompt_buckets=(256, 384, 512), wave_rows=0)
  c.grpo.optimizer.update(learning_rate=5e-5, warmup_steps=2, decay_steps=15)
  c.eval = dict(num_episodes=64, max_new_tokens=48)
  return c


def get_config(arg: str | None = None):
  base = configlib.load_config_file(__file__, "train_base")
  if arg == "tiny":
    return tiny(base)
  if arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' (released settings) or 'tiny'")
  config = base.released()
  config.task.dataset = "webwalkerqa"
  config.agent.env = "web"
  config.agent.web = dict(RELEASED_WEB)
  return config
