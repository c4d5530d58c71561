"""The corpus server over real MCP (HTTP on 127.0.0.1 and stdio), read by the SDK's own ClientSession and by our
ToolClient alike; the client's concurrency, timeouts and error handling against a small test server."""
import asyncio
import json
import os
import sys

import pytest

from atommem_jax.tools import build_corpus
from atommem_jax.tools.corpus_index import CorpusIndex
from atommem_jax.tools.corpus_server import SearchBatcher, launch, server_command
from atommem_jax.tools.mcp_client import ToolClient, ToolServerConfig, ToolServerError
from atommem_jax.tools.tool_calls import ToolCall, parse_tool_call

TEST_SERVER = os.path.join(os.path.dirname(__file__), "mcp_test_server.py")
LONG_URL = "https://long.example/essay"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  directory = tmp_path_factory.mktemp("mcp_corpus")
  path = str(directory / "corpus.jsonl")
  build_corpus.synthetic_corpus(path, worlds=1, seed=5, documents=40, questions_per_world=4)
  essay = " ".join(f"word{i}" for i in range(700))
  with open(path, "a") as f:
    f.write(json.dumps({"url": LONG_URL, "title": "Essay", "text": essay}) + "\n")
  CorpusIndex.open(path)  # build once; both servers load it
  return path


FLAGS = ("--page_tokens", "300")


@pytest.fixture(scope="module")
def http_url(corpus):
  with launch(corpus, extra_flags=FLAGS, timeout_s=300) as url:
    yield url


def stdio_command(corpus):
  return tuple(server_command(corpus, stdio=True, extra_flags=FLAGS))


def calls_for(corpus):
  titles = [json.loads(line)["title"] for line in open(corpus)][:3]
  return ([ToolCall("search", {"query": f"Who founded {t}?", "num_results": 3}) for t in titles]
          + [ToolCall("search", {"query": "zzzz qqqq"}),
             ToolCall("fetch_url", {"url": LONG_URL, "purpose": "read it"}),
             ToolCall("fetch_url", {"url": LONG_URL, "page": 3}),
             ToolCall("fetch_url", {"url": LONG_URL, "page": 4}),
             ToolCall("fetch_url", {"url": "https://unknown.example/"}),
             ToolCall("search", {"query": ""}),
             ToolCall("search", {"query": 5})])


async def sdk_results(calls, url=None, command=None):
  """The same calls through the SDK's own ClientSession, one at a time."""
  from mcp import ClientSession, StdioServerParameters, stdio_client
  from mcp.client.streamable_http import streamable_http_client

  transport = (streamable_http_client(url) if url else
               stdio_client(StdioServerParameters(command=command[0], args=list(command[1:]))))
  async with transport as (read, write):
    async with ClientSession(read, write) as session:
      await session.initialize()
      names = [t.name for t in (await session.list_tools()).tools]
      out = []
      for call in calls:
        result = await session.call_tool(call.name, call.arguments)
        out.append((result.content[0].text, bool(result.is_error), result.structured_content))
      return names, out


def check_against_sdk(client, calls, names, expected):
  assert sorted(names) == ["fetch_url", "search"] and client.tool_names == ("search", "fetch_url")
  ours = client.call_batch(calls)
  assert [(r.text, r.is_error) for r in ours] == [(text, error) for text, error, _ in expected]
  assert [r.structured for r in ours] == [None if error else s for _, error, s in expected]
  return ours


def check_corpus_answers(ours, corpus):
  titles = [json.loads(line)["title"] for line in open(corpus)][:3]
  for title, result in zip(titles, ours[:3]):
    assert result.structured["results"][0]["title"] == title  # the page named in the query comes first
    assert f"URL: https://world5.example/wiki/{title}" in result.text
  part1, part3, past_end, unknown, empty, wrong_type = ours[4:]
  assert part1.text.startswith(f"Title: Essay\nURL: {LONG_URL}\nPart 1 of 3\n\nword0 ")
  assert "word399" in part1.text and "word400" not in part1.text and "page=2" in part1.text
  # Part 3 holds tokens [2*300 - 100, 700): 100 tokens of overlap with part 2, then to the end.
  assert part3.text.startswith("Title: Essay\nURL: https://long.example/essay\nPart 3 of 3\n\nword500 ")
  assert part3.text.endswith("word699") and "page=" not in part3.text
  assert past_end.is_error and "has 3 part(s); page 4 does not exist" in past_end.text
  assert unknown.is_error and "no such page" in unknown.text
  assert empty.is_error and "the query is empty" in empty.text
  assert wrong_type.is_error and "valid string" in wrong_type.text
  assert "No results" in ours[3].text or ours[3].structured["results"] is not None


