"""The corpus server's index: BM25 (`bm25s`) and dense retrieval (our `ScannStore`) over passages, fused by
reciprocal rank, plus the page texts `fetch_url` serves.

`CorpusIndex.open(corpus_path, config)` loads the index saved beside the corpus (`FILE.jsonl.index/`), or builds
and saves it when there is none, when the corpus file's content changed (its SHA-256 is recorded), or when the index
was built with another `IndexConfig`. Saving writes a temporary sibling directory and renames it, so an interrupted
build leaves no half-written index behind.

Search (`search_batch(queries, k)`): each retriever returns its top `candidates` passages; a passage scores
sum over retrievers of 1 / (`rrf_k` + rank) (rank 1-based, `rrf_k` = 60 as in Cormack et al. 2009); passages are
grouped by page (a page keeps its best passage, which becomes the snippet) and the best `k` pages are returned.
A query with no indexed word gets only dense hits; BM25 hits that share no word with the query are dropped.

Embedders: "hashing" (`memory.embedders.hash_embed_numpy` over word ids: BM25's words hashed with CRC-32,
`dim` buckets, weight-free) or a Qwen3-Embedding checkpoint directory (our Qwen3 with last-token pooling, the query
side prefixed with an instruction, as the Qwen3-Embedding recipe prescribes).

Layout of the index directory: `meta.json` (format, corpus hash, config, counts), `pages.bin` (all page texts,
UTF-8, concatenated) with `pages_offsets.npy`, `pages.json` ([url, title] per page), `passages.npz` (page, start,
end character offsets per passage), `bm25/` (bm25s's own files), `dense/` (`ScannStore.save`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import mmap
import os
import pathlib
import re
import shutil
import tempfile
import zlib
from typing import Iterable, Sequence

import numpy as np
from bm25s.stopwords import STOPWORDS_EN

from atommem_jax import configlib
from atommem_jax.memory.embedders import hash_embed_numpy
from atommem_jax.memory.scann_store import ScannStore, ScannStoreConfig
from atommem_jax.tools.corpus import Page, PageTokenizer, iter_corpus, passage_bounds

INDEX_FORMAT = "atommem_jax.corpus_index/1"
EMBED_BATCH = 4096
_WORD_RE = re.compile(r"(?u)\b\w\w+\b")  # bm25s.tokenize's default token_pattern
_STOPWORDS = frozenset(STOPWORDS_EN)
QUERY_INSTRUCTION = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"


@dataclasses.dataclass(frozen=True)
class IndexConfig:
  """How a corpus is indexed and searched.

  Attributes:
    embedder: "hashing" or a Qwen3-Embedding checkpoint directory.
    dim: the hashing embedder's width (a checkpoint's width is its hidden size).
    passage_tokens: passage length for the index and the snippets, in page-tokenizer tokens.
    tokenizer: the page tokenizer (`tokenizer.json` or its directory); "" counts words and punctuation.
    candidates: passages each retriever contributes to the fusion.
    rrf_k: the reciprocal-rank-fusion constant.
    snippet_chars: a snippet's length cap.
    recall_target: the dense index's calibrated recall@10 against exact search.
    max_query_words: words of a query the retrievers read.
  """

  embedder: str = "hashing"
  dim: int = 256
  passage_tokens: int = 128
  tokenizer: str = ""
  candidates: int = 20
  rrf_k: int = 60
  snippet_chars: int = 300
  recall_target: float = 0.95
  max_query_words: int = 64

  def __post_init__(self):
    if min(self.dim, self.passage_tokens, self.candidates, self.snippet_chars, self.max_query_words) < 1:
      raise ValueError(f"IndexConfig: sizes must be >= 1: {self}")


@dataclasses.dataclass(frozen=True)
class Hit:
  url: str
  title: str
  snippet: str
  score: float

  def as_dict(self) -> dict:
    return {"url": self.url, "title": self.title, "snippet": self.snippet}


# ------------------------------------------------------------------------------------------------------- embedders


def words(text: str) -> list[str]:
  """The words BM25 indexes: bm25s's default tokenisation (lower-cased `\\b\\w\\w+\\b`, its English stopwords out)."""
  return [w for w in _WORD_RE.findall(text.lower()) if w not in _STOPWORDS]


