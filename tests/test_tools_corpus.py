"""Corpus files, parts and passages, the hybrid index (build, reload, rebuild on change, never replaced unasked),
and the corpus builders."""
import json
import os

import numpy as np
import pytest

from atommem_jax.data import web_readers
from atommem_jax.data.records import DataFormatError
from atommem_jax.tools import build_corpus
from atommem_jax.tools.corpus import (PART_OVERLAP_TOKENS, PageTokenizer, html_to_text, part_bounds, passage_bounds,
                                      read_corpus)
from atommem_jax.tools.corpus_index import (CorpusIndex, HashingTextEmbedder, IndexConfig, IndexConflict,
                                           default_index_dir)


def write_rows(path, rows):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return str(path)


def test_corpus_rows_html_and_text(tmp_path):
  path = write_rows(tmp_path / "c.jsonl", [
      {"url": "https://a.example/x", "title": "X", "html": '<p>Hello <a href="https://a.example/y">why</a>.</p>'},
      {"url": " https://a.example/y ", "title": "Y", "text": "  plain text  "},
  ])
  x, y = read_corpus(path)
  assert x.text == "Hello why (https://a.example/y)."  # link targets survive extraction
  assert (y.url, y.text) == ("https://a.example/y", "plain text")


@pytest.mark.parametrize("bad_row, message", [
    ("{not json", "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    ({"title": "t", "text": "x"}, "field 'url' is missing or not a string"),
    ({"url": "u2", "title": 3, "text": "x"}, "field 'title' is missing or not a string"),
    ({"url": "u2", "title": "t", "text": "x", "html": "<p>x</p>"}, "a row needs exactly one of 'html' and 'text'"),
    ({"url": "u2", "title": "t"}, "a row needs exactly one of 'html' and 'text'"),
    ({"url": "u2", "title": "t", "html": None}, "field 'html' is not a string"),
    ({"url": "u1", "title": "t", "text": "again"}, "url 'u1' already appears on line 1"),
])
def test_bad_corpus_rows_name_file_and_line(tmp_path, bad_row, message):
  path = write_rows(tmp_path / "c.jsonl", [{"url": "u1", "title": "t", "text": "x"}, bad_row])
  with pytest.raises(DataFormatError) as err:
    read_corpus(path)
  assert str(err.value).startswith(f"{path}:2: {message}")


def test_empty_or_missing_corpus(tmp_path):
  (tmp_path / "empty.jsonl").write_text("\n")
  with pytest.raises(DataFormatError, match="holds no pages"):
    read_corpus(tmp_path / "empty.jsonl")
  with pytest.raises(DataFormatError, match="does not exist"):
    read_corpus(tmp_path / "missing.jsonl")


def test_parts_follow_the_released_chunking():
  text = " ".join(f"w{i}" for i in range(1000))
  spans = PageTokenizer().spans(text)
  assert len(spans) == 1000
  bounds = part_bounds(spans, len(text), 300)
  assert len(bounds) == 4
  words = [text[a:b].split() for a, b in bounds]
  assert words[0][0] == "w0" and words[0][-1] == f"w{300 + PART_OVERLAP_TOKENS - 1}"
  assert words[1][0] == f"w{300 - PART_OVERLAP_TOKENS}" and words[1][-1] == f"w{600 + PART_OVERLAP_TOKENS - 1}"
  assert words[3][-1] == "w999"
  assert part_bounds(spans, len(text), 5000) == [(0, len(text))]
  passages = passage_bounds(spans, len(text), 128)
  joined = [w for a, b in passages for w in text[a:b].split()]
  assert joined == text.split() and len(passages) == 8  # a partition, in order


def test_hf_tokenizer_counts_its_own_tokens():
  from atommem_jax.data.tokenizer import tiny_tokenizer_dir

  tokenizer = PageTokenizer(tiny_tokenizer_dir())
  text = "Kalomi was born in Tesuna in 1875."
  spans = tokenizer.spans(text)
  assert spans[0, 0] == 0 and spans[-1, 1] == len(text)
  assert len(spans) > len(PageTokenizer().spans(text))  # digits are single tokens there


@pytest.fixture(scope="module")
def world_corpus(tmp_path_factory):
  directory = tmp_path_factory.mktemp("world")
  corpus, questions = str(directory / "corpus.jsonl"), str(directory / "questions.jsonl")
  build_corpus.synthetic_corpus(corpus, worlds=2, seed=3, documents=48, questions_per_world=6,
                                questions_output=questions)
  return corpus, questions


def test_synthetic_corpus_links_related_pages(world_corpus):
  corpus, questions = world_corpus
  rows = [json.loads(line) for line in open(corpus)]
  assert len(rows) == 96 and len({r["url"] for r in rows}) == 96
  urls = {r["url"] for r in rows}
  pages = {p.url: p for p in read_corpus(corpus)}
  linked = [u for p in pages.values() for u in urls if f"({u})" in p.text]
  assert len(linked) > 48  # most pages link to a related entity's page
  assert all("world3.example" in u or "world4.example" in u for u in linked)
  data = web_readers.read_plain_questions(questions)
  assert len(data.questions) == 12 and all(q.record.answers for q in data.questions)


def test_index_finds_the_named_entity_and_reloads(world_corpus, tmp_path):
  corpus, _ = world_corpus
  index_dir = tmp_path / "idx"
  index = CorpusIndex.open(corpus, index_dir=index_dir)
  assert index.num_pages == 96 and index.num_passages == 96
  # Every page is found by its own title among the top hits (BM25 sees the rare name, the fusion keeps it).
  hits = index.search_batch([f"Tell me about {title}" for title in index.titles], k=3)
  assert sum(title in [h.title for h in row] for title, row in zip(index.titles, hits)) >= 90
  assert all(len({h.url for h in row}) == len(row) <= 3 for row in hits)
  meta_mtime = os.stat(index_dir / "meta.json").st_mtime_ns
  again = CorpusIndex.open(corpus, index_dir=index_dir)
  assert os.stat(index_dir / "meta.json").st_mtime_ns == meta_mtime  # loaded, not rebuilt
  assert [[h.as_dict() for h in row] for row in again.search_batch(index.titles[:5], 4)] == \
      [[h.as_dict() for h in row] for row in index.search_batch(index.titles[:5], 4)]
  assert again.page_text(0) == read_corpus(corpus)[0].text
  assert again.find_page(again.urls[7] + "/ ") == 7 and again.find_page("https://nowhere.example") is None


def test_a_query_ranks_the_same_alone_and_in_a_batch(world_corpus, tmp_path):
  # Batched and single matrix products round differently; hashing embeddings tie often, so this would differ
  # without the rounding in dense_top.
  corpus, questions = world_corpus
  index = CorpusIndex.open(corpus, index_dir=tmp_path / "idx")
  queries = [json.loads(line)["question"] for line in open(questions)] + [f"born in {t}" for t in index.titles]
  batched = index.search_batch(queries, 10)
  assert batched == [index.search_batch([q], 10)[0] for q in queries]


def test_bm25_ranking_is_bm25s_own(world_corpus, tmp_path):
  from atommem_jax.tools.corpus_index import words

  corpus, questions = world_corpus
  index = CorpusIndex.open(corpus, index_dir=tmp_path / "idx")
  queries = [json.loads(line)["question"] for line in open(questions)] + ["Kalomi", "nothing-matches-this"]
  ours = index.bm25_top([words(q) for q in queries], 10)
  vocab = index.bm25.vocab_dict
  for query, row in zip(queries, ours):
    tokens = [t for t in words(query) if t in vocab]
    if not tokens:
      assert row == []
      continue
    ids, scores = index.bm25.retrieve([tokens], k=10, show_progress=False, backend_selection="numpy")
    expected = {int(i): float(s) for i, s in zip(ids[0], scores[0]) if s > 0}
    full = index.bm25.get_scores(tokens)
    assert np.allclose([full[p] for p in row], sorted(expected.values(), reverse=True)[:len(row)], atol=1e-5)
    assert len(row) == len(expected)


def test_pruned_bm25_gives_the_exhaustive_ranking(world_corpus, tmp_path):
  # A corpus large enough for the pruning to start by itself takes minutes to index, so the threshold comes down:
  # a word on more than 4 of the 96 passages is "common".
  from atommem_jax.tools.corpus_index import words

  corpus, questions = world_corpus
  index = CorpusIndex.open(corpus, index_dir=tmp_path / "idx")
  index.prune_min_postings = 4
  vocab = index.bm25.vocab_dict
  queries = ([json.loads(line)["question"] for line in open(questions)] + [f"born in {t}" for t in index.titles]
             + [f"{a} {b} born city" for a, b in zip(index.titles, index.titles[1:])])
  query_words = [words(q) for q in queries]
  for n in (1, 3, 10):
    pruned = index.bm25_top(query_words, n)
    exhaustive = [index._bm25_top_exhaustive([vocab[w] for w in q if w in vocab], n)  # pylint: disable=protected-access
                  if any(w in vocab for w in q) else [] for q in query_words]
    assert pruned == exhaustive
  assert index.bm25_counts["pruned"] > len(queries)  # the bound held for most queries ...
  assert index.bm25_counts["exhaustive"] > 0  # ... and some fell back (only common words, or too few candidates)
  # bm25s's own scores rank the pruned rows.
  for query, row in zip(queries[:20], index.bm25_top(query_words[:20], 5)):
    full = index.bm25.get_scores([w for w in words(query) if w in vocab])
    assert row == sorted(np.flatnonzero(full > 0), key=lambda p: (-full[p], p))[:5] or \
        np.allclose(full[row], np.sort(full)[::-1][:len(row)], atol=1e-5)


def test_index_rebuilds_when_corpus_changes_and_for_another_config_only_when_asked(tmp_path):
  corpus = tmp_path / "c.jsonl"
  write_rows(corpus, [{"url": f"u{i}", "title": f"T{i}", "text": f"page number {i} about topic{i}"}
                      for i in range(5)])
  assert CorpusIndex.open(corpus).num_pages == 5
  assert default_index_dir(corpus).is_dir()
  write_rows(corpus, [{"url": f"u{i}", "title": f"T{i}", "text": f"page {i}"} for i in range(7)])
  assert CorpusIndex.open(corpus).num_pages == 7  # this file's own index, stale: re-derived without asking
  # An index built with another config may have cost hours (a Qwen3 embedder): replaced only when asked.
  with pytest.raises(IndexConflict, match=r"another config \(dim: 256 there, 32 asked\); pass --rebuild"):
    CorpusIndex.open(corpus, IndexConfig(dim=32))
  assert json.loads((default_index_dir(corpus) / "meta.json").read_text())["config"]["dim"] == 256
  narrow = CorpusIndex.open(corpus, IndexConfig(dim=32), rebuild=True)
  assert narrow.dense.config.dim == 32 and narrow.meta["config"]["dim"] == 32
  leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
  assert not leftovers  # no temporary build directories remain


def test_index_dir_of_another_corpus_or_of_other_files_is_not_replaced(tmp_path):
  first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
  write_rows(first, [{"url": "u", "title": "T", "text": "first corpus"}])
  write_rows(second, [{"url": "v", "title": "S", "text": "second corpus"}, {"url": "w", "title": "R", "text": "x"}])
  shared = tmp_path / "idx"
  CorpusIndex.open(first, index_dir=shared)
  with pytest.raises(IndexConflict, match=f"holds the index of another corpus \\({first}\\)"):
    CorpusIndex.open(second, index_dir=shared)
  assert CorpusIndex.open(first, index_dir=shared).num_pages == 1  # untouched, still loads
  assert CorpusIndex.open(second, index_dir=shared, rebuild=True).num_pages == 2
  # A directory of someone's files is never an index to replace, --rebuild or not.
  notes = tmp_path / "notes"
  notes.mkdir()
  (notes / "todo.txt").write_text("keep me")
  for rebuild in (False, True):
    with pytest.raises(IndexConflict, match="holds files but no corpus index"):
      CorpusIndex.open(first, index_dir=notes, rebuild=rebuild)
  assert [p.name for p in notes.iterdir()] == ["todo.txt"] and (notes / "todo.txt").read_text() == "keep me"
  (shared / "meta.json").write_text("{damaged")
  with pytest.raises(IndexConflict, match="damaged index"):
    CorpusIndex.open(second, index_dir=shared)
  assert CorpusIndex.open(second, index_dir=shared, rebuild=True).num_pages == 2


def test_failed_build_leaves_previous_index(tmp_path):
  corpus = tmp_path / "c.jsonl"
  write_rows(corpus, [{"url": "u", "title": "T", "text": "first"}])
  CorpusIndex.open(corpus)
  write_rows(corpus, [{"url": "u", "title": "T", "text": "first"}, "{broken"])
  with pytest.raises(DataFormatError, match=":2: not valid JSON"):
    CorpusIndex.open(corpus)
  assert json.loads((default_index_dir(corpus) / "meta.json").read_text())["num_pages"] == 1


def test_words_are_what_bm25s_indexes():
  import bm25s

  from atommem_jax.tools.corpus_index import words

  texts = ["The founder of Rativo, born in 1875 -- a CEO!", "Ünïcode wörds and a_b c d", "x"]
  assert [words(t) for t in texts] == bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


def test_top_positive_selection_is_exact():
  from atommem_jax.tools.corpus_index import _top_positive

  rng = np.random.default_rng(0)
  for size, n in [(10, 3), (5000, 20), (100_000, 20), (100_000, 50)]:
    scores = np.zeros(size, np.float32)
    hit = rng.choice(size, size // 2, replace=False)
    scores[hit] = np.round(rng.random(size // 2), 2).astype(np.float32)  # many exact ties
    positive = np.flatnonzero(scores > 0)
    expected = positive[np.lexsort((positive, -scores[positive]))][:n].tolist()
    assert _top_positive(scores, n) == expected
  assert _top_positive(np.zeros(100, np.float32), 5) == []
  assert _top_positive(np.array([0, 2, 0, 1], np.float32), 10) == [1, 3]


def test_hashing_embedder_ignores_stopwords_and_case():
  embed = HashingTextEmbedder(64)
  a, b, c = embed(["The founder of Rativo", "founder RATIVO", "something else"])
  assert np.allclose(a, b) and not np.allclose(a, c) and np.isclose(np.linalg.norm(a), 1.0)


def test_html_dir_builder(tmp_path):
  site = tmp_path / "site"
  (site / "sub").mkdir(parents=True)
  (site / "index.html").write_text('<html><head><title>Home</title><link rel="canonical" '
                                   'href="https://site.example/"></head><body><p>Welcome</p></body></html>')
  (site / "sub" / "about.htm").write_bytes("<html><body><p>Über uns</p></body></html>".encode("latin-1"))
  (site / "notes.txt").write_text("ignored")
  rows = list(build_corpus.html_dir_rows(str(site), "https://site.example"))
  assert [(r["url"], r["title"]) for r in rows] == [("https://site.example/", "Home"),
                                                    ("https://site.example/sub/about.htm", "about")]
  assert "Über uns" in html_to_text(rows[1]["html"])
  output = tmp_path / "site.jsonl"
  build_corpus.main(["html", "--input", str(site), "--output", str(output)])
  assert [p.url for p in read_corpus(output)][1] == (site / "sub" / "about.htm").as_uri()


@pytest.mark.slow  # torch, transformers and two jax compilations: about a minute on 2 busy cores
def test_qwen3_embedding_directory_as_embedder(tmp_path):
  pytest.importorskip("torch")
  from hf_fixtures import make_tiny_hf_checkpoint

  from atommem_jax.data.tokenizer import load_tiny_tokenizer

  directory = tmp_path / "embedder"
  make_tiny_hf_checkpoint(directory, vocab_size=2048)
  load_tiny_tokenizer().save_pretrained(str(directory))
  corpus = write_rows(tmp_path / "c.jsonl", [{"url": f"u{i}", "title": f"T{i}", "text": f"Kalomi fact {i}"}
                                              for i in range(6)])
  index = CorpusIndex.open(corpus, IndexConfig(embedder=str(directory), passage_tokens=16))
  assert index.meta["dim"] == 64 and index.dense.config.dim == 64
  vectors = index.embed(["Kalomi fact 2", "another"], is_query=True)
  assert vectors.shape == (2, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
  assert len(index.dense_top(["Kalomi fact 2"], 3)[0]) == 3