def test_http_server_answers_the_sdk_client_and_ours_alike(corpus, http_url):
  calls = calls_for(corpus)
  names, expected = asyncio.run(sdk_results(calls, url=http_url))
  with ToolClient(ToolServerConfig(url=http_url)) as client:
    ours = check_against_sdk(client, calls, names, expected)
  check_corpus_answers(ours, corpus)


def test_stdio_server_answers_the_sdk_client_and_ours_alike(corpus):
  calls = calls_for(corpus)
  names, expected = asyncio.run(sdk_results(calls, command=stdio_command(corpus)))
  with ToolClient(ToolServerConfig(command=stdio_command(corpus))) as client:
    ours = check_against_sdk(client, calls, names, expected)
  check_corpus_answers(ours, corpus)


def test_parsed_call_to_response(http_url):
  parsed = parse_tool_call("<add_memory>x</add_memory><tool_call>{'name': 'fetch_url', "
                           "'arguments': {'url': 'https://long.example/essay'}")
  with ToolClient(ToolServerConfig(url=http_url)) as client:
    (result,) = client.call_batch([parsed.call])
  assert parsed.repaired and result.text.startswith("Title: Essay")


def test_allow_list_and_schemas(http_url):
  with ToolClient(ToolServerConfig(url=http_url, allowed_tools=("fetch_url", "browse"))) as client:
    assert client.tool_names == ("fetch_url",) and client.missing_tools == ("browse",)
    (schema,) = client.chat_template_tools()
    assert schema["type"] == "function" and schema["function"]["name"] == "fetch_url"
    assert schema["function"]["parameters"]["required"] == ["url"]
    assert set(schema["function"]["parameters"]["properties"]) == {"url", "purpose", "page"}
    (refused,) = client.call_batch([ToolCall("search", {"query": "x"})])  # listed by the server, not offered
    assert refused.is_error and "unknown tool 'search'" in refused.text
  with pytest.raises(ToolServerError, match="offers none of"):
    ToolClient(ToolServerConfig(url=http_url, allowed_tools=("browse",)))


def test_unreachable_server_is_one_clear_error():
  with pytest.raises(ToolServerError, match="cannot reach the tool server http://127.0.0.1:9/mcp"):
    ToolClient(ToolServerConfig(url="http://127.0.0.1:9/mcp", connect_timeout_s=10))
  with pytest.raises(ToolServerError, match="cannot reach"):
    ToolClient(ToolServerConfig(command=(sys.executable, "-c", "import sys; sys.exit(3)"), connect_timeout_s=20))
  with pytest.raises(ValueError, match="exactly one of url and command"):
    ToolServerConfig()


@pytest.fixture(scope="module")
def test_tools():
  config = ToolServerConfig(command=(sys.executable, TEST_SERVER), allowed_tools=("sleep", "crash", "search"),
                            call_timeout_s=1.5)
  with ToolClient(config) as client:
    yield client


def test_calls_run_concurrently(test_tools):
  results = test_tools.call_batch([ToolCall("sleep", {"seconds": 0.5})] * 8 + [None])
  assert results[-1] is None
  # The server saw all eight calls running at the same moment.
  assert max(int(r.text.rsplit("peak ", 1)[1]) for r in results[:8]) == 8


def test_timeouts_and_crashes_become_response_text(test_tools):
  slow, crash, fine = test_tools.call_batch([ToolCall("sleep", {"seconds": 5}), ToolCall("crash", {}),
                                             ToolCall("search", {"query": "after"})])
  assert slow.timed_out and slow.is_error and "timed out after 1.5 s" in slow.text
  assert crash.is_error and "Error executing tool crash" in crash.text and not crash.timed_out
  assert fine.text == "echo after" and not fine.is_error
  assert test_tools.call(ToolCall("search", {"query": "still alive"})).text == "echo still alive"


def test_closed_client_refuses_calls(corpus):
  client = ToolClient(ToolServerConfig(command=(sys.executable, TEST_SERVER), allowed_tools=("search",)))
  client.close()
  client.close()
  with pytest.raises(ToolServerError, match="closed"):
    client.call_batch([ToolCall("search", {"query": "x"})])


def test_search_batcher_answers_concurrent_queries_together(corpus):
  index = CorpusIndex.open(corpus)
  queries = [f"founder {t}" for t in index.titles[:16]]

  async def run():
    batcher = SearchBatcher(index)
    results = await asyncio.gather(*(batcher.search(q, 2 + i % 3) for i, q in enumerate(queries)))
    return batcher, results

  batcher, results = asyncio.run(run())
  assert batcher.num_queries == 16 and batcher.num_batches < 16
  expected = index.search_batch(queries, 4)
  assert [[h.url for h in r] for r in results] == [[h.url for h in e[:2 + i % 3]] for i, e in enumerate(expected)]
