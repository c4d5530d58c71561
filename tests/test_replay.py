"""Hand-written transcripts through the real environment and memory, the replay CLI, and a fuzz of whole episodes."""
import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from atommem_jax import configlib
from atommem_jax.agent import replay
from atommem_jax.agent import protocol
from atommem_jax.agent.config import AgentConfig, RolloutConfig
from atommem_jax.agent.engines import host
from atommem_jax.agent.envs import long_context
from atommem_jax.data.tokenizer import load_tiny_tokenizer
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.memory.embedders import HashingEmbedder

DOCUMENT = ("Document 1:\nKalomi\nKalomi was born in Tesuna. Kalomi was born in 1875.\n\n"
            "Document 2:\nRativo\nRativo was founded by Kalomi.\n\n"
            "Document 3:\nTesuna\nTesuna is located in Vorika.")
# Shared by every transcript so the jitted transition compiles once (static config, B=1).
BASE = {"top_k": 3, "capacity": 8, "entry_tokens": 24, "scratchpad_tokens": 32, "query_tokens": 16, "embed_dim": 64,
        "max_ops_per_turn": 6}


@pytest.fixture(scope="module")
def two_chunks():
  """Chunk settings that cut DOCUMENT into exactly two chunks."""
  n = len(load_tiny_tokenizer().encode(DOCUMENT, add_special_tokens=False))
  config = {"chunk_tokens": n // 2 + 1, "overlap_tokens": 0}
  assert len(long_context.chunk_document(range(n), AgentConfig(**config))) == 2
  return config


def _replay(responses, questions=("Where was Kalomi born?",), answers=(("Tesuna",),), **config):
  return replay.replay({"document": DOCUMENT, "questions": list(questions), "answers": [list(a) for a in answers],
                        "config": {**BASE, **config}, "responses": list(responses)})


def _ops(result):
  return [[(op["type"], op["valid"]) for op in turn["ops"]] for turn in result["turns"]]


def test_good_transcript_sets_memory_pointers_and_answers(two_chunks):
  result = _replay([
      "<add_memory>Kalomi was born in Tesuna.</add_memory><update_memory>one fact so far</update_memory>",
      "Let me look. <update_query>Kalomi</update_query>",
      "<modify_memory>Memory 1: Kalomi was born in Tesuna, a city.</modify_memory><delete_memory>Memory 2"
      "</delete_memory>",
      "<final_answer>\\boxed{Tesuna}</final_answer>",
      "<add_memory>Rativo was founded by Kalomi.</add_memory><final_answer>The founder is \\boxed{ kalomi }"
      "</final_answer>",
      "never used: the episode is over",
  ], questions=("Where was Kalomi born?", "Who founded Rativo?"), answers=(("Tesuna",), ("Kalomi",)), **two_chunks)
  assert [(t["chunk_index"], t["phase"]) for t in result["turns"]] == [
      (0, "read"),  # Create: next chunk
      (1, "read"),  # Read only: same chunk again
      (1, "read"),  # Update (the Delete names an entry that was not shown): next chunk, past the last one
      (2, "answer"),
      (2, "answer"),  # the last question's answer ends the episode
  ]
  assert _ops(result) == [
      [("add_memory", True), ("update_memory", True)],
      [("update_query", True)],
      [("modify_memory", True), ("invalid", False)],
      [("final_answer", True)],
      [("add_memory", True), ("final_answer", True)],
  ]
  assert [t["retrieved"] for t in result["turns"]] == [
      [], ["Kalomi was born in Tesuna."], ["Kalomi was born in Tesuna."], ["Kalomi was born in Tesuna, a city."],
      ["Kalomi was born in Tesuna, a city."]]
  assert result["final"] == {"scratchpad": "one fact so far", "query": "Kalomi",
                             "storage": ["Kalomi was born in Tesuna, a city.", "Rativo was founded by Kalomi."],
                             "answers": ["Tesuna", "kalomi"], "reward": 1.0, "done": True}


def test_malformed_and_adversarial_responses_are_counted_never_fatal():
  result = _replay([
      "<think><add_memory>hidden thought</add_memory></think><add_memory>unclosed <update_query>q1</update_query>",
      "<update_query>q2</update_query><foo>bar</foo></add_memory>",
      "<update_query>q3</update_query>",  # third Read in a row with limit 2: refused, the question is given up
      "<final_answer>\\boxed{Tesuna}</final_answer>",  # never read: giving up the only question ended the episode
  ], query_limit=2, chunk_tokens=4000)
  assert _ops(result) == [
      [("invalid", False), ("update_query", True)],
      [("update_query", True), ("invalid", False), ("invalid", False)],
      [("update_query", False)],
  ]
  assert [t["chunk_index"] for t in result["turns"]] == [0, 0, 0]
  assert result["final"] == {"scratchpad": "", "query": "q2", "storage": [], "answers": [""], "reward": 0.0,
                             "done": True}


def test_force_forward_invalid_answer_and_running_out_of_responses(two_chunks):
  result = _replay([
      "<update_query>a</update_query><update_query>b</update_query>",  # 2nd Read refused: forced to chunk 1
      "<final_answer>\\boxed{}</final_answer>",  # empty box: invalid, so no valid tag: next chunk (answer phase)
  ], query_limit=1, query_limit_action="force_forward", **two_chunks)
  assert [(t["chunk_index"], t["phase"]) for t in result["turns"]] == [(0, "read"), (1, "read")]
  assert _ops(result) == [[("update_query", True), ("update_query", False)], [("invalid", False)]]
  assert result["final"]["query"] == "a"
  assert result["final"]["done"] is False and result["final"]["answers"] == [""]


def test_early_answer_ends_the_episode_and_step_cap(two_chunks):
  early = _replay(["<final_answer>\\boxed{Tesuna}</final_answer>", "unused"], **two_chunks)
  assert [t["phase"] for t in early["turns"]] == ["read"]
  assert early["final"]["done"] and early["final"]["reward"] == 1.0
  capped = _replay(["<update_memory>thinking</update_memory>"] * 5, max_steps=3, **two_chunks)
  assert len(capped["turns"]) == 3 and capped["final"]["done"] and capped["final"]["answers"] == [""]
  assert [t["chunk_index"] for t in capped["turns"]] == [0, 0, 0]  # scratchpad only: the same chunk again


def test_ablations_turn_disabled_ops_into_counted_invalid_noops(two_chunks):
  result = _replay([
      "<add_memory>x fact</add_memory>",
      "<modify_memory>Memory 1: y</modify_memory><delete_memory>Memory 1</delete_memory>",
  ], allow_update=False, allow_delete=False, **two_chunks)
  assert _ops(result)[1] == [("modify_memory", False), ("delete_memory", False)]
  assert [t["chunk_index"] for t in result["turns"]] == [0, 1]
  assert result["turns"][-1]["retrieved"] == ["x fact"] and result["final"]["storage"] == ["x fact"]
  no_scratchpad = _replay(["<update_memory>note</update_memory><add_memory>z</add_memory>"], use_scratchpad=False,
                          **two_chunks)
  assert _ops(no_scratchpad) == [[("update_memory", False), ("add_memory", True)]]
  assert no_scratchpad["final"]["scratchpad"] == ""


def test_memagent_overwrites_its_one_memory_and_always_advances(two_chunks):
  result = _replay(["Notes: Kalomi born in Tesuna.", "<update_query>x</update_query><update_memory>Kalomi -> Tesuna"
                    "</update_memory>", "<final_answer>\\boxed{Tesuna}</final_answer>"],
                   method="memagent", **two_chunks)
  assert [(t["chunk_index"], t["phase"]) for t in result["turns"]] == [(0, "read"), (1, "read"), (2, "answer")]
  assert _ops(result)[1] == [("update_memory", True), ("update_query", False)]
  assert result["final"]["scratchpad"] == "Kalomi -> Tesuna" and result["final"]["reward"] == 1.0


def test_bad_transcripts_are_one_clear_error():
  with pytest.raises(configlib.ConfigError, match=r"unknown config key\(s\) \['chunk_size'\]"):
    _replay(["x"], chunk_size=10)
  with pytest.raises(configlib.ConfigError, match="query_limit_action"):
    _replay(["x"], query_limit_action="retry")
  with pytest.raises(ValueError, match="'responses' must be a list"):
    replay.replay({"document": "d", "questions": ["q"], "answers": [["a"]], "responses": "x"})
  with pytest.raises(ValueError, match="one answer list per question"):
    replay.replay({"document": "d", "questions": ["q", "r"], "answers": [["a"]], "responses": []})


def test_cli_prints_exactly_one_json_object(tmp_path, two_chunks):
  transcript = {"document": DOCUMENT, "questions": ["Where was Kalomi born?"], "answers": [["Tesuna"]],
                "config": {**BASE, **two_chunks},
                "responses": ["<add_memory>Kalomi was born in Tesuna.</add_memory>", "nothing here",
                              "<final_answer>\\boxed{Tesuna}</final_answer>"]}
  path = tmp_path / "t.json"
  path.write_text(json.dumps(transcript))
  out = subprocess.run([sys.executable, "-m", "atommem_jax.replay", "--transcript", str(path)], capture_output=True,
                       text=True, check=True, env={"JAX_PLATFORMS": "cpu", "PATH": ""})
  (line,) = out.stdout.strip().splitlines()
  assert json.loads(line) == replay.replay(transcript)
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({**transcript, "config": {"chunk_size": 3}}))
  failed = subprocess.run([sys.executable, "-m", "atommem_jax.replay", "--transcript", str(bad)], capture_output=True,
                          text=True, env={"JAX_PLATFORMS": "cpu", "PATH": ""})
  assert failed.returncode != 0 and failed.stdout == "" and "chunk_size" in failed.stderr