class HashingTextEmbedder:
  """`hash_embed_numpy` over CRC-32 ids of the words BM25 reads (`words`), so function words do not dominate the
  vectors; symmetric (queries and passages share one space)."""

  def __init__(self, dim: int, max_words: int = 256):
    self.dim, self.max_words = dim, max_words

  def __call__(self, texts: Sequence[str], is_query: bool = False) -> np.ndarray:
    del is_query
    return self.embed_words([words(t) for t in texts])

  def embed_words(self, word_lists: Sequence[Sequence[str]]) -> np.ndarray:
    out = np.zeros((len(word_lists), self.dim), np.float32)
    for start in range(0, len(word_lists), EMBED_BATCH):
      batch = [w[:self.max_words] for w in word_lists[start:start + EMBED_BATCH]]
      lengths = np.array([len(w) for w in batch], np.int32)
      tokens = np.zeros((len(batch), max(2, int(lengths.max(initial=0)))), np.uint32)
      for row, row_words in enumerate(batch):
        tokens[row, :len(row_words)] = [zlib.crc32(w.encode("utf-8")) for w in row_words]
      out[start:start + len(batch)] = hash_embed_numpy(tokens, lengths, self.dim)
    return out


class Qwen3TextEmbedder:
  """A Qwen3-Embedding checkpoint directory (weights + tokenizer) as a text embedder; fixed batch and length
  shapes, so it compiles twice (queries, passages)."""

  BATCH = 32

  def __init__(self, directory: str, max_tokens: int):
    import transformers

    from atommem_jax.checkpoint import hf
    from atommem_jax.memory import embedders

    self.tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model_config, model = hf.load_hf(directory, dtype="float32")
    self.dim, self.max_tokens = model_config.hidden_size, max_tokens
    eos = self.tokenizer.eos_token_id
    self._embed = embedders.Qwen3Embedder(model, embedders.Qwen3EmbedderConfig(
        query_prefix_ids=tuple(self.tokenizer.encode(QUERY_INSTRUCTION, add_special_tokens=False)),
        suffix_ids=(eos,) if eos is not None else (), pad_id=self.tokenizer.pad_token_id or 0))

  def __call__(self, texts: Sequence[str], is_query: bool = False) -> np.ndarray:
    out = np.zeros((len(texts), self.dim), np.float32)
    for start in range(0, len(texts), self.BATCH):
      ids = self.tokenizer(list(texts[start:start + self.BATCH]), add_special_tokens=False)["input_ids"]
      tokens = np.zeros((self.BATCH, self.max_tokens), np.int32)
      lengths = np.zeros((self.BATCH,), np.int32)
      for row, row_ids in enumerate(ids):
        row_ids = row_ids[:self.max_tokens]
        tokens[row, :len(row_ids)], lengths[row] = row_ids, len(row_ids)
      out[start:start + len(ids)] = np.asarray(self._embed(tokens, lengths, is_query))[:len(ids)]
    return out


def make_text_embedder(config: IndexConfig):
  if config.embedder == "hashing":
    return HashingTextEmbedder(config.dim)
  if not os.path.isdir(config.embedder):
    raise ValueError(f"embedder {config.embedder!r} is neither 'hashing' nor a checkpoint directory")
  return Qwen3TextEmbedder(config.embedder, max_tokens=2 * config.passage_tokens)


# ------------------------------------------------------------------------------------------------------- the index


def corpus_digest(path: str | os.PathLike) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def default_index_dir(corpus_path: str | os.PathLike) -> pathlib.Path:
  return pathlib.Path(os.fspath(corpus_path) + ".index")


