"""The web environment over real MCP: hand-written transcripts replayed against our corpus server (HTTP on 127.0.0.1
and stdio), the step's rules, the observation (tools offered, withdrawn on the last step, the previous slot cut to
its budget), the web oracle on synthetic sites, and web rewards on trajectories."""
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from atommem_jax import op_table
from atommem_jax.agent import replay, rewards
from atommem_jax.agent.config import AgentConfig, RolloutConfig, WebConfig
from atommem_jax.agent.engines import host
from atommem_jax.agent.envs import base, web
from atommem_jax.agent.web_oracle import WebOraclePolicy
from atommem_jax.data import synthetic, web_readers
from atommem_jax.data.tokenizer import load_tiny_tokenizer, tiny_web_tokenizer_dir
from atommem_jax.memory.config import MemoryConfig
from atommem_jax.memory.embedders import HashingEmbedder
from atommem_jax.metrics.judge import JudgeConfig, web_boxed_reward
from atommem_jax.tools import build_corpus
from atommem_jax.tools.corpus_server import launch, server_command
from atommem_jax.tools.mcp_client import ToolServerError

SITE = "https://site.example/wiki"
PAGES = [
    {"url": f"{SITE}/Kalomi", "title": "Kalomi",
     "text": f"Kalomi was born in Tesuna ({SITE}/Tesuna). Kalomi was born in 1875."},
    {"url": f"{SITE}/Tesuna", "title": "Tesuna", "text": "Tesuna is located in Vorika."},
    {"url": f"{SITE}/Rativo", "title": "Rativo", "text": f"Rativo was founded by Kalomi ({SITE}/Kalomi)."},
    {"url": f"{SITE}/Dabesu", "title": "Dabesu", "text": "Dabesu is owned by Rativo. Dabesu sells maps."},
]
QUESTION = "In which country was Kalomi born?"
# Shared by every transcript so the jitted transition compiles once (static config, B=1).
BASE = {"top_k": 3, "capacity": 8, "entry_tokens": 24, "scratchpad_tokens": 32, "query_tokens": 16, "embed_dim": 64,
        "max_ops_per_turn": 6}


def call(name, **arguments):
  return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  path = tmp_path_factory.mktemp("web_env") / "corpus.jsonl"
  path.write_text("".join(json.dumps(p) + "\n" for p in PAGES))
  return str(path)


@pytest.fixture(scope="module")
def http_url(corpus):
  with launch(corpus, timeout_s=300) as url:
    yield url


def _transcript(responses, **config):
  return {"env": "web", "questions": [QUESTION], "answers": [["Vorika"]], "config": {**BASE, **config},
          "responses": list(responses)}


def _ops(result):
  return [[(op["type"], op["valid"]) for op in turn["ops"]] for turn in result["turns"]]


SEARCH_FETCH_STORE_ANSWER = [
    "<update_memory>Find where Kalomi was born.</update_memory>" + call("search", query="Kalomi born", num_results=2),
    call("fetch_url", url=f"{SITE}/Kalomi", purpose="birthplace"),
    "<add_memory>Kalomi was born in Tesuna.</add_memory>" + call("fetch_url", url=f"{SITE}/Tesuna"),
    "<add_memory>Tesuna is located in Vorika.</add_memory>Kalomi was born in Tesuna, which is in Vorika."
    "<final_answer>\\boxed{Vorika}</final_answer>",
    "never used: the episode is over",
]


