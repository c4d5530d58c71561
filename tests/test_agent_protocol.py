"""The response parser and the environment step: hand-written transcripts, then random and adversarial fuzz."""
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from atommem_jax.agent import protocol
from atommem_jax.agent.envs import long_context as env
from atommem_jax.agent.envs.base import TurnOps
from atommem_jax.agent.config import AgentConfig
from atommem_jax.agent.protocol import (ADD_MEMORY, DELETE_MEMORY, FINAL_ANSWER, INVALID, MODIFY_MEMORY,
                                        UPDATE_MEMORY, UPDATE_QUERY)


def _summary(ops):
  return [(op.name, op.text, op.target, op.valid) for op in ops]


def test_well_formed_ops_in_order_with_free_text_and_think_ignored():
  response = ("<think>maybe <add_memory>not this</add_memory></think>I will note it. "
              "<add_memory> Paris is in France </add_memory> then <update_memory>read 2 chunks</update_memory>"
              "<update_query>capital</update_query><modify_memory>Memory 2: Lyon is big</modify_memory>"
              "<delete_memory> Memory 1 </delete_memory><final_answer>It is \\boxed{ Paris }.</final_answer>")
  assert _summary(protocol.parse_response(response, num_shown=2)) == [
      ("add_memory", "Paris is in France", 0, True),
      ("update_memory", "read 2 chunks", 0, True),
      ("update_query", "capital", 0, True),
      ("modify_memory", "Lyon is big", 2, True),
      ("delete_memory", "", 1, True),
      ("final_answer", "Paris", 0, True),
  ]


@pytest.mark.parametrize("response, expected", [
    ("no tags at all", []),
    ("<add_memory>   </add_memory>", [("invalid", False)]),
    ("<add_memory>never closed", [("invalid", False)]),
    ("</add_memory>", [("invalid", False)]),
    ("<add_memory>a <update_query>q</update_query> b</add_memory>",
     [("invalid", False), ("update_query", True), ("invalid", False)]),
    ("<remember>x</remember><add_memory>ok</add_memory>", [("invalid", False), ("add_memory", True)]),
    ("<modify_memory>Memory 3: x</modify_memory>", [("invalid", False)]),  # only 2 shown
    ("<modify_memory>Memory 0: x</modify_memory>", [("invalid", False)]),
    ("<modify_memory>Memory 1 x</modify_memory>", [("invalid", False)]),
    ("<modify_memory>Memory 1:   </modify_memory>", [("invalid", False)]),
    ("<delete_memory>1</delete_memory>", [("invalid", False)]),
    ("<delete_memory>Memory 1</delete_memory><modify_memory>Memory 1: y</modify_memory>",
     [("delete_memory", True), ("invalid", False)]),
    ("<final_answer>Paris</final_answer>", [("invalid", False)]),
    ("<final_answer>\\boxed{Paris</final_answer>", [("invalid", False)]),
    ("<final_answer>\\boxed{}</final_answer>", [("invalid", False)]),
    ("<final_answer>\\boxed{f(x{1})}</final_answer>", [("final_answer", True)]),
    ("<think>unclosed <add_memory>x</add_memory>", []),
    ("<ADD_MEMORY>upper</ADD_MEMORY>", [("invalid", False)]),  # an unknown (case-sensitive) tag
    ("<add_memory><b>bold</b> fact</add_memory>", [("add_memory", True)]),
])
def test_malformed_parts_become_counted_invalid_ops(response, expected):
  assert [(op.name, op.valid) for op in protocol.parse_response(response, num_shown=2)] == expected


def test_boxed_answer_keeps_nested_braces():
  (op,) = protocol.parse_response("<final_answer>\\boxed{\\frac{1}{2}}</final_answer>", num_shown=0)
  assert op.text == "\\frac{1}{2}"


def test_disabled_ops_keep_their_name_but_are_invalid():
  ops = protocol.parse_response("<add_memory>a</add_memory><update_memory>s</update_memory>", num_shown=0)
  ablated = protocol.disable_ops(ops, env.make(AgentConfig(allow_update=False, use_storage=False)).disabled_kinds)
  assert [(op.name, op.valid) for op in ablated] == [("add_memory", False), ("update_memory", True)]


_TAG_NAMES = list(protocol.TAG_KINDS) + ["think", "foo"]
_fragments = st.one_of(
    st.sampled_from([f"<{n}>" for n in _TAG_NAMES] + [f"</{n}>" for n in _TAG_NAMES]),
    st.sampled_from(["Memory 1:", "Memory 2", "Memory 99:", "\\boxed{", "}", "{", " ", ":", "\n", "<", ">"]),
    st.text(max_size=8),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_fragments, max_size=30), st.integers(0, 6))
