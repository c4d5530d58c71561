"""The device engine gives the host engine's trajectories (the tiny default's settings, and the released prompt
settings; same seed), its in-graph parser reads responses as `protocol` does, and it refuses what it cannot
reproduce."""
import dataclasses
import importlib.resources
import pathlib
import re
import shutil

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from atommem_jax import op_table
from atommem_jax.agent import device_observation, device_protocol, envs, memory_view, protocol
from atommem_jax.agent import transition as transition_lib
from atommem_jax.agent.config import AgentConfig, RolloutConfig
from atommem_jax.agent import engines
from atommem_jax.agent.engines import device, host, rows as rows_lib
from atommem_jax.agent.envs import long_context
from atommem_jax.agent.policy import SamplerPolicy
from atommem_jax.data import long_context as long_context_data, synthetic
from atommem_jax.data.jax_tokenizer import tables as tables_lib
from atommem_jax.data.tokenizer import load_tiny_tokenizer
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.memory.embedders import HashingEmbedder
from atommem_jax.model import PRESETS, Qwen3
from atommem_jax.sampling.config import SamplerConfig
from atommem_jax.sampling.sampler import Sampler

# experiments/train_base.py:tiny's agent and memory; G = 2.
MEMORY = MemoryConfig(capacity=16, entry_tokens=32, scratchpad_tokens=48, query_tokens=32, embed_dim=64, top_k=4,
                      overflow="evict_oldest", max_ops_per_turn=4)
AGENT = AgentConfig(chunk_tokens=96, overlap_tokens=8, max_chunks=8, max_steps=6, query_limit=3, template_dir="compact")
CONFIG = RolloutConfig(agent=AGENT, memory=MEMORY, num_samples=2)
# The released settings: windows, middle truncation, the reward over every accepted answer, and the released
# templates (which show the reads in a row), with the compact system prompt so prompts fit the tiny buckets.
RELEASED = dict(chunking="released", truncation="middle", reward="released_union")
MODEL = dataclasses.replace(PRESETS["tiny_gqa"], num_layers=2, tie_word_embeddings=False)
# What the scripted model writes: ops in random order, so that Creates, Updates and Deletes of shown entries, Reads,
# scratchpad writes, think blocks, mismatched tags (the Update and the Delete share "Memory 1"), ops cut off by the
# length limit and more ops than fit a turn all occur; an answer only after a think block or a scratchpad write, so
# episodes last a few turns, and end at different turns.
# Names of the synthetic task are single tokens (with or without a leading space), so the scripts share no token
# but "Memory" and the space after it.
_A, _B, _C, _D, _E, _F, _G = synthetic.SHORT_NAMES[:7]
SCRIPTS = [f"<add_memory> {_A} {_B}</add_memory>", f"<update_query> {_C}</update_query>",
           f"<modify_memory>Memory 1: {_D}</modify_memory>", "<delete_memory>Memory 1</delete_memory>",
           f"<update_memory> {_E}</update_memory>", f"<think> {_F}</think>"]
ANSWER = f"<final_answer>\\boxed{{{_G}}}</final_answer>"


@pytest.fixture(scope="module")
def tokenizer():
  return load_tiny_tokenizer()


@pytest.fixture(scope="module")
def episodes():
  task = synthetic.generate(synthetic.SyntheticConfig(seed=0, num_documents=16, num_questions=4,
                                                      question_kinds=("birth_country",)))
  examples = long_context_data.build_examples(task.corpus(), long_context_data.LongContextConfig(
      num_docs=8, seed=0, single_question_fraction=1.0))
  return [long_context.Episode.from_example(e) for e in examples[:2]]