class CorpusIndex:
  """Pages, passages, a BM25 index and a dense index; see the module docstring."""

  def __init__(self, directory: pathlib.Path, config: IndexConfig, meta: dict):
    import bm25s

    self.directory, self.config, self.meta = directory, config, meta
    with open(directory / "pages.json", encoding="utf-8") as f:
      pages = json.load(f)
    self.urls = [p[0] for p in pages]
    self.titles = [p[1] for p in pages]
    self.page_of_url = {url: i for i, url in enumerate(self.urls)}
    self._offsets = np.load(directory / "pages_offsets.npy")
    self._blob_file = open(directory / "pages.bin", "rb")
    size = os.fstat(self._blob_file.fileno()).st_size
    self._blob = mmap.mmap(self._blob_file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    with np.load(directory / "passages.npz") as passages:
      self.passage_page, self.passage_start, self.passage_end = (passages["page"], passages["start"],
                                                                 passages["end"])
    self.bm25 = bm25s.BM25.load(str(directory / "bm25"), show_progress=False)
    self._bm25_arrays = (self.bm25.scores["data"], self.bm25.scores["indices"], self.bm25.scores["indptr"])
    self.dense = ScannStore.load(directory / "dense")
    self.embed = make_text_embedder(config)

  # ----------------------------------------------------------------------------------------------- opening

  @classmethod
  def open(cls, corpus_path: str | os.PathLike, config: IndexConfig = IndexConfig(), *,
           index_dir: str | os.PathLike | None = None, rebuild: bool = False) -> "CorpusIndex":
    """The saved index if it matches the corpus and the config; otherwise a fresh build (then saved)."""
    directory = pathlib.Path(index_dir) if index_dir else default_index_dir(corpus_path)
    digest = corpus_digest(corpus_path)
    meta_path = directory / "meta.json"
    if not rebuild and meta_path.is_file():
      meta = json.loads(meta_path.read_text())
      if (meta.get("format") == INDEX_FORMAT and meta.get("corpus_sha256") == digest
          and meta.get("config") == configlib.to_dict(config)):
        return cls(directory, config, meta)
    build(iter_corpus(corpus_path), directory, config, digest)
    return cls(directory, config, json.loads(meta_path.read_text()))

  def close(self) -> None:
    if isinstance(self._blob, mmap.mmap):
      self._blob.close()
    self._blob_file.close()

  # ----------------------------------------------------------------------------------------------- reading

  @property
  def num_pages(self) -> int:
    return len(self.urls)

  @property
  def num_passages(self) -> int:
    return len(self.passage_page)

  def page_text(self, page: int) -> str:
    return bytes(self._blob[self._offsets[page]:self._offsets[page + 1]]).decode("utf-8")

  def find_page(self, url: str) -> int | None:
    """The page of `url`, tolerating surrounding spaces and a trailing slash; None when unknown."""
    url = url.strip()
    for candidate in (url, url.rstrip("/"), url + "/"):
      if candidate in self.page_of_url:
        return self.page_of_url[candidate]
    return None

  def _snippet(self, passage: int) -> str:
    text = self.page_text(int(self.passage_page[passage]))
    snippet = " ".join(text[self.passage_start[passage]:self.passage_end[passage]].split())
    limit = self.config.snippet_chars
    if len(snippet) <= limit:
      return snippet
    cut = snippet.rfind(" ", 0, limit)
    return snippet[:cut if cut > limit // 2 else limit] + " ..."

  # ----------------------------------------------------------------------------------------------- searching

  def bm25_top(self, query_words: Sequence[Sequence[str]], n: int) -> list[list[int]]:
    """Passage ids per query (given as `words`), best first (ties to the lower id); passages sharing no word with
    the query are left out.

    The scores are bm25s's own (its precomputed per-token passage scores, summed over the query's tokens), read
    from its index arrays directly: bm25s 0.3 sums them with `np.add.at` and selects the top k with JAX when JAX is
    importable, which on a million passages costs several times this plain numpy sum and selection.
    """
    vocab = self.bm25.vocab_dict
    data, indices, indptr = self._bm25_arrays
    out = []
    for query in query_words:
      token_ids = [vocab[t] for t in query if t in vocab]
      if not token_ids:
        out.append([])
        continue
      scores = np.zeros(self.num_passages, np.float32)
      for token in token_ids:  # a token's postings name each passage once, so a buffered add is exact
        start, end = indptr[token], indptr[token + 1]
        scores[indices[start:end]] += data[start:end]
      out.append(_top_positive(scores, n))
    return out

  def dense_top(self, queries: Sequence[str], n: int,
                query_words: Sequence[Sequence[str]] | None = None) -> list[list[int]]:
    """Passage ids per query, best first. Scores are rounded to 1e-5 and ties go to the lower id, over twice the
    candidates kept: a batched matrix product and a single query's round differently, and without this a query
    could rank its near-ties differently alone than inside a batch."""
    if query_words is not None and isinstance(self.embed, HashingTextEmbedder):
      vectors = self.embed.embed_words(query_words)  # the words are already split: skip a second pass
    else:
      vectors = self.embed(list(queries), is_query=True)
    ids, scores = self.dense.search(vectors, min(2 * n, max(self.num_passages, 1)))
    out = []
    for row_ids, row_scores in zip(ids, scores):
      live = row_ids >= 0
      row_ids, rounded = row_ids[live], np.round(row_scores[live], 5)
      out.append(row_ids[np.lexsort((row_ids, -rounded))][:n].tolist())
    return out

  def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
    """The best `k` pages per query by reciprocal-rank fusion of BM25 and dense passage ranks."""
    if k < 1:
      raise ValueError(f"k must be >= 1, got {k}")
    queries = [" ".join(q.split()[:self.config.max_query_words]) for q in queries]
    query_words = [words(q) for q in queries]
    n = max(self.config.candidates, k)
    results = []
    for bm25_ids, dense_ids in zip(self.bm25_top(query_words, n), self.dense_top(queries, n, query_words)):
      fused: dict[int, float] = {}
      for ranking in (bm25_ids, dense_ids):
        for rank, passage in enumerate(ranking, start=1):
          fused[passage] = fused.get(passage, 0.0) + 1.0 / (self.config.rrf_k + rank)
      hits, seen_pages = [], set()
      for passage, score in sorted(fused.items(), key=lambda item: (-item[1], item[0])):
        page = int(self.passage_page[passage])
        if page in seen_pages:
          continue
        seen_pages.add(page)
        hits.append(Hit(self.urls[page], self.titles[page], self._snippet(passage), round(score, 6)))
        if len(hits) == k:
          break
      results.append(hits)
    return results


def _top_positive(scores: np.ndarray, n: int) -> list[int]:
  """Indices of the `n` best positive scores, best first, ties to the lower index.

  The n-th best of every 64th score cannot exceed the n-th best overall, so only scores reaching it are candidates:
  a common query word gives hundreds of thousands of positive passages, and this keeps the exact selection to a
  few of them.
  """
  # Selections run on negated scores with a small k: numpy's introselect is far slower with k near the end of
  # an array full of ties (the common word's passages all score alike).
  sample = scores[::64]
  floor = -np.partition(-sample, n - 1)[n - 1] if sample.size > n else 0.0
  candidates = np.flatnonzero(scores >= floor) if floor > 0 else np.flatnonzero(scores > 0)
  if len(candidates) > n:
    values = scores[candidates]
    kth = -np.partition(-values, n - 1)[n - 1]
    above = candidates[values > kth]
    # Ties with the n-th score go to the lowest indices; `candidates` is ascending, so no sort of the (often huge)
    # tied group is needed.
    candidates = np.concatenate([above, candidates[values == kth][:n - len(above)]])
  order = np.lexsort((candidates, -scores[candidates]))
  return candidates[order].tolist()


# ------------------------------------------------------------------------------------------------------- building


def build(pages: Iterable[Page], directory: str | os.PathLike, config: IndexConfig, corpus_sha256: str) -> None:
  """Writes an index of `pages` to `directory` (replacing it) via a temporary sibling and a rename."""
  import bm25s

  directory = pathlib.Path(directory)
  directory.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
  try:
    tokenizer = PageTokenizer(config.tokenizer)
    listing, offsets, passage_page, passage_start, passage_end, passage_texts = [], [0], [], [], [], []
    with open(tmp / "pages.bin", "wb") as blob:
      for page in pages:
        index = len(listing)
        listing.append([page.url, page.title])
        encoded = page.text.encode("utf-8")
        blob.write(encoded)
        offsets.append(offsets[-1] + len(encoded))
        for start, end in passage_bounds(tokenizer.spans(page.text), len(page.text), config.passage_tokens):
          passage_page.append(index)
          passage_start.append(start)
          passage_end.append(end)
          passage_texts.append(f"{page.title}\n{page.text[start:end]}")
    (tmp / "pages.json").write_text(json.dumps(listing, ensure_ascii=False))
    np.save(tmp / "pages_offsets.npy", np.array(offsets, np.int64))
    np.savez(tmp / "passages.npz", page=np.array(passage_page, np.int32), start=np.array(passage_start, np.int32),
             end=np.array(passage_end, np.int32))

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(passage_texts, stopwords="en", show_progress=False), show_progress=False)
    retriever.save(str(tmp / "bm25"), show_progress=False)
    del retriever

    embed = make_text_embedder(config)
    dim = embed.dim
    store = ScannStore(ScannStoreConfig(dim=dim, k=10, recall_target=config.recall_target))
    store.add(np.arange(len(passage_texts)), embed(passage_texts))
    store.save(tmp / "dense")
    del store

    meta = {"format": INDEX_FORMAT, "corpus_sha256": corpus_sha256, "config": configlib.to_dict(config),
            "num_pages": len(listing), "num_passages": len(passage_texts), "dim": dim}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if directory.exists():
      shutil.rmtree(directory)
    tmp.rename(directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