_FRAGMENTS = st.one_of(
    st.sampled_from([f"<{n}>" for n in protocol.TAG_KINDS] + [f"</{n}>" for n in protocol.TAG_KINDS]
                    + ["<think>", "</think>", "<x>", "</x>"]),
    st.sampled_from(["Memory 1: ", "Memory 2", "Memory 3: a", "\\boxed{Tesuna}", "\\boxed{", "}", "Kalomi",
                     "born in Tesuna", " ", "\n"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6),
)


@pytest.fixture(scope="module")
def fuzz_setup():
  agent = AgentConfig(chunk_tokens=24, overlap_tokens=4, max_steps=10, query_limit=2)
  memory = MemoryConfig(**{k: v for k, v in BASE.items() if k != "top_k"}, top_k=3)
  return load_tiny_tokenizer(), agent, memory


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(_FRAGMENTS, max_size=14).map("".join), min_size=1, max_size=10),
       st.sampled_from(["give_up", "force_forward"]))
def test_fuzzed_episodes_keep_memory_and_pointer_invariants(fuzz_setup, responses, action):
  tokenizer, agent, memory = fuzz_setup
  agent = dataclasses.replace(agent, query_limit_action=action)
  stream = iter(responses * 10)
  states = []
  episode = long_context.Episode(id="fuzz", document=DOCUMENT,
                                 questions=("Where was Kalomi born?", "Who founded Rativo?"),
                                 answers=(("Tesuna",), ("Kalomi",)))
  (trajectory,) = host.rollout([episode], lambda observations: [next(stream) for _ in observations],
                               tokenizer=tokenizer, embed_fn=HashingEmbedder(memory.embed_dim),
                               config=RolloutConfig(agent=agent, memory=memory),
                               after_turn=lambda mem, env: states.append((mem, env)))
  assert trajectory.done and 1 <= len(trajectory.turns) <= agent.max_steps
  for mem, env in states:
    valid = mem.valid_BxM[0]
    assert valid.sum() <= memory.capacity
    assert np.all(mem.entry_lengths_BxM[0][valid] > 0) and np.all(mem.entry_lengths_BxM[0][~valid] == 0)
    ids = mem.entry_ids_BxM[0][valid]
    assert len(set(ids.tolist())) == len(ids) and np.all(ids < mem.next_entry_id_B[0])
    shown = mem.shown_slots_BxK[0][mem.shown_slots_BxK[0] >= 0]
    assert np.all(valid[shown])
    norms = np.linalg.norm(mem.entry_embeddings_BxMxD[0][valid], axis=-1)
    assert np.allclose(norms, 1.0, atol=1e-4)
    assert 0 <= env.query_count_B[0] <= agent.query_limit
  previous_chunk = 0
  for turn in trajectory.turns:
    assert previous_chunk <= turn.chunk_index <= previous_chunk + 1
    previous_chunk = turn.chunk_index
    assert len(turn.retrieved) <= memory.top_k
    assert all(op["type"] in protocol.KIND_NAMES for op in turn.ops)
    assert all(op["valid"] or op["reason"] for op in turn.ops)
  answered = [op["text"] for turn in trajectory.turns for op in turn.ops
              if op["type"] == "final_answer" and op["valid"]]
  assert [a for a in trajectory.answers if a is not None] == answered


