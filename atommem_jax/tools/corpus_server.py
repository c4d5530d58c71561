"""Our corpus as an MCP server with two tools, `search` and `fetch_url`.

  python -m atommem_jax.tools.corpus_server --corpus FILE.jsonl [--host 127.0.0.1 --port 8000 | --stdio]
      [--embedder hashing|QWEN3_EMBEDDING_DIR --dim 256 --page_tokens 4000 --tokenizer TOKENIZER_DIR
       --index_dir DIR --rebuild]

Over HTTP the endpoint is `http://HOST:PORT/mcp` (streamable HTTP); with `--stdio` it speaks MCP on stdin/stdout.
The index is opened (or built and saved) with `CorpusIndex.open` before the server starts serving; an index it may
not replace (another config's, another corpus's) is refused unless `--rebuild`. Bad input (a missing or damaged
corpus, such an index) is one line `error: ...` and exit status 1.

- `search(query, num_results=10)`: the best pages by reciprocal-rank fusion of BM25 and dense retrieval
  (`corpus_index`). The text lists `N. title / URL: url / snippet`; `structured_content["results"]` holds the same
  hits as `{url, title, snippet}` objects. Concurrent searches are answered together: while one batched index call
  runs, the queries that arrive queue up and form the next batch, so a turn's many calls cost few index calls.
- `fetch_url(url, purpose="", page=1)`: the page's text, cut into parts of `page_tokens` tokens with 100 tokens of
  overlap on each side (the released chunking); part `page` is returned with a header naming the part count. An
  unknown url or a part past the last is a tool error (`is_error`), never a crash. `purpose` is accepted as
  released (a summariser for it was never finished there) and not used.

`launch(corpus, ...)` starts this server as a child process on a free localhost port and returns its URL, for a
trainer or evaluator that serves its own corpus.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Iterator, Sequence

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent

from atommem_jax import cli
from atommem_jax.tools.corpus import PageTokenizer, part_bounds
from atommem_jax.tools.corpus_index import CorpusIndex, Hit, IndexConfig

SERVER_NAME = "atommem-corpus"
MAX_RESULTS = 50


@dataclasses.dataclass(frozen=True)
class ServerConfig:
  """`page_tokens`: a `fetch_url` part's budget in page-tokenizer tokens (the index's `tokenizer`).
  `delay_ms`: every call answers this much later, to measure clients against a remote server's latency."""

  page_tokens: int = 4000
  delay_ms: float = 0.0

  def __post_init__(self):
    if self.page_tokens < 1 or self.delay_ms < 0:
      raise ValueError(f"page_tokens must be >= 1 and delay_ms >= 0: {self}")


class SearchBatcher:
  """Queues concurrent searches and answers each queue with one `search_batch` call in a worker thread."""

  def __init__(self, index: CorpusIndex):
    self.index = index
    self._pending: list[tuple[str, int, asyncio.Future]] = []
    self._draining: asyncio.Task | None = None
    self.num_batches = 0
    self.num_queries = 0

  async def search(self, query: str, k: int) -> list[Hit]:
    future = asyncio.get_running_loop().create_future()
    self._pending.append((query, k, future))
    if self._draining is None:
      self._draining = asyncio.create_task(self._drain())
    return await future

  async def _drain(self) -> None:
    try:
      await asyncio.sleep(0)  # requests already parsed in this loop iteration join the first batch
      while self._pending:
        batch, self._pending = self._pending, []
        try:
          results = await anyio.to_thread.run_sync(self.index.search_batch, [q for q, _, _ in batch],
                                                   max(k for _, k, _ in batch))
        except Exception as err:  # one bad batch fails its own requests, never the server
          for _, _, future in batch:
            if not future.done():
              future.set_exception(err)
          continue
        self.num_batches += 1
        self.num_queries += len(batch)
        for (_, k, future), hits in zip(batch, results):
          if not future.done():  # a caller that timed out has cancelled its future
            future.set_result(hits[:k])
    finally:
      self._draining = None


