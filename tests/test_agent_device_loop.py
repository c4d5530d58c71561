"""The token-space protocol and the rollout as one while_loop: agreement with the text parser and the host loop."""
import dataclasses

import flax.nnx as nnx
import jax
import numpy as np
import pytest

from atommem_jax.agent import device_loop, protocol, rollout, token_protocol
from atommem_jax.agent.config import AgentConfig
from atommem_jax.data import long_context, synthetic
from atommem_jax.data.tokenizer import load_tiny_tokenizer
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.memory.embedders import HashingEmbedder
from atommem_jax.model import PRESETS, Qwen3
from atommem_jax.sampling.config import SamplerConfig

RESPONSES = [
    "<think>plan <add_memory>no</add_memory></think>I will note it. <add_memory> Kalomi was born in Tesuna. "
    "</add_memory><update_memory>one fact</update_memory>",
    "<update_query>Kalomi</update_query><modify_memory>Memory 2: Tesuna is in Vorika</modify_memory>"
    "<delete_memory> Memory 1 </delete_memory><delete_memory>Memory 1</delete_memory>",
    "<final_answer>It is \\boxed{ Paris }.</final_answer><final_answer>\\boxed{a{b}c}</final_answer>",
    "<final_answer>\\boxed{x</final_answer><final_answer>\\boxed{}</final_answer><final_answer>no box</final_answer>",
    "<add_memory>a <update_query>q</update_query> b</add_memory></add_memory><add_memory>   </add_memory>",
    "<modify_memory>Memory 9: x</modify_memory><modify_memory>Memory1: x</modify_memory><delete_memory>Memory 2:"
    "</delete_memory><add_memory>never closed",
    "no tags at all",
    "The answer is \\boxed{wrong} <final_answer>Answer: \\boxed{ 1875 }</final_answer>",
]


@pytest.fixture(scope="module")
def tokenizer():
  return load_tiny_tokenizer()


def test_token_parser_agrees_with_the_text_parser(tokenizer):
  tables = jax.tree.map(np.asarray, token_protocol.vocab_tables(tokenizer))
  ids = [tokenizer.encode(r, add_special_tokens=False) for r in RESPONSES]
  tokens_BxN = np.zeros((len(ids), 96), np.int32)
  for b, row in enumerate(ids):
    tokens_BxN[b, :len(row)] = row
  lengths_B = np.array([len(row) for row in ids], np.int32)
  ops = jax.jit(token_protocol.parse_tokens, static_argnums=(4, 5))(
      tokens_BxN, lengths_B, np.full((len(ids),), 3), tables, 8, (protocol.DELETE_MEMORY,))
  for b, response in enumerate(RESPONSES):
    expected = protocol.disable_ops(protocol.parse_response(response, num_shown=3), (protocol.DELETE_MEMORY,))
    got = []
    for o in range(int(ops.count_B[b])):
      valid = bool(ops.valid_BxO[b, o])
      text = tokenizer.decode(tokens_BxN[b, ops.start_BxO[b, o]:ops.end_BxO[b, o]]).strip()
      kind = int(ops.kind_BxO[b, o])
      got.append((protocol.KIND_NAMES[kind], valid, int(ops.target_BxO[b, o]) if valid else 0,
                  text if valid and kind != protocol.DELETE_MEMORY else ""))
    assert got == [(op.name, op.valid, op.target if op.valid else 0,
                    op.text if op.valid and op.kind != protocol.DELETE_MEMORY else "") for op in expected], response
    assert not ops.valid_BxO[b, int(ops.count_B[b]):].any()


@pytest.fixture(scope="module")
def token_rollout(tokenizer):
  task = synthetic.generate(synthetic.SyntheticConfig(seed=3, num_documents=64, num_questions=8))
  examples = long_context.build_examples(task.corpus(), long_context.LongContextConfig(num_docs=8, seed=7))
  episodes = [rollout.Episode.from_example(e) for e in examples[:2]]
  memory = MemoryConfig(capacity=16, entry_tokens=24, scratchpad_tokens=32, query_tokens=24, embed_dim=64, top_k=3,
                        max_ops_per_turn=6)
  agent = AgentConfig(chunk_tokens=64, overlap_tokens=8, max_steps=3)
  model = Qwen3(dataclasses.replace(PRESETS["tiny_default"], num_layers=1), rngs=nnx.Rngs(0))
  sampler = SamplerConfig(max_new_tokens=6, eos_ids=(tokenizer.eos_token_id,), pad_id=tokenizer.pad_token_id)
  return device_loop.TokenRollout(episodes, model, tokenizer, HashingEmbedder(memory.embed_dim), agent=agent,
                                  memory=memory, sampler=sampler, num_samples=2), nnx.split(model)[1]


def test_device_loop_equals_the_host_loop_for_the_same_seed(token_rollout):
  rollout_, params = token_rollout
  host = rollout_.run_host_loop(params, seed=5)
  device = rollout_.run_device_loop(params, seed=5)
  for field in dataclasses.fields(device_loop.RolloutRecord):
    np.testing.assert_array_equal(getattr(host[2], field.name), getattr(device[2], field.name), err_msg=field.name)
  np.testing.assert_array_equal(host[0].query_tokens_BxQ, device[0].query_tokens_BxQ)
  np.testing.assert_array_equal(host[1].done_B, device[1].done_B)

  trajectories = rollout_.trajectories(*device)
  assert len(trajectories) == 4 and all(t.done and 1 <= len(t.turns) <= 3 for t in trajectories)
  first = trajectories[0].turns[0]
  assert first.prompt.startswith("<|im_start|>system\n") and first.prompt.endswith("<|im_start|>assistant\n")
  assert trajectories[0].questions[0] in first.prompt and "Chunk 1 of " in first.prompt
  assert len(first.response_logprobs) == len(first.response_ids) <= 6
  # Both samples of an episode see the same first prompt and draw their own responses.
  assert trajectories[0].turns[0].prompt_ids == trajectories[1].turns[0].prompt_ids
  assert trajectories[0].turns[0].response_ids != trajectories[1].turns[0].response_ids


def test_token_turn_applies_written_ops_to_memory(token_rollout, tokenizer):
  rollout_, _ = token_rollout
  _, _, apply = rollout_._turn_functions  # pylint: disable=protected-access
  memory, env = rollout_.initial_state()
  texts = ["<add_memory>Kalomi was born in Tesuna.</add_memory><update_memory>note</update_memory>",
           "<update_query>Rativo</update_query>", "nothing", "<final_answer>\\boxed{Tesuna}</final_answer>"]
  ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
  tokens = np.zeros((4, 32), np.int32)
  for r, row in enumerate(ids):
    tokens[r, :len(row)] = row
  memory, env, ops, result = jax.device_get(apply(rollout_.data, memory, env, tokens, np.array([len(r) for r in ids])))
  assert memory.valid_BxM.sum(1).tolist() == [1, 0, 0, 0]
  assert tokenizer.decode(memory.entry_tokens_BxMxE[0, 0, :memory.entry_lengths_BxM[0, 0]]) == \
      "Kalomi was born in Tesuna."
  assert tokenizer.decode(memory.scratchpad_tokens_BxS[0, :memory.scratchpad_length_B[0]]) == "note"
  assert tokenizer.decode(memory.query_tokens_BxQ[1, :memory.query_length_B[1]]) == "Rativo"
  assert env.chunk_index_B.tolist() == [1, 0, 1, 0]  # Create / Read only / no tag / an answer
  assert result.answered_question_BxO[3, 0] == 0 and env.done_B.tolist() == [False, False, False, True]
