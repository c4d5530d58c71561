"""Long evaluations at MemAgent's scales: `python -m atommem_jax.bench long_eval --json`.

One synthetic episode at each N in 50, 100, ..., 6400 documents (a world of max(2N, 64) documents; at 6400 about 170K
tokens, 1800 chunks of 96) read to the end by the tiny model (the tiny default preset, random weights, or
`--checkpoint`), greedy, with the tiny default's agent and memory settings, the host storage tier on
(`--spill scann`) and no chunk cap. The policy is the model's response plus one Create per turn, so storage outgrows
the device store and spills as the reader goes (a random tiny model rarely writes a valid Create of its own).

Reported per N: chunks read, seconds per chunk (the wall time of the whole rollout, preparation included, over the
chunks read), entries at the end (device + host tier), and the ratio of seconds per chunk at the largest N to that
at the smallest (goal: within 1.2). Compilation is excluded: one untimed run at the smallest N first; every prompt
fits one bucket, so nothing compiles later.
"""
from __future__ import annotations

import sys
import time

import flax.nnx as nnx
import jax
from absl import flags

from atommem_jax import op_table
from atommem_jax.agent.config import AgentConfig, RolloutConfig
from atommem_jax.agent.engines import host
from atommem_jax.agent.envs.long_context import READ, Episode
from atommem_jax.agent.policy import SamplerPolicy
from atommem_jax.data import long_context, synthetic
from atommem_jax.data.tokenizer import load_tiny_tokenizer
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.memory.embedders import HashingEmbedder
from atommem_jax.model import PRESETS, Qwen3
from atommem_jax.sampling.config import SamplerConfig
from atommem_jax.sampling.sampler import Sampler

NUM_DOCS = (50, 100, 200, 400, 800, 1600, 3200, 6400)


def _define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_bool("json", False, "print one JSON object (handled by the dispatcher)", flag_values=values)
  flags.DEFINE_string("preset", "tiny_default", "Qwen3 preset of the random-weight model", flag_values=values)
  flags.DEFINE_string("checkpoint", "", "an Orbax parameter dir to read with instead (e.g. RUN/params)",
                      flag_values=values)
  flags.DEFINE_list("num_docs", [str(n) for n in NUM_DOCS], "documents per episode, ascending", flag_values=values)
  flags.DEFINE_integer("chunk_tokens", 96, "tokens per chunk (the tiny default's)", flag_values=values)
  flags.DEFINE_integer("max_new_tokens", 32, "response cap per turn", flag_values=values)
  flags.DEFINE_enum("spill", "scann", ["none", "scann"], "where evicted entries go", flag_values=values)


class NotingPolicy(SamplerPolicy):
  """The model's response with one Create put in front (a note naming the turn), so every turn stores an entry."""

  def respond(self, prompt_ids, rows, turn):
    responses = super().respond(prompt_ids, rows, turn)
    for row, response in zip(rows, responses):
      response.text = op_table.tag(op_table.ADD_MEMORY, f"note {turn} of row {row}") + response.text
    return responses


def _episode(num_docs: int) -> Episode:
  world = synthetic.SyntheticConfig(seed=10**6, num_documents=max(2 * num_docs, 64), num_questions=4,
                                    question_kinds=("birth_country",))
  examples, _ = long_context.build_synthetic_world(world, long_context.LongContextConfig(num_docs=num_docs), 0)
  return Episode.from_example(examples[0])


def run(argv: list[str]) -> dict:
  values = flags.FlagValues()
  _define_flags(values)
  values(["long_eval"] + list(argv))
  f = values
  tokenizer = load_tiny_tokenizer()
  if f.checkpoint:
    from atommem_jax import checkpoint  # pylint: disable=g-import-not-at-top
    _, model = checkpoint.restore_params(f.checkpoint)
  else:
    model = Qwen3(PRESETS[f.preset], rngs=nnx.Rngs(0))
  sampler = Sampler(model, SamplerConfig(greedy=True, max_new_tokens=f.max_new_tokens, prompt_buckets=(512,),
                                         batch_buckets=(1,), eos_ids=(tokenizer.eos_token_id,),
                                         pad_id=tokenizer.pad_token_id), tokenizer=tokenizer)
  policy = NotingPolicy(sampler, seed=0)
  memory = MemoryConfig(capacity=16, entry_tokens=32, scratchpad_tokens=48, query_tokens=32, embed_dim=64, top_k=4,
                        overflow="evict_oldest", max_ops_per_turn=4, spill=f.spill)
  embed_fn = HashingEmbedder(memory.embed_dim)
  sizes = sorted(int(n) for n in f.num_docs)
  episodes = {n: _episode(n) for n in sizes}

  def rollout(episode: Episode):
    num_chunks = len(tokenizer.encode(episode.document, add_special_tokens=False)) // (f.chunk_tokens - 8) + 2
    agent = AgentConfig(chunk_tokens=f.chunk_tokens, overlap_tokens=8, max_chunks=num_chunks,
                        max_steps=num_chunks + 4 * len(episode.questions), template_dir="compact")
    start = time.perf_counter()
    (trajectory,) = host.rollout([episode], policy, tokenizer=tokenizer, embed_fn=embed_fn,
                                 config=RolloutConfig(agent=agent, memory=memory))
    return time.perf_counter() - start, trajectory

  rollout(episodes[sizes[0]])  # compiles
  per_n = {}
  for n in sizes:
    seconds, trajectory = rollout(episodes[n])
    chunks = sum(turn.phase == READ for turn in trajectory.turns)
    per_n[n] = {"chunks": chunks, "seconds": round(seconds, 3), "seconds_per_chunk": round(seconds / chunks, 5),
                "entries": len(trajectory.storage), "turns": len(trajectory.turns)}
    print(f"N={n}: {per_n[n]}", file=sys.stderr, flush=True)  # the full run takes a while: progress as it goes
  first, last = per_n[sizes[0]], per_n[sizes[-1]]
  return {
      "device": jax.devices()[0].device_kind,
      "model": f.checkpoint or f.preset,
      "spill": f.spill,
      "device_capacity": memory.capacity,
      "per_num_docs": {str(n): row for n, row in per_n.items()},
      "seconds_per_chunk": {str(n): row["seconds_per_chunk"] for n, row in per_n.items()},
      f"seconds_per_chunk_{sizes[-1]}_over_{sizes[0]}": round(last["seconds_per_chunk"] / first["seconds_per_chunk"],
                                                               3),
  }