def render_hits(query: str, hits: Sequence[Hit]) -> str:
  if not hits:
    return f"No results for {query!r}."
  return "\n\n".join(f"{i}. {h.title}\nURL: {h.url}\n{h.snippet}" for i, h in enumerate(hits, start=1))


def make_server(index: CorpusIndex, config: ServerConfig = ServerConfig()) -> MCPServer:
  """The MCP server over an opened index (the CLI and the tests use it alike)."""
  server = MCPServer(SERVER_NAME, instructions="Search and read the pages of a fixed web corpus.",
                     log_level="WARNING")
  batcher = SearchBatcher(index)
  tokenizer = PageTokenizer(index.config.tokenizer)
  server.search_batcher = batcher  # for statistics (the benchmark reads them)

  @functools.lru_cache(maxsize=4096)
  def parts_of(page: int) -> tuple[str, tuple[tuple[int, int], ...]]:
    text = index.page_text(page)
    return text, tuple(part_bounds(tokenizer.spans(text), len(text), config.page_tokens))

  @server.tool()
  async def search(query: str, num_results: int = 10) -> CallToolResult:
    """Search the web. Returns up to `num_results` pages, each with its url, title and a snippet."""
    if not query.strip():
      raise ToolError("the query is empty")
    if not 1 <= num_results <= MAX_RESULTS:
      raise ToolError(f"num_results must be between 1 and {MAX_RESULTS}, got {num_results}")
    if config.delay_ms:
      await asyncio.sleep(config.delay_ms / 1e3)
    hits = await batcher.search(query, num_results)
    return CallToolResult(content=[TextContent(type="text", text=render_hits(query, hits))],
                          structured_content={"results": [h.as_dict() for h in hits]})

  @server.tool()
  async def fetch_url(url: str, purpose: str = "", page: int = 1) -> CallToolResult:
    """Fetch one web page (at most one URL per call) and return its text. Long pages come in parts: the reply
    says how many; ask for part 2, 3, ... with `page`. `purpose`: what you are looking for on the page."""
    del purpose
    if config.delay_ms:
      await asyncio.sleep(config.delay_ms / 1e3)
    return await anyio.to_thread.run_sync(read_part, url, page)

  def read_part(url: str, page: int) -> CallToolResult:
    found = index.find_page(url)
    if found is None:
      raise ToolError(f"cannot fetch {url!r}: no such page")
    text, bounds = parts_of(found)
    if not 1 <= page <= len(bounds):
      raise ToolError(f"{url} has {len(bounds)} part(s); page {page} does not exist")
    start, end = bounds[page - 1]
    header = f"Title: {index.titles[found]}\nURL: {index.urls[found]}\nPart {page} of {len(bounds)}\n\n"
    footer = f"\n\n[Part {page} of {len(bounds)}; call fetch_url with page={page + 1} for more.]" \
        if page < len(bounds) else ""
    return CallToolResult(content=[TextContent(type="text", text=header + text[start:end] + footer)],
                          structured_content={"url": index.urls[found], "title": index.titles[found], "page": page,
                                              "num_pages": len(bounds)})

  return server


# --------------------------------------------------------------------------------------------------- launching


def free_port(host: str = "127.0.0.1") -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def server_command(corpus: str, *, stdio: bool = False, host: str = "127.0.0.1", port: int = 0,
                   extra_flags: Sequence[str] = ()) -> list[str]:
  """The argv that runs this server (for `launch`, or for an MCP client's stdio command)."""
  transport = ["--stdio"] if stdio else ["--host", host, "--port", str(port)]
  return [sys.executable, "-m", "atommem_jax.tools.corpus_server", "--corpus", corpus, *transport, *extra_flags]