def test_search_fetch_store_answer_over_http(http_url):
  result = replay.replay(_transcript(SEARCH_FETCH_STORE_ANSWER), mcp_url=http_url)
  turns = result["turns"]
  assert _ops(result) == [[("update_memory", True)], [], [("add_memory", True)],
                          [("add_memory", True), ("final_answer", True)]]
  assert [t["tool_call"] for t in turns] == [
      {"name": "search", "arguments": {"query": "Kalomi born", "num_results": 2}},
      {"name": "fetch_url", "arguments": {"url": f"{SITE}/Kalomi", "purpose": "birthplace"}},
      {"name": "fetch_url", "arguments": {"url": f"{SITE}/Tesuna"}},
      None]
  search, kalomi, tesuna, answer = [t["tool_response"] for t in turns]
  assert search.startswith(f"1. Kalomi\nURL: {SITE}/Kalomi\n") and "\n\n2. " in search and "\n\n3. " not in search
  assert kalomi == (f"Title: Kalomi\nURL: {SITE}/Kalomi\nPart 1 of 1\n\nKalomi was born in Tesuna ({SITE}/Tesuna). "
                    "Kalomi was born in 1875.")
  assert tesuna.endswith("Tesuna is located in Vorika.") and answer is None
  assert [(t["phase"], t["chunk_index"]) for t in turns] == [("browse", 0)] * 4
  # The question is the first query, so the stored fact is shown from the next step on.
  assert [t["retrieved"] for t in turns] == [[], [], [], ["Kalomi was born in Tesuna."]]
  assert result["final"] == {"scratchpad": "Find where Kalomi was born.", "query": QUESTION,
                             "storage": ["Kalomi was born in Tesuna.", "Tesuna is located in Vorika."],
                             "answers": ["Vorika"], "reward": 1.0, "done": True}


def test_malformed_call_unknown_url_and_a_call_on_the_last_step_over_stdio(corpus):
  responses = [
      "<add_memory>Kalomi is a person.</add_memory><tool_call>search for Kalomi please</tool_call>",
      # Single quotes and a missing closing brace: repaired, and it runs; the page does not exist.
      "<tool_call>{'name': 'fetch_url', 'arguments': {'url': 'https://site.example/wiki/Atlantis'}",
      call("search", query="Tesuna") + "<update_query>Kalomi</update_query>",
      call("fetch_url", url=f"{SITE}/Tesuna") + "<final_answer>\\boxed{Vorika}</final_answer>",
  ]
  command = " ".join(server_command(corpus, stdio=True))
  result = replay.replay(_transcript(responses, web={"max_steps": 4}), mcp_command=command)
  turns = result["turns"]
  assert _ops(result) == [[("add_memory", True), ("invalid", False)], [], [("update_query", True)],
                          [("final_answer", True), ("invalid", False)]]
  assert [t["tool_call"] for t in turns] == [
      None, {"name": "fetch_url", "arguments": {"url": "https://site.example/wiki/Atlantis"}},
      {"name": "search", "arguments": {"query": "Tesuna"}}, None]
  assert turns[0]["tool_response"] is None
  assert "cannot fetch 'https://site.example/wiki/Atlantis': no such page" in turns[1]["tool_response"]
  assert turns[2]["tool_response"].startswith(f"1. Tesuna\nURL: {SITE}/Tesuna\n")
  assert turns[3]["tool_response"] is None and turns[3]["phase"] == "answer"
  assert result["final"]["answers"] == ["Vorika"] and result["final"]["done"] and result["final"]["reward"] == 1.0
  assert result["final"]["query"] == "Kalomi" and result["final"]["storage"] == ["Kalomi is a person."]


def test_the_cli_prints_one_json_object(tmp_path, http_url):
  path = tmp_path / "web.json"
  transcript = _transcript(SEARCH_FETCH_STORE_ANSWER[:2])
  path.write_text(json.dumps(transcript))
  out = subprocess.run([sys.executable, "-m", "atommem_jax.replay", "--transcript", str(path), "--mcp_url", http_url],
                       capture_output=True, text=True, check=True, env={"JAX_PLATFORMS": "cpu", "PATH": ""})
  (line,) = out.stdout.strip().splitlines()
  printed = json.loads(line)
  assert printed == replay.replay(transcript, mcp_url=http_url)
  assert set(printed["turns"][0]) == {"chunk_index", "phase", "ops", "retrieved", "observation", "tool_call",
                                    "tool_response"}
  assert printed["final"]["done"] is False