def test_replay_with_a_qwen3_checkpoint_as_embedder(tmp_path):
  from hf_fixtures import make_tiny_hf_checkpoint  # pylint: disable=g-import-not-at-top
  make_tiny_hf_checkpoint(tmp_path / "embedder", vocab_size=2048)  # hidden size 64; covers the tiny tokenizer
  facts = ["Kalomi was born in Tesuna.", "Rativo was founded by Kalomi.", "Tesuna is located in Vorika."]
  config = {**BASE, "embedder": str(tmp_path / "embedder"), "embed_dim": 64, "top_k": 2, "chunk_tokens": 4000}
  result = _replay(["".join(f"<add_memory>{f}</add_memory>" for f in facts),
                    "<final_answer>\\boxed{Tesuna}</final_answer>"], **config)
  assert result["final"]["storage"] == facts and result["final"]["reward"] == 1.0
  shown = result["turns"][1]["retrieved"]
  assert len(shown) == 2 and set(shown) <= set(facts)
  with pytest.raises(configlib.ConfigError, match="has width 64, but embed_dim is 32; set embed_dim=64"):
    _replay(["x"], **{**config, "embed_dim": 32})


def test_a_user_template_directory_replaces_our_wording(tmp_path, two_chunks):
  tokenizer = load_tiny_tokenizer()
  templates = protocol.Templates.load()
  for name, text in templates.texts.items():
    (tmp_path / f"{name}.txt").write_text(text)
  (tmp_path / "read.txt").write_text("READ $chunk_number/$num_chunks | $questions | notes: ${memories} | $$5 | $chunk")
  (tmp_path / "system.txt").write_text("Be brief.")
  seen = []
  policy = lambda observations: seen.extend(observations) or ["<final_answer>\\boxed{Tesuna}</final_answer>"]
  memory = MemoryConfig(**{k: v for k, v in BASE.items() if k != "top_k"}, top_k=3)
  agent = AgentConfig(template_dir=str(tmp_path), **two_chunks)
  episode = long_context.Episode(id="t", document=DOCUMENT, questions=("Where was Kalomi born?",),
                                 answers=(("Tesuna",),))
  (trajectory,) = host.rollout([episode], policy, tokenizer=tokenizer, embed_fn=HashingEmbedder(64),
                               config=RolloutConfig(agent=agent, memory=memory))
  assert trajectory.reward == 1.0
  assert seen[0].startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nREAD 1/2 | Question 1: ")
  assert "| notes: (no memory) | $5 | Document 1:" in seen[0]
  (tmp_path / "answer.txt").unlink()
  with pytest.raises(FileNotFoundError, match="answer.txt"):
    protocol.Templates.load(str(tmp_path))
  (tmp_path / "answer.txt").write_text("${question} ${unknown_field}")
  with pytest.raises(ValueError, match=r"answer.txt: placeholder\(s\) \['unknown_field'\]"):
    protocol.Templates.load(str(tmp_path))
  (tmp_path / "answer.txt").write_text("costs $ 5")
  with pytest.raises(ValueError, match="malformed"):
    protocol.Templates.load(str(tmp_path))