@contextlib.contextmanager
def launch(corpus: str, *, extra_flags: Sequence[str] = (), timeout_s: float = 600.0,
           log_path: str = "") -> Iterator[str]:
  """Runs the server in a child process on a free 127.0.0.1 port; yields `http://127.0.0.1:PORT/mcp` once it
  accepts connections (after the index is opened or built) and stops the child on exit. Its output goes to
  `log_path` (default: a temporary file, removed afterwards), never to a pipe nobody reads."""
  port = free_port()
  own_log = not log_path
  if own_log:
    handle, log_path = tempfile.mkstemp(prefix="corpus_server.", suffix=".log")
    os.close(handle)
  with open(log_path, "ab") as log:
    process = subprocess.Popen(server_command(corpus, port=port, extra_flags=extra_flags), stdout=log,
                               stderr=subprocess.STDOUT)
  try:
    deadline = time.monotonic() + timeout_s
    while True:
      if process.poll() is not None:
        with open(log_path, "rb") as f:
          tail = f.read()[-2000:].decode(errors="replace")
        raise RuntimeError(f"corpus server exited with {process.returncode} before serving:\n{tail}")
      with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        break
      if time.monotonic() > deadline:
        raise TimeoutError(f"corpus server did not listen on port {port} within {timeout_s} s (log: {log_path})")
      time.sleep(0.2)
    yield f"http://127.0.0.1:{port}/mcp"
  finally:
    process.terminate()
    try:
      process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
    if own_log:
      os.remove(log_path)


# --------------------------------------------------------------------------------------------------- the CLI


def main(argv: Sequence[str]) -> None:
  parser = argparse.ArgumentParser(prog="python -m atommem_jax.tools.corpus_server")
  parser.add_argument("--corpus", required=True, help="JSON lines of {url, title, html | text}")
  parser.add_argument("--host", default="127.0.0.1")
  parser.add_argument("--port", type=int, default=8000)
  parser.add_argument("--stdio", action="store_true", help="speak MCP on stdin / stdout instead of HTTP")
  parser.add_argument("--embedder", default=IndexConfig.embedder, help="hashing or a Qwen3-Embedding directory")
  parser.add_argument("--dim", type=int, default=IndexConfig.dim, help="the hashing embedder's width")
  parser.add_argument("--passage_tokens", type=int, default=IndexConfig.passage_tokens)
  parser.add_argument("--tokenizer", default=IndexConfig.tokenizer, help="tokenizer.json (dir) for token budgets")
  parser.add_argument("--page_tokens", type=int, default=ServerConfig.page_tokens)
  parser.add_argument("--index_dir", default="", help="default: FILE.jsonl.index beside the corpus")
  parser.add_argument("--rebuild", action="store_true",
                      help="rebuild the index even if it is up to date, or replace one built with another config "
                           "or from another corpus (never a directory that holds no index)")
  parser.add_argument("--delay_ms", type=float, default=0.0, help="answer every call this much later (benchmarks)")
  flags = parser.parse_args(argv)
  logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
  index_config = IndexConfig(embedder=flags.embedder, dim=flags.dim, passage_tokens=flags.passage_tokens,
                             tokenizer=flags.tokenizer)
  start = time.monotonic()
  index = CorpusIndex.open(flags.corpus, index_config, index_dir=flags.index_dir or None, rebuild=flags.rebuild)
  print(f"corpus server: {index.num_pages} pages, {index.num_passages} passages, index ready in "
        f"{time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
  server = make_server(index, ServerConfig(page_tokens=flags.page_tokens, delay_ms=flags.delay_ms))
  if flags.stdio:
    server.run("stdio")
  else:
    print(f"corpus server: serving http://{flags.host}:{flags.port}/mcp", file=sys.stderr, flush=True)
    # Plain JSON replies instead of one SSE stream per request: the tools never stream, and it halves the
    # server's CPU per call.
    server.run("streamable-http", host=flags.host, port=flags.port, json_response=True)


if __name__ == "__main__":
  cli.report_input_errors(main)(sys.argv[1:])  # bad input: one line `error: ...`, exit status 1