def test_a_missing_or_unreachable_server_is_one_clear_error():
  transcript = _transcript(["x"])
  with pytest.raises(ValueError, match="needs a tool server: --mcp_url URL or --mcp_command CMD"):
    replay.replay(transcript)
  with pytest.raises(ToolServerError, match="cannot reach the tool server http://127.0.0.1:9/mcp"):
    replay.replay(transcript, mcp_url="http://127.0.0.1:9/mcp")
  with pytest.raises(ValueError, match="are for web transcripts only"):
    replay.replay({"document": "d", "questions": ["q"], "answers": [["a"]], "responses": []}, mcp_url="http://x/mcp")


def _turn(kinds, acted, width=4):
  kind = np.zeros((len(kinds), width), np.int32)
  for b, row in enumerate(kinds):
    kind[b, :len(row)] = row
  return base.TurnOps(kind_BxO=kind, valid_BxO=kind != op_table.INVALID, acted_B=np.asarray(acted))


def test_step_rules():
  params = web.WebParams(query_limit=np.int32(2), max_steps=np.int32(3))
  state = web.initial_state([1, 1, 2, 1])
  read, write, answer = op_table.UPDATE_QUERY, op_table.ADD_MEMORY, op_table.FINAL_ANSWER
  # Row 0: a call with a write; row 1: an answer and a call (the answer ends it: the call does not run); row 2: the
  # first of two questions answered, the call runs; row 3: three Reads with limit 2 (the third gives up).
  state, result = web.step(state, _turn([[write], [answer], [answer], [read, read, read]], [True, True, True, True]),
                           params)
  assert result.act_B.tolist() == [True, False, True, False]
  assert result.accepted_BxO[3, :3].tolist() == [True, True, False]
  assert result.answered_question_BxO[:3, 0].tolist() == [-1, 0, 0]
  assert state.done_B.tolist() == [False, True, False, True] and state.question_index_B.tolist() == [0, 1, 1, 1]
  state, result = web.step(state, _turn([[read], [], [], []], [True, False, True, False]), params)
  assert result.act_B.tolist() == [True, False, True, False] and state.query_count_B[0] == 1
  # The third step is the last (max_steps 3): nothing acts, and every running row is done after it.
  state, result = web.step(state, _turn([[], [], [answer], []], [True, False, True, False]), params)
  assert not result.act_B.any() and state.done_B.all() and state.step_B.tolist() == [3, 1, 3, 1]
  assert result.answered_question_BxO[2, 0] == 1
  assert isinstance(state.step_B, jnp.ndarray)


def test_observations_offer_tools_then_withdraw_them_and_cut_long_responses(http_url):
  tokenizer = load_tiny_tokenizer()
  agent = AgentConfig(env="web", web=WebConfig(server_url=http_url, max_steps=3, tool_response_tokens=12))
  memory = MemoryConfig(**BASE)
  seen = []
  responses = iter([call("fetch_url", url=f"{SITE}/Kalomi"), "Thinking about it.", "<final_answer>\\boxed{x}"
                    "</final_answer>"])
  policy = lambda prompts: seen.extend(prompts) or [next(responses) for _ in prompts]
  with web.make(agent) as env:
    (trajectory,) = host.rollout([web.Episode(id="e", questions=(QUESTION,), answers=(("Vorika",),),
                                              root_url="https://site.example")], policy, tokenizer=tokenizer,
                                 embed_fn=HashingEmbedder(64), config=RolloutConfig(agent=agent, memory=memory),
                                 env=env)
  assert trajectory.done and trajectory.reward == 0.0 and len(seen) == 3
  first, second, last = seen
  assert "\nTools: search(query, num_results) fetch_url(url, purpose, page)<|im_end|>" in first
  assert "Question: In which country was Kalomi born?\nWebsite: https://site.example\n" in first
  assert "(nothing yet: this is your first step)" in first and "Step 1 of 3." in first
  assert "Reads in a row: 0 of 3" in first and "Stored notes matching the query:\n(no memory)" in first
  assert f'You called fetch_url {{"url": "{SITE}/Kalomi"}}\nTool response:\nTitle: Kalomi' in second
  assert "[... cut]" in second and "1875" not in second  # cut to 12 tokens
  assert "Tools:" not in last and "this is your last step. The tools are withdrawn" in last
  assert "You made no tool call. Your response was:\nThinking about it." in last


