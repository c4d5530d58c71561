"""Web tools benchmark: the corpus server's search on a large synthetic corpus, and a turn's concurrent tool calls.

  python -m atommem_jax.bench web --json [--passages 1000000 --workdir /tmp/atommem_bench_web --queries 500]

The corpus is `passages / 30000` synthetic worlds of 30,000 entity pages (one passage each), built once under
`--workdir` with its index (`CorpusIndex.open` reuses both on later runs). Reported:
- `search_p50_ms` / `search_p99_ms`: one query at a time through MCP (HTTP on 127.0.0.1, our `ToolClient`), the
  latency the model's tool call sees; `index_p50_ms` / `index_p99_ms`: the same queries on the index in-process,
  and `index_cpu_p50_ms` their CPU time (what a quiet core would take; the wall times grow with the machine's
  load, `load_average_at_start` / `_at_end`).
- `search_qps`: queries per second through MCP with 64 calls in flight (the server batches them);
  `index_batch_qps`: `search_batch` of 64 queries in-process; `bm25_pruned_fraction`: the share of BM25 rankings
  answered from the rare words' passages (`CorpusIndex._bm25_top_pruned`) rather than scored exhaustively.
- `dense_recall_at_10`: the ScaNN top-10 against exact search over the same embeddings (tie-aware: a hit counts
  when its exact score reaches the exact 10th score) and `dense_recall_at_10_ids` (plain id overlap).
- `turn_concurrent_ms` / `turn_sequential_ms` / `turn_speedup`: one turn's 64 tool calls (48 searches, 16 page
  fetches) sent together by `ToolClient.call_batch` against the same 64 calls sent one after another on the same
  session, the loop a user would write. Each side's median of `--repeats` passes. Both sides spend CPU on the
  MCP SDK (client and server, about 10 ms a call together) and on the index, on the same 2 cores.
- `remote_turn_speedup`: the same turn against the server started with `--delay_ms` (default 200), as a search
  API across a network answers: the latency one-by-one calls wait out in series.
The goals: search p50 under 20 ms on 2 cores, dense recall@10 >= 0.95, turn speedup >= 8x.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

import numpy as np

from atommem_jax.data import synthetic
from atommem_jax.memory.scann_store import exact_top_k
from atommem_jax.tools import build_corpus
from atommem_jax.tools.corpus_index import CorpusIndex, IndexConfig
from atommem_jax.tools.corpus_server import launch
from atommem_jax.tools.mcp_client import ToolClient, ToolServerConfig
from atommem_jax.tools.tool_calls import ToolCall

WORLD_DOCUMENTS = 30_000


def _flags(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m atommem_jax.bench web")
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--passages", type=int, default=1_000_000)
  parser.add_argument("--workdir", default="/tmp/atommem_bench_web")
  parser.add_argument("--queries", type=int, default=500)
  parser.add_argument("--recall_queries", type=int, default=200)
  parser.add_argument("--turn_calls", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--remote_delay_ms", type=float, default=200.0)
  return parser.parse_args(argv)


def _corpus(flags) -> tuple[str, list[str]]:
  """The corpus file and benchmark queries (the worlds' own questions), built once and kept under `--workdir`."""
  os.makedirs(flags.workdir, exist_ok=True)
  path = os.path.join(flags.workdir, f"synthetic_{flags.passages}.jsonl")
  queries_path = os.path.join(flags.workdir, f"synthetic_{flags.passages}.queries_{flags.queries}.json")
  if os.path.isfile(path) and os.path.isfile(queries_path):
    with open(queries_path, encoding="utf-8") as f:
      return path, json.load(f)
  worlds = -(-flags.passages // WORLD_DOCUMENTS)
  sizes = [WORLD_DOCUMENTS] * (worlds - 1) + [max(synthetic.MIN_DOCUMENTS, flags.passages - WORLD_DOCUMENTS *
                                                  (worlds - 1))]
  per_world = -(-flags.queries // worlds)
  tasks = [(seed, synthetic.generate(synthetic.SyntheticConfig(seed=seed, num_documents=size,
                                                               num_questions=per_world)))
           for seed, size in enumerate(sizes)]
  if not os.path.isfile(path):
    build_corpus.write_jsonl((row for seed, task in tasks for row in build_corpus.synthetic_world_rows(task, seed)),
                             path)
  queries = [q.record.question for _, task in tasks for q in task.questions][:flags.queries]
  with open(queries_path, "w", encoding="utf-8") as f:
    json.dump(queries, f)
  return path, queries


def _percentiles(seconds: list[float]) -> tuple[float, float]:
  ms = 1e3 * np.asarray(seconds)
  return round(float(np.percentile(ms, 50)), 2), round(float(np.percentile(ms, 99)), 2)


def _in_process(index: CorpusIndex, queries: list[str], flags) -> dict:
  index.search_batch(queries[:8], 10)  # warm-up
  latencies, cpu = [], []
  for query in queries:
    start, start_cpu = time.perf_counter(), time.process_time()
    index.search_batch([query], 10)
    latencies.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  p50, p99 = _percentiles(latencies)
  cpu_p50, _ = _percentiles(cpu)
  start = time.perf_counter()
  for begin in range(0, len(queries), 64):
    index.search_batch(queries[begin:begin + 64], 10)
  batch_qps = len(queries) / (time.perf_counter() - start)

  # Dense recall against exact search over the very embeddings the store holds (read from its namespace).
  asked = queries[:flags.recall_queries]
  vectors = index.embed(asked, is_query=True)
  found, _ = index.dense.search(vectors, 10)
  namespace = index.dense._namespaces["default"]  # pylint: disable=protected-access
  embeddings, live = namespace.embeddings[:namespace.size], namespace.live[:namespace.size]
  exact_rows, exact_scores = exact_top_k(vectors, embeddings, live, 10)
  tie_aware, by_id = [], []
  for row, q, exact_row, exact_score in zip(found, vectors, exact_rows, exact_scores):
    rows = [namespace.row_of_id[int(i)] for i in row if i >= 0]
    scores = embeddings[rows] @ q
    tie_aware.append(float(np.sum(scores >= exact_score[-1] - 1e-6)) / 10)
    by_id.append(len(set(rows) & set(exact_row.tolist())) / 10)
  return {"index_p50_ms": p50, "index_p99_ms": p99, "index_cpu_p50_ms": cpu_p50,
          "index_batch_qps": round(batch_qps, 1),
          "bm25_pruned_fraction": round(index.bm25_counts["pruned"] / max(1, sum(index.bm25_counts.values())), 4),
          "dense_recall_at_10": round(float(np.mean(tie_aware)), 4),
          "dense_recall_at_10_ids": round(float(np.mean(by_id)), 4), "dense_settings": index.dense.stats()}


def _through_mcp(url: str, queries: list[str], urls: list[str], flags) -> dict:
  with ToolClient(ToolServerConfig(url=url, call_timeout_s=120, max_concurrency=flags.turn_calls)) as client:
    client.call(ToolCall("search", {"query": queries[0]}))  # warm-up
    latencies = []
    for query in queries:
      start = time.perf_counter()
      result = client.call(ToolCall("search", {"query": query, "num_results": 10}))
      latencies.append(time.perf_counter() - start)
      if result.is_error:
        raise RuntimeError(f"search failed: {result.text}")
    p50, p99 = _percentiles(latencies)
    start = time.perf_counter()
    for begin in range(0, len(queries), flags.turn_calls):
      client.call_batch([ToolCall("search", {"query": q}) for q in queries[begin:begin + flags.turn_calls]])
    qps = len(queries) / (time.perf_counter() - start)
    turn = _turn_speedup(client, queries, urls, flags.turn_calls, flags.repeats)
  return {"search_p50_ms": p50, "search_p99_ms": p99, "search_qps": round(qps, 1), "turn_calls": flags.turn_calls,
          **turn}


def _turn_speedup(client: ToolClient, queries: list[str], urls: list[str], calls: int, repeats: int,
                  prefix: str = "turn") -> dict:
  """A turn's calls (3/4 searches, 1/4 fetches) together vs one by one on the same session; medians."""
  rng = np.random.default_rng(0)
  fetches = calls // 4
  concurrent_s, sequential_s = [], []
  errors = identical = 0
  for _ in range(repeats):
    picked = rng.choice(len(queries), calls - fetches, replace=len(queries) < calls - fetches)
    turn = ([ToolCall("search", {"query": queries[i]}) for i in picked]
            + [ToolCall("fetch_url", {"url": urls[i]}) for i in rng.choice(len(urls), fetches, replace=False)])
    start = time.perf_counter()
    together = client.call_batch(turn)
    concurrent_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    one_by_one = [client.call(call) for call in turn]
    sequential_s.append(time.perf_counter() - start)
    errors += sum(r.is_error for r in together + one_by_one)
    identical += sum(a.text == b.text for a, b in zip(together, one_by_one))
  concurrent_ms, sequential_ms = 1e3 * np.median(concurrent_s), 1e3 * np.median(sequential_s)
  return {f"{prefix}_concurrent_ms": round(float(concurrent_ms), 1),
          f"{prefix}_sequential_ms": round(float(sequential_ms), 1),
          f"{prefix}_speedup": round(float(sequential_ms / concurrent_ms), 2),
          f"{prefix}_identical_fraction": round(identical / (calls * repeats), 4), f"{prefix}_errors": errors}


def _remote(flags, queries: list[str]) -> dict:
  """The same turn against a server that answers `--remote_delay_ms` late, as a search API across a network
  does (a small corpus: the delay, not the index, is what this measures)."""
  path = os.path.join(flags.workdir, "remote_2000.jsonl")
  if not os.path.isfile(path):
    task = synthetic.generate(synthetic.SyntheticConfig(seed=0, num_documents=2000, num_questions=8))
    build_corpus.write_jsonl(build_corpus.synthetic_world_rows(task, 0), path)
  urls = [json.loads(line)["url"] for line in open(path, encoding="utf-8")][:256]
  with launch(path, extra_flags=("--delay_ms", str(flags.remote_delay_ms)), timeout_s=600) as url:
    with ToolClient(ToolServerConfig(url=url, call_timeout_s=120, max_concurrency=flags.turn_calls)) as client:
      client.call(ToolCall("search", {"query": queries[0]}))
      return {"remote_delay_ms": flags.remote_delay_ms,
              **_turn_speedup(client, queries, urls, flags.turn_calls, 2, prefix="remote_turn")}


def run(argv: list[str]) -> dict:
  flags = _flags(argv)
  start = time.perf_counter()
  corpus, queries = _corpus(flags)
  index = CorpusIndex.open(corpus, IndexConfig())
  ready_s = time.perf_counter() - start
  result = {"passages": index.num_passages, "pages": index.num_pages, "queries": len(queries),
            "cpu_cores": os.cpu_count(), "load_average_at_start": round(os.getloadavg()[0], 1),
            "corpus_and_index_ready_s": round(ready_s, 1)}
  result.update(_in_process(index, queries, flags))
  print(json.dumps(result), file=sys.stderr, flush=True)  # each stage's figures survive a later failure
  urls = [index.urls[i] for i in np.random.default_rng(1).choice(index.num_pages, 256, replace=False)]
  index.close()
  del index
  gc.collect()
  start = time.perf_counter()
  with launch(corpus, timeout_s=3600, log_path=os.path.join(flags.workdir, "server.log")) as url:
    result["server_start_s"] = round(time.perf_counter() - start, 1)
    result.update(_through_mcp(url, queries, urls, flags))
  print(json.dumps(result), file=sys.stderr, flush=True)
  result.update(_remote(flags, queries))
  result["load_average_at_end"] = round(os.getloadavg()[0], 1)
  result["goals"] = {"search_p50_under_20ms": result["search_p50_ms"] < 20,
                     "dense_recall_at_10_at_least_0.95": result["dense_recall_at_10"] >= 0.95,
                     "turn_speedup_at_least_8x": result["turn_speedup"] >= 8}
  return result


if __name__ == "__main__":
  print(json.dumps(run(["--json"])))
