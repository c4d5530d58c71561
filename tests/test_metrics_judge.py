"""Web rewards: the released boxed reward's window, and the LLM judge against a local OpenAI-compatible server."""
import http.server
import json
import threading
import time

import pytest

from atommem_jax.metrics import judge as judge_lib


def test_web_boxed_reward_reads_only_the_last_300_characters():
  answer = "<final_answer>\\boxed{New York}</final_answer>"
  assert judge_lib.web_boxed_reward("q", "thinking... " + answer, ["new york"]) == 1.0
  assert judge_lib.web_boxed_reward("q", answer, ["NewYork"]) == 1.0  # spaces and case ignored
  assert judge_lib.web_boxed_reward("q", answer, ["Boston"]) == 0.0
  # A box further back than 300 characters is not the final answer.
  assert judge_lib.web_boxed_reward("q", answer + " " * 300, ["new york"]) == 0.0
  assert judge_lib.web_boxed_reward("q", "\\boxed{Boston} ... \\boxed{\\text{New York}}", ["new york"]) == 1.0
  assert judge_lib.web_boxed_reward("q", "no box", ["no box"]) == 0.0


@pytest.mark.parametrize("content, verdict", [
    ('{"pass": true}', True), ('{"pass": false}', False), ('```json\n{"pass": true}\n```', True),
    ('Reasoning first. {"pass": false}', False), ("pass: TRUE", True), ("I think it passes", None), ("", None),
    ('{"pass": "yes"}', None),
])
def test_parse_verdict(content, verdict):
  assert judge_lib.parse_verdict(content) == verdict


class _Judge(http.server.BaseHTTPRequestHandler):
  """Replies by the gold answer the rubric carries, so one server plays every behaviour."""

  requests: list = []

  def do_POST(self):  # noqa: N802 (http.server's naming)
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
    prompt = body["messages"][0]["content"]
    mode = json.loads(prompt.split("Gold answers: ", 1)[1].split("\n", 1)[0])[0]
    if mode == "server-error":
      self.send_response(500)
      self.end_headers()
      return
    if mode == "slow":
      time.sleep(2)
    content = {"yes": '{"pass": true}', "no": '{"pass": false}', "garbage": "hmm, hard to say"}.get(mode, "")
    payload = b"not json" if mode == "broken-json" else json.dumps(
        {"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
    if mode == "no-choices":
      payload = json.dumps({"error": "overloaded"}).encode()
    self.send_response(200)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(payload)))
    self.end_headers()
    self.wfile.write(payload)

  def log_message(self, *args):
    pass


@pytest.fixture(scope="module")
def judge_url():
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{server.server_address[1]}/v1"
  server.shutdown()
  server.server_close()


def test_llm_judge_pass_fail_and_request_shape(judge_url):
  judge = judge_lib.LLMJudge(judge_lib.JudgeConfig(url=judge_url, model="judge-7b", api_key="k", timeout_s=5))
  _Judge.requests.clear()
  assert judge("Who?", "blah <final_answer>\\boxed{Ada}</final_answer>", ["yes"]) == 1.0
  assert judge("Who?", "\\boxed{Bob}", ["no"]) == 0.0
  request = _Judge.requests[0]
  assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer k"
  assert request["body"]["model"] == "judge-7b" and request["body"]["temperature"] == 0.0
  prompt = request["body"]["messages"][0]["content"]
  assert "Question: Who?" in prompt and "Response's final answer: Ada" in prompt and '{"pass": true}' in prompt
  assert judge.counts == {"calls": 2, "passes": 1, "errors": 0}


def test_llm_judge_failures_are_counted_zeros(judge_url):
  judge = judge_lib.LLMJudge(judge_lib.JudgeConfig(url=judge_url + "/chat/completions", model="m", timeout_s=0.5))
  modes = ["garbage", "server-error", "broken-json", "no-choices", "slow"]
  scores = judge.judge_batch(["q"] * len(modes), ["\\boxed{x}"] * len(modes), [[m] for m in modes])
  assert scores == [0.0] * len(modes)
  assert judge.counts == {"calls": 5, "passes": 0, "errors": 5} and judge.last_error
  unreachable = judge_lib.LLMJudge(judge_lib.JudgeConfig(url="http://127.0.0.1:9/v1", model="m", timeout_s=1))
  assert unreachable("q", "\\boxed{x}", ["x"]) == 0.0 and unreachable.counts["errors"] == 1


def test_make_reward_fn():
  assert judge_lib.make_reward_fn(judge_lib.RewardConfig()) is judge_lib.web_boxed_reward
  config = judge_lib.RewardConfig("llm_judge", judge_lib.JudgeConfig(url="http://x/v1", model="m"))
  fn = judge_lib.make_reward_fn(config)
  assert isinstance(fn, judge_lib.LLMJudge)
  with pytest.raises(ValueError, match="judge.url and judge.model"):
    judge_lib.make_reward_fn(judge_lib.RewardConfig("llm_judge"))