def test_the_web_oracle_answers_unseen_worlds_of_a_synthetic_site(tmp_path):
  corpus, questions = str(tmp_path / "corpus.jsonl"), str(tmp_path / "questions.jsonl")
  config = synthetic.SyntheticConfig(num_documents=16, num_questions=3, question_kinds=("birth_country",))
  worlds = [(seed, synthetic.generate(synthetic.SyntheticConfig(**{**config.__dict__, "seed": seed})))
            for seed in range(6)]
  build_corpus.write_jsonl((r for s, t in worlds for r in build_corpus.synthetic_world_rows(t, s)), corpus)
  build_corpus.write_jsonl((r for s, t in worlds for r in build_corpus.synthetic_question_rows(t, s)), questions)
  web_questions = web_readers.read_plain_questions(questions).questions
  oracle = WebOraclePolicy([q for _, t in worlds for q in t.questions],
                           [build_corpus.world_url(s) for s, t in worlds for _ in t.questions])
  agent = AgentConfig(env="web", template_dir="compact", web=WebConfig(corpus=corpus, tool_response_tokens=160))
  memory = MemoryConfig(**BASE)
  with web.make(agent) as env:  # serves the corpus itself
    trajectories = host.rollout(env.episodes(web_questions), oracle, tokenizer=load_tiny_tokenizer(
        tiny_web_tokenizer_dir()), embed_fn=HashingEmbedder(64), config=RolloutConfig(agent=agent, memory=memory),
                                env=env)
  assert [t.reward for t in trajectories] == [1.0] * 18
  names = [[turn.action["name"] if turn.action else None for turn in t.turns] for t in trajectories]
  assert names == [["search", "fetch_url", "fetch_url", None]] * 18
  assert all(t.storage == [f.sentence for f in q.facts] for t, q in zip(trajectories, [q for _, w in worlds
                                                                                        for q in w.questions]))


def test_web_rewards_score_each_question_on_its_accepted_answer():
  calls = []

  def judge(question, final_response, answers):
    calls.append((question, final_response))
    return web_boxed_reward(question, final_response, answers)

  trajectory = type("T", (), dict(questions=["q1", "q2"], answers=["vo rika", None], gold_answers=[["Vorika"], ["x"]]))
  assert rewards.per_question_response_reward(judge)(trajectory) == 0.5
  assert calls == [("q1", "\\boxed{vo rika}")]


def test_the_llm_judge_reward_is_chosen_by_name_and_calls_the_configured_endpoint():
  import http.server
  import threading

  class Judge(http.server.BaseHTTPRequestHandler):
    seen = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
      body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
      prompt = body["messages"][0]["content"]
      type(self).seen.append(body["model"])
      verdict = "Response's final answer: Vorika" in prompt
      payload = json.dumps({"choices": [{"message": {"content": json.dumps({"pass": verdict})}}]}).encode()
      self.send_response(200)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(payload)))
      self.end_headers()
      self.wfile.write(payload)

    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Judge)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    with pytest.raises(ValueError, match="needs judge.url and judge.model"):
      AgentConfig(env="web", reward="llm_judge")
    agent = AgentConfig(env="web", reward="llm_judge", judge=JudgeConfig(url=url, model="grader"))
    reward = rewards.by_name(agent.reward, agent.judge)
    trajectory = type("T", (), dict(questions=["q1", "q2"], answers=["Vorika", "Tesuna"],
                                    gold_answers=[["Vorika"], ["Kalomi"]]))
    assert reward(trajectory) == 0.5 and Judge.seen == ["grader", "grader"]
    # A rollout's trajectories are graded in one batch (the judge's concurrent requests), one request per answer.
    unanswered = type("T", (), dict(questions=["q3"], answers=[None], gold_answers=[["Vorika"]]))
    assert rewards.score(reward, [trajectory, unanswered, trajectory]) == [0.5, 0.0, 0.5]
    assert len(Judge.seen) == 6
    assert rewards.by_name("web_boxed")(trajectory) == 0.5
  finally:
    server.shutdown()
    server.server_close()