def _scripted_params(tokenizer, model: Qwen3) -> nnx.State:
  """Weights under which the next token depends on the current one only (every layer's output projections are
  zero): after token t, one of the tokens `SCRIPTS` let follow t, equally likely. After an op, the next op (or the
  end of the response); after a scratchpad write or a think block, also the answer."""
  encode = lambda text: tokenizer.encode(text, add_special_tokens=False)
  starts = [encode(s)[0] for s in SCRIPTS]
  successors: dict[int, set[int]] = {encode("\n")[0]: set(starts)}  # the prompt ends with "assistant\n"
  for script in SCRIPTS + [ANSWER]:
    ids = encode(script)
    for a, b in zip(ids, ids[1:]):
      successors.setdefault(a, set()).add(b)
    successors.setdefault(ids[-1], set()).update(starts + [tokenizer.eos_token_id])
  for script in SCRIPTS[-2:]:
    successors[encode(script)[-1]].add(encode(ANSWER)[0])
  # Orthonormal embeddings for the tokens involved, so each successor's logit is exactly 3 * sqrt(D), every other 0.
  used = sorted(set(successors) | {b for following in successors.values() for b in following})
  basis, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(MODEL.hidden_size, len(used))))
  embed = np.asarray(model.embed[...], np.float32).copy()
  embed[used] = basis.T
  head = np.zeros_like(embed)
  for a, following in successors.items():
    for b in following:
      head[b] += 3.0 * embed[a]
  _, params = nnx.split(model)
  params = jax.tree.map(lambda x: x, params)
  params["embed"].value = jnp.asarray(embed)
  params["lm_head"].value = jnp.asarray(head)
  params["layers"]["o_proj"].value = jnp.zeros_like(params["layers"]["o_proj"].value)
  params["layers"]["down_proj"].value = jnp.zeros_like(params["layers"]["down_proj"].value)
  return params


@pytest.fixture(scope="module")
def samplers(tokenizer):
  model = Qwen3(MODEL, rngs=nnx.Rngs(0))
  # experiments/train_base.py:tiny's GRPO sampler: the batch of running rows padded to a power of two.
  base = SamplerConfig(temperature=1.0, top_p=0.99, max_new_tokens=64, prompt_buckets=(256, 384),
                       eos_ids=(tokenizer.eos_token_id,), pad_id=tokenizer.pad_token_id)
  return {"sample": Sampler(model, base, tokenizer=tokenizer),
          "scripted": _scripted_params(tokenizer, model), "random": nnx.split(model)[1]}


def _released_templates(directory: pathlib.Path) -> str:
  """The released variant's templates with the compact system prompt, as a template directory."""
  packaged = pathlib.Path(str(importlib.resources.files("atommem_jax.agent") / "templates"))
  for path in [*packaged.glob("*.txt"), *(packaged / "released").glob("*.txt"), packaged / "compact" / "system.txt"]:
    shutil.copy(path, directory / path.name)
  return str(directory)


@pytest.mark.parametrize("weights, settings", [
    ("scripted", "tiny"), pytest.param("random", "tiny", marks=pytest.mark.slow),
    pytest.param("scripted", "released", marks=pytest.mark.slow)])
def test_device_engine_gives_the_host_engines_trajectories(tokenizer, episodes, samplers, weights, settings,
                                                             tmp_path):
  sampler = samplers["sample"]
  sampler.params = samplers[weights]
  config = CONFIG
  if settings == "released":
    config = dataclasses.replace(CONFIG, agent=dataclasses.replace(AGENT, template_dir=_released_templates(tmp_path),
                                                                  **RELEASED))
  embed = HashingEmbedder(MEMORY.embed_dim)
  run = lambda engine, **kw: engine.rollout(episodes, SamplerPolicy(sampler, seed=7), tokenizer=tokenizer,
                                            embed_fn=embed, config=config, **kw)
  expected = run(host)
  got = run(device, verify_prompts=True)
  assert [dataclasses.asdict(t) for t in got] == [dataclasses.asdict(t) for t in expected]
  turns = [turn for t in expected for turn in t.turns]
  assert len(turns) >= 8 and all(turn.prompt_ids and turn.response_ids for turn in turns)
  assert expected[0].turns[0].response_ids != expected[1].turns[0].response_ids  # an episode's two samples differ
  if weights == "scripted":  # the op path was exercised end to end
    counts = {name: sum(turn.op_counts[name] for turn in turns) for name in op_table.KIND_NAMES[1:]}
    assert min(counts.values()) > 0, counts
    assert sum(turn.invalid_ops for turn in turns) > 0 and max(t.turns[-1].storage_size for t in expected) > 0
    # rows finished at different turns: the sampler's batch (running rows) shrank to 2 or 1
    assert min(sum(len(t.turns) > step for t in expected) for step in range(max(len(t.turns) for t in expected))) <= 2
  if settings == "released":  # the observations showed the reads in a row, and not always 0
    shown = [int(m) for turn in turns for m in re.findall(r"updated the query (\d+) times", turn.observation)]
    assert len(shown) == len(turns) and max(shown) > 0, shown