def test_parser_never_raises_and_every_op_is_well_typed(fragments, num_shown):
  ops = protocol.parse_response("".join(fragments), num_shown)
  for op in ops:
    assert op.kind in range(len(protocol.KIND_NAMES))
    assert op.valid == (op.kind != INVALID)
    if op.kind in (MODIFY_MEMORY, DELETE_MEMORY):
      assert 1 <= op.target <= num_shown
    if op.valid and op.kind != DELETE_MEMORY:
      assert op.text.strip() == op.text and op.text
  deleted = [op.target for op in ops if op.kind == DELETE_MEMORY]
  assert len(deleted) == len(set(deleted))


def test_chunking_overlaps_and_caps():
  config = AgentConfig(chunk_tokens=4, overlap_tokens=1, max_chunks=10)
  assert env.chunk_document(range(10), config) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
  assert env.chunk_document(range(3), config) == [[0, 1, 2]]
  assert env.chunk_document([], config) == []
  assert len(env.chunk_document(range(100), AgentConfig(chunk_tokens=4, overlap_tokens=0, max_chunks=5))) == 5


def test_released_windows_and_middle_truncation():
  released = AgentConfig(chunk_tokens=4, overlap_tokens=1, max_chunks=10, chunking="released")
  # Chunk i is [4i - 1, 4(i + 1) + 1), clipped: stride 4, one token of overlap on each side.
  assert env.chunk_document(range(10), released) == [[0, 1, 2, 3, 4], [3, 4, 5, 6, 7, 8], [7, 8, 9]]
  assert env.chunk_document(range(8), released) == [[0, 1, 2, 3, 4], [3, 4, 5, 6, 7]]
  capped = AgentConfig(chunk_tokens=4, overlap_tokens=1, max_chunks=2, chunking="released", truncation="middle")
  assert env.chunk_budget(capped) == 8
  # 20 tokens cut to 8 from the middle: the first 4 and the last 4 are read.
  assert env.truncate_document(range(20), capped) == [0, 1, 2, 3, 16, 17, 18, 19]
  assert env.chunk_document(range(20), capped) == [[0, 1, 2, 3, 16], [3, 16, 17, 18, 19]]
  tail = AgentConfig(chunk_tokens=4, overlap_tokens=1, max_chunks=2, chunking="released", truncation="tail")
  assert env.chunk_document(range(20), tail) == [[0, 1, 2, 3, 4], [3, 4, 5, 6, 7]]
  # Stride windows cut from the middle keep what two windows of 4 every 3 cover (7 tokens), first and last parts.
  stride = AgentConfig(chunk_tokens=4, overlap_tokens=1, max_chunks=2, truncation="middle")
  assert env.chunk_document(range(20), stride) == [[0, 1, 2, 3], [3, 17, 18, 19]]
  assert env.chunk_document(range(5), capped) == env.chunk_document(range(5), tail)  # short documents: no cut


def _run(params, state, turns):
  """Steps one trajectory through `turns` (lists of op kinds, all valid) and records its pointers."""
  history = []
  for kinds in turns:
    kind = np.zeros((1, 6), np.int32)
    kind[0, :len(kinds)] = kinds
    state, result = env.step_jit(state, TurnOps(kind, kind > 0, np.zeros(1, bool)), params)
    history.append((int(state.chunk_index_B[0]), int(state.question_index_B[0]), int(state.query_count_B[0]),
                    bool(state.answer_phase_B[0]), bool(state.done_B[0]),
                    result.accepted_BxO[0, :len(kinds)].tolist(),
                    result.answered_question_BxO[0, :len(kinds)].tolist()))
  return history