def test_a_killed_launcher_leaves_no_corpus_server_behind(corpus, tmp_path):
  """A trainer killed with SIGKILL never runs `launch`'s cleanup; the server notices it was re-parented and exits."""
  pid_file = tmp_path / "server.pid"
  code = (f"import os, pathlib, subprocess, time\nfrom atommem_jax.tools.corpus_server import launch\n"
          f"with launch({corpus!r}, timeout_s=300) as url:\n"
          f"  child = subprocess.run(['pgrep', '-P', str(os.getpid())], capture_output=True, text=True).stdout\n"
          f"  pathlib.Path({str(pid_file)!r}).write_text(child.split()[0])\n"
          f"  time.sleep(600)\n")
  launcher = subprocess.Popen([sys.executable, "-c", code])
  try:
    deadline = time.monotonic() + 300
    while not pid_file.exists() and launcher.poll() is None and time.monotonic() < deadline:
      time.sleep(0.5)
    server_pid = int(pid_file.read_text())
    os.kill(server_pid, 0)  # serving
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
      try:
        os.kill(server_pid, 0)
      except ProcessLookupError:
        break
      with contextlib.suppress(ChildProcessError):
        os.waitpid(server_pid, os.WNOHANG)
      time.sleep(0.5)
    else:
      os.kill(server_pid, signal.SIGKILL)
      pytest.fail("the corpus server outlived its launcher by 20 s")
  finally:
    if launcher.poll() is None:
      launcher.kill()


def test_every_web_template_renders_with_every_placeholder(tmp_path):
  import re
  for name, fields in web.TEMPLATE_FIELDS.items():
    (tmp_path / f"{name}.txt").write_text(f"<{name}>" + "".join(f"[{f}=${{{f}}}]" for f in fields))
  client = type("Client", (), {"chat_template_tools": lambda self: [{"type": "function", "function": {"name": "s"}}]})
  env = web.WebEnv(AgentConfig(env="web", template_dir=str(tmp_path), web=WebConfig(max_steps=2)),
                   web.load_templates(str(tmp_path)), client())
  episode = web.Episode(id="e", questions=("q?",), answers=(("a",),), root_url="https://x.example")
  memory = base.MemoryView(scratchpad="pad", query="find", entries=("note",))
  tokenizer = load_tiny_tokenizer()
  state = web.initial_state([1])
  rendered = {}
  for step_index in (0, 1):
    observation = env.observe(episode, web.EpisodeContext(tokenizer), dataclasses.replace(
        state, step_B=jnp.asarray([step_index])), 0, memory, base.Interaction(response="r", action=None))
    assert (observation.tools is None) == (step_index == 1)
    for text in (observation.system, observation.user):
      rendered[text[1:text.index(">")]] = text
  assert set(rendered) == set(web.TEMPLATE_FIELDS)
  for name, text in rendered.items():
    values = dict(re.findall(r"\[(\w+)=([^\]]*)\]", text))
    assert set(values) == set(web.TEMPLATE_FIELDS[name]) and all(values.values()), (name, values)
  assert "[website=https://x.example]" in rendered["web_step"] and "[step=2][max_steps=2]" in rendered["web_last_step"]