def test_device_prompts_show_the_reads_in_a_row_and_released_windows_as_the_host_does(tokenizer, episodes, tmp_path):
  agent = dataclasses.replace(AGENT, template_dir=_released_templates(tmp_path), **RELEASED)
  config = dataclasses.replace(CONFIG, agent=agent)
  env, embed = envs.make(agent), HashingEmbedder(MEMORY.embed_dim)
  start = rows_lib.prepare(episodes, env, tokenizer, embed, config)
  layout, tables = device_observation.build(env, list(episodes), start.episode_contexts, [0, 0, 1, 1], tokenizer,
                                            MEMORY.top_k, 384)
  last_chunk = [context.num_chunks - 1 for context in start.contexts]
  assert min(last_chunk) >= 1
  # Reading the last window or answering, with the reads in a row at 0, 3, 12 and 1.
  state = dataclasses.replace(start.state, query_count_B=np.array([0, 3, 12, 1], np.int32),
                              answer_phase_B=np.array([False, True, False, True]),
                              chunk_index_B=np.array(last_chunk, np.int32))
  rows, _, ids, lengths = device.prompts(device._codec_tables(tokenizer), layout, jax.device_put(tables),
                                         start.memory, state)
  memory = jax.device_get(start.memory)
  assert rows == [0, 1, 2, 3]
  for r, reads in enumerate([0, 3, 12, 1]):
    observation = env.observe(start.episodes[r], start.contexts[r], state, r,
                              memory_view.memory_view(memory, r, tokenizer), None)
    assert f"updated the query {reads} times" in observation.user
    prompt = protocol.chat_prompt(tokenizer, observation.system, observation.user, tools=observation.tools)
    assert ids[r, :lengths[r]].tolist() == tokenizer.encode(prompt, add_special_tokens=False), r


FRAGMENTS = [spec.open_tag for spec in op_table.OPS] + [spec.close_tag for spec in op_table.OPS] + [
    "<think>", "</think>", " Memory 1", "Memory 2:", " Memory  3 : x", "Memory ٢", "Memory 01", "Memory 99999999",
    " ", "\u00a0", "\x1c", "\n", "\\boxed{", "}", "{", "Paris", " fact", "<b>", "</b>", "<x1>", "</x1>", "<_a>",
    "</_a>", "Memory", ":", "0", "1", "\\boxed{a}", "\\boxed{}", "é"]
RESPONSE_WIDTH = 160


@pytest.fixture(scope="module")
def parse(tokenizer):
  tables = jax.device_put(tables_lib.TokenizerTables.from_tokenizer(tokenizer))
  disabled = (op_table.DELETE_MEMORY,)
  run = jax.jit(lambda t, code, n, shown: device_protocol.parse(t, code, n, shown, width=4, disabled_kinds=disabled,
                                                                max_target=4))
  return lambda *args: jax.device_get(run(tables, *args)), disabled


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(FRAGMENTS), max_size=16).map("".join), st.integers(0, 4)),
                min_size=16, max_size=16))
