"""Rollout speed: `python -m atommem_jax.bench rollout --json`.

B synthetic long-context episodes x G samples run to the end with a tiny random Qwen3 (the tiny default preset,
random weights; sampled at temperature 1, so it writes mostly malformed ops and every trajectory runs to the step
cap) and, for the machinery alone, with the scripted oracle policy (no model). Reported: trajectory-turns per
second (every running trajectory's turn counts one), generated tokens per second, and how the host engine's wall
time splits between generation and the rest of its loop (rendering, tokenizing, parsing, the jitted env + memory
transition). Compilation is excluded: each rollout runs once untimed first, then `--repeats` timed runs (best kept).

The same episodes then run on the device engine (`agent.engines.device`: rendering, tokenization and parsing
in-graph), with the same sampler and seed. Reported: both engines' seconds per rollout (the whole batch of B x G
trajectories to the end), the host engine's time over the device engine's, and whether the two gave identical
trajectories.
"""
from __future__ import annotations

import dataclasses
import time

import flax.nnx as nnx
import jax
from absl import flags

from atommem_jax.agent import oracle
from atommem_jax.agent.config import AgentConfig, RolloutConfig
from atommem_jax.agent.engines import device, host
from atommem_jax.agent.envs.long_context import Episode
from atommem_jax.agent.policy import SamplerPolicy
from atommem_jax.data import long_context, synthetic
from atommem_jax.data.tokenizer import load_tiny_tokenizer
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.memory.embedders import HashingEmbedder
from atommem_jax.model import PRESETS, Qwen3
from atommem_jax.sampling.config import SamplerConfig
from atommem_jax.sampling.sampler import Sampler


def _define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_bool("json", False, "print one JSON object (handled by the dispatcher)", flag_values=values)
  flags.DEFINE_string("preset", "tiny_default", "Qwen3 preset of the random policy model", flag_values=values)
  flags.DEFINE_integer("episodes", 4, "B: episodes (prompts)", flag_values=values)
  flags.DEFINE_integer("samples", 4, "G: samples per episode", flag_values=values)
  flags.DEFINE_integer("num_docs", 16, "documents per synthetic episode", flag_values=values)
  flags.DEFINE_integer("chunk_tokens", 128, "tokens per chunk", flag_values=values)
  flags.DEFINE_integer("max_steps", 8, "step cap per episode", flag_values=values)
  flags.DEFINE_integer("max_new_tokens", 32, "response cap per turn", flag_values=values)
  flags.DEFINE_integer("repeats", 2, "timed runs (the best is reported)", flag_values=values)


def _best_time(fn, repeats: int) -> tuple[float, object]:
  """(seconds, output) of the fastest of `repeats` runs after one untimed compiling run."""
  fn()
  best, best_out = float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    if seconds < best:
      best, best_out = seconds, out
  return best, best_out


def run(argv: list[str]) -> dict:
  values = flags.FlagValues()
  _define_flags(values)
  values(["rollout"] + list(argv))
  f = values
  tokenizer = load_tiny_tokenizer()
  task = synthetic.generate(synthetic.SyntheticConfig(seed=0, num_documents=max(64, 2 * f.num_docs),
                                                      num_questions=max(16, 2 * f.episodes)))
  examples = long_context.build_examples(task.corpus(), long_context.LongContextConfig(num_docs=f.num_docs, seed=0))
  episodes = [Episode.from_example(e) for e in examples[:f.episodes]]
  memory = MemoryConfig(capacity=64, entry_tokens=64, scratchpad_tokens=128, query_tokens=32, embed_dim=256, top_k=6,
                        max_ops_per_turn=8)
  agent = AgentConfig(chunk_tokens=f.chunk_tokens, overlap_tokens=16, max_steps=f.max_steps)
  embed_fn = HashingEmbedder(memory.embed_dim)

  model = Qwen3(PRESETS[f.preset], rngs=nnx.Rngs(0))
  sampler_config = SamplerConfig(max_new_tokens=f.max_new_tokens, prompt_buckets=(512, 1024, 2048),
                                 batch_buckets=(f.episodes * f.samples,), eos_ids=(tokenizer.eos_token_id,),
                                 pad_id=tokenizer.pad_token_id)
  sampler = Sampler(model, sampler_config, tokenizer=tokenizer)
  policy = SamplerPolicy(sampler, seed=0)
  generation_s = [0.0]
  respond = policy.respond

  def timed_respond(*args):
    start = time.perf_counter()
    out = respond(*args)
    generation_s[0] += time.perf_counter() - start
    return out

  policy.respond = timed_respond
  config = RolloutConfig(agent=agent, memory=memory, num_samples=f.samples)
  kwargs = dict(tokenizer=tokenizer, embed_fn=embed_fn, config=config)

  def model_run():
    generation_s[0] = 0.0
    out = host.rollout(episodes, policy, **kwargs)
    return out, generation_s[0]

  model_s, (trajectories, model_generation_s) = _best_time(model_run, f.repeats)
  turns = sum(len(t.turns) for t in trajectories)
  tokens = sum(len(turn.response_ids) for t in trajectories for turn in t.turns)

  oracle_policy = oracle.OraclePolicy(task.questions)
  oracle_s, oracle_trajectories = _best_time(lambda: host.rollout(episodes, oracle_policy, **kwargs), f.repeats)
  oracle_turns = sum(len(t.turns) for t in oracle_trajectories)

  device_s, device_trajectories = _best_time(
      lambda: device.rollout(episodes, SamplerPolicy(sampler, seed=0), **kwargs), f.repeats)
  return {
      "device": jax.devices()[0].device_kind,
      "trajectories": len(trajectories),
      "model_turns": turns,
      "model_turns_per_s": round(turns / model_s, 2),
      "model_generated_tokens_per_s": round(tokens / model_s, 1),
      "model_generation_fraction": round(model_generation_s / model_s, 3),
      "model_wall_s": round(model_s, 3),
      "oracle_turns": oracle_turns,
      "oracle_turns_per_s": round(oracle_turns / oracle_s, 1),
      "oracle_mean_reward": round(sum(t.reward for t in oracle_trajectories) / len(oracle_trajectories), 3),
      "host_engine_s_per_rollout": round(model_s, 3),
      "device_engine_s_per_rollout": round(device_s, 3),
      "device_engine_turns_per_s": round(turns / device_s, 2),
      "device_over_host_engine": round(model_s / device_s, 2),
      "engines_agree": [dataclasses.asdict(t) for t in device_trajectories] ==
                       [dataclasses.asdict(t) for t in trajectories],
  }