def test_the_compact_variant_changes_only_the_system_prompt():
  default, compact = protocol.Templates.load(), protocol.Templates.load("compact")
  assert set(compact.texts) == set(default.texts)
  assert [n for n in default.texts if default.texts[n] != compact.texts[n]] == ["system"]
  tokenizer = load_tiny_tokenizer()
  assert len(tokenizer.encode(compact.texts["system"])) < 100 < len(tokenizer.encode(default.texts["system"]))


def test_released_windows_show_a_sentence_cut_at_a_boundary_whole_in_the_next_chunk():
  tokenizer = load_tiny_tokenizer()
  ids = tokenizer.encode(DOCUMENT, add_special_tokens=False)
  sentence = "Rativo was founded by Kalomi."
  start = len(tokenizer.encode(DOCUMENT[:DOCUMENT.index(sentence)], add_special_tokens=False))
  assert tokenizer.decode(ids[start:start + 6]).startswith("Rativo was")  # the sentence starts a token
  # Boundary C two tokens into the sentence, o = 3: chunk 0 ([0, C + o)) cuts it, chunk 1 ([C - o, 2C + o)) holds it.
  c, o = start + 2, 3
  result = _replay(["no tag: next chunk", "no tag: next chunk"], chunk_tokens=c, overlap_tokens=o,
                   chunking="released", max_chunks=40)
  first, second = (t["observation"] for t in result["turns"])
  assert sentence not in first and "Rativo" in first  # cut at the boundary
  assert sentence in second
  for i, turn in enumerate(result["turns"]):  # the windows are exactly [i*C - o, (i+1)*C + o)
    window = tokenizer.decode(ids[max(0, i * c - o):(i + 1) * c + o])
    assert f":\n{window}" in turn["observation"] and f"Chunk {i + 1} of {-(-len(ids) // c)}:" in turn["observation"]
  # Middle truncation keeps the document's start and end; the tail truncation its start only.
  middle = _replay(["x"], chunk_tokens=c, overlap_tokens=0, chunking="released", max_chunks=1,
                   truncation="middle")["turns"][0]
  tail = _replay(["x"], chunk_tokens=c, overlap_tokens=0, chunking="released", max_chunks=1,
                 truncation="tail")["turns"][0]
  assert middle["observation"].rstrip("\n").endswith(tokenizer.decode(ids[:(c + 1) // 2] + ids[len(ids) - c // 2:]))
  assert tail["observation"].rstrip("\n").endswith(tokenizer.decode(ids[:c]))
  assert "Chunk 1 of 1:" in middle["observation"] and "Vorika" in middle["observation"]


def test_the_released_prompt_shows_the_reads_in_a_row(two_chunks):
  result = _replay(["<update_query>a</update_query>", "<update_query>b</update_query>",
                    "<update_query>c</update_query><add_memory>Kalomi was born in Tesuna.</add_memory>",
                    "nothing", "<update_query>d</update_query>", "<final_answer>\\boxed{Tesuna}</final_answer>"],
                   template_dir="released", query_limit=3, **two_chunks)
  counters = [re.search(r"updated the query (\d+) times in a row \(at most 3 in a row\)", t["observation"])
              for t in result["turns"]]
  assert [int(m.group(1)) for m in counters] == [0, 1, 2, 0, 0, 1]
  assert [t["phase"] for t in result["turns"]] == ["read"] * 4 + ["answer"] * 2
  assert "Answer question 1 of 1 from your memory" in result["turns"][-1]["observation"]
  assert result["final"]["reward"] == 1.0


def test_both_rewards_on_a_two_question_transcript():
  questions, answers = ("Where was Kalomi born?", "Who founded Rativo?"), (("Tesuna",), ("Kalomi",))
  # The first question is answered with the second's answer, the second correctly.
  responses = ["<final_answer>\\boxed{Kalomi}</final_answer>", "<final_answer>\\boxed{kalomi}</final_answer>"]
  rewards = {name: _replay(responses, questions=questions, answers=answers, chunk_tokens=4000, reward=name)["final"]
             for name in ("per_question", "released_union")}
  assert rewards["per_question"]["answers"] == rewards["released_union"]["answers"] == ["Kalomi", "kalomi"]
  assert rewards["per_question"]["reward"] == 0.5  # only the second answer matches its own question's gold
  assert rewards["released_union"]["reward"] == 1.0  # both match the union {Tesuna, Kalomi}: 2 hits / 2 questions
  wrong_first = _replay(["<final_answer>\\boxed{Vorika}</final_answer>", responses[1]], questions=questions,
                        answers=answers, chunk_tokens=4000, reward="released_union")
  assert wrong_first["final"]["reward"] == 0.5
  with pytest.raises(configlib.ConfigError, match="reward"):
    _replay(responses, reward="union")