def test_in_graph_parser_reads_responses_as_protocol_does(parse, rows):
  parse_fn, disabled = parse
  texts = [text[:RESPONSE_WIDTH] for text, _ in rows]
  codes = np.zeros((len(rows), RESPONSE_WIDTH), np.int32)
  for i, text in enumerate(texts):
    codes[i, :len(text)] = [ord(c) for c in text]
  shown = np.array([s for _, s in rows], np.int32)
  out = parse_fn(codes, np.array([len(t) for t in texts], np.int32), shown)
  for row, text in enumerate(texts):
    ops = transition_lib.fit_width(protocol.disable_ops(protocol.parse_response(text, int(shown[row])), disabled), 4)
    clean = "".join(map(chr, out.text[row, :out.length[row]]))
    assert clean == protocol.strip_think(text)
    got = [(int(out.kind[row, o]), bool(out.valid[row, o]), int(out.target[row, o]),
            clean[out.start[row, o]:out.end[row, o]]) for o in range(int(out.count[row]))]
    texts_of = lambda op: op.text if op.valid and op_table.BY_KIND[op.kind].body != "target" else ""
    assert got == [(op.kind, op.valid, op.target if op.valid else 0, texts_of(op)) for op in ops], text


@pytest.mark.parametrize("case, cause", [
    ("memagent", "rewrites its ops on the host"), ("tools", "renders its observations"),
    ("stop", "sampler.stop_strings"), ("text_policy", "SamplerPolicy"), ("split_tags", "is not one token"),
    ("spill", "memory.spill='scann'")])
def test_device_engine_refuses_what_it_cannot_reproduce(tokenizer, episodes, samplers, case, cause):
  sampler, config, env, policy = samplers["sample"], CONFIG, None, None
  if case == "memagent":
    config = dataclasses.replace(CONFIG, agent=dataclasses.replace(AGENT, method="memagent"))
  if case == "spill":
    config = dataclasses.replace(CONFIG, memory=dataclasses.replace(MEMORY, spill="scann"))
  if case == "tools":
    env = type("WebEnv", (), {"max_turns": 3})()
  if case == "stop":
    sampler = Sampler(nnx.merge(sampler.graphdef, sampler.params),
                      dataclasses.replace(sampler.config, stop_strings=("</final_answer>",)), tokenizer=tokenizer)
  if case == "split_tags":
    split = long_context.make(AGENT)
    assert any(cause in r for r in device.unsupported_reasons(_SplitTags(tokenizer), split, sampler))
    return
  policy = (lambda prompts: ["" for _ in prompts]) if case == "text_policy" else SamplerPolicy(sampler)
  with pytest.raises(ValueError, match=cause):
    device.rollout(episodes, policy, tokenizer=tokenizer, embed_fn=HashingEmbedder(MEMORY.embed_dim), config=config,
                   env=env)


def test_engines_are_chosen_by_name(tokenizer, samplers):
  assert engines.get("host") is host.rollout and engines.get("device") is device.rollout
  with pytest.raises(ValueError, match="unknown rollout engine 'gpu'"):
    engines.get("gpu")
  sampler = samplers["sample"]
  engines.check("host", tokenizer=tokenizer, config=CONFIG, sampler=sampler)
  engines.check("device", tokenizer=tokenizer, config=CONFIG, sampler=sampler)
  spill = dataclasses.replace(CONFIG, memory=dataclasses.replace(MEMORY, spill="scann"))
  engines.check("host", tokenizer=tokenizer, config=spill, sampler=sampler)
  with pytest.raises(ValueError, match="rollout.engine='device'.*memory.spill='scann'"):
    engines.check("device", tokenizer=tokenizer, config=spill, sampler=sampler)


class _SplitTags:
  """The tiny tokenizer, except that protocol tags come out as several tokens."""

  def __init__(self, tokenizer):
    self.backend_tokenizer = tokenizer.backend_tokenizer
    self._tokenizer = tokenizer

  def encode(self, text, add_special_tokens=False):
    return [t for c in text for t in self._tokenizer.encode(c, add_special_tokens=add_special_tokens)]