def test_implicit_next_chunk_rule_query_limit_give_up_and_answer_phase():
  params = env.EnvParams.from_config(AgentConfig(query_limit=2, max_steps=20))
  history = _run(params, env.initial_state([2], [2]), [
      [UPDATE_QUERY, UPDATE_MEMORY],  # no Create/Update: re-read chunk 0; the scratchpad write resets the count
      [UPDATE_QUERY, UPDATE_QUERY],  # two Reads in a row: at the limit, still allowed, same chunk
      [UPDATE_QUERY],  # the third in a row is refused: question 0 given up; nothing accepted -> next chunk
      [DELETE_MEMORY],  # Delete only: same chunk
      [MODIFY_MEMORY],  # Update: advance past the last chunk into the answer phase
      [],  # answer phase, nothing written: asked again
      [UPDATE_QUERY, FINAL_ANSWER],  # query then answer question 1: the last one ends the episode
  ])
  assert history == [
      (0, 0, 0, False, False, [True, True], [-1, -1]),
      (0, 0, 2, False, False, [True, True], [-1, -1]),
      (1, 1, 0, False, False, [False], [-1]),
      (1, 1, 0, False, False, [True], [-1]),
      (2, 1, 0, True, False, [True], [-1]),
      (2, 1, 0, True, False, [], []),
      (2, 2, 0, True, True, [True, True], [-1, 1]),
  ]


def test_force_forward_early_answers_and_step_cap():
  params = env.EnvParams.from_config(AgentConfig(query_limit=1, query_limit_action="force_forward", max_steps=4))
  history = _run(params, env.initial_state([5], [2]), [
      [UPDATE_QUERY, UPDATE_QUERY, ADD_MEMORY],  # 2nd Read refused: forced forward; the Create still applies
      [FINAL_ANSWER],  # an early answer goes to question 0; only a valid tag: re-read the same chunk
      [INVALID],  # nothing valid: advance
      [UPDATE_MEMORY],  # fourth step hits the cap
      [ADD_MEMORY],  # after the end every op is refused
  ])
  assert history == [
      (1, 0, 0, False, False, [True, False, True], [-1, -1, -1]),
      (1, 1, 0, False, False, [True], [0]),
      (2, 1, 0, False, False, [False], [-1]),
      (2, 1, 0, False, True, [True], [-1]),
      (2, 1, 0, False, True, [False], [-1]),
  ]


def test_memagent_always_advances_and_rag_answers_each_question_once():
  memagent = env.EnvParams.from_config(AgentConfig(method="memagent"))
  assert [h[0] for h in _run(memagent, env.initial_state([2], [1]), [[UPDATE_QUERY], [UPDATE_MEMORY]])] == [1, 2]
  rag = env.EnvParams.from_config(AgentConfig(method="rag"))
  history = _run(rag, env.initial_state([0], [3]), [[], [FINAL_ANSWER], [INVALID]])
  assert [(h[1], h[3], h[4], h[6]) for h in history] == [(1, True, False, []), (2, True, False, [1]),
                                                          (3, True, True, [-1])]


@settings(max_examples=60, deadline=None)
@example(turns=[[2, 2, 2, 6]], num_chunks=0, num_questions=2, action="give_up", method="atommem")  # give up, answer
@given(st.lists(st.lists(st.integers(0, 6), max_size=6), min_size=1, max_size=25), st.integers(0, 4),
       st.integers(1, 3), st.sampled_from(["give_up", "force_forward"]), st.sampled_from(["atommem", "memagent"]))
def test_env_fuzz_keeps_pointer_invariants(turns, num_chunks, num_questions, action, method):
  config = AgentConfig(method=method, query_limit=2, query_limit_action=action, max_steps=12)
  params = env.EnvParams.from_config(config)
  state = env.initial_state([num_chunks], [num_questions])
  previous = state
  for kinds in turns:
    kind = np.zeros((1, 6), np.int32)
    kind[0, :len(kinds)] = kinds
    state, result = env.step_jit(state, TurnOps(kind, kind > 0, np.zeros(1, bool)), params)
    assert 0 <= int(state.chunk_index_B[0]) <= num_chunks
    assert int(previous.chunk_index_B[0]) <= int(state.chunk_index_B[0]) <= int(previous.chunk_index_B[0]) + 1
    assert int(previous.question_index_B[0]) <= int(state.question_index_B[0]) <= num_questions
    assert 0 <= int(state.query_count_B[0]) <= 2
    assert int(state.step_B[0]) <= 12
    assert bool(state.answer_phase_B[0]) == (int(state.chunk_index_B[0]) >= num_chunks)
    if bool(previous.done_B[0]):
      assert not result.accepted_BxO.any()
      assert int(state.step_B[0]) == int(previous.step_B[0])
    # Answers go to successive questions of this turn's range; a Read given up on skips a question unanswered.
    answered = result.answered_question_BxO[0][result.answered_question_BxO[0] >= 0].tolist()
    assert answered == sorted(set(answered))
    assert all(int(previous.question_index_B[0]) <= q < int(state.question_index_B[0]) for q in answered)
    previous = state
  assert bool(state.done_B[0]) or int(state.step_B[0]) < 12
