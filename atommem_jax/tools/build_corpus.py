"""Corpus files for the corpus server, from saved HTML pages or from synthetic worlds.

  python -m atommem_jax.tools.build_corpus html --input DIR --output corpus.jsonl [--base_url https://site.example]
  python -m atommem_jax.tools.build_corpus synthetic --output corpus.jsonl [--questions questions.jsonl]
      [--worlds 1 --seed 0 --documents 256 --questions_per_world 64]

- html: every `*.html` / `*.htm` file under DIR (sorted) becomes one row `{url, title, html}`. The url is the page's
  `<link rel="canonical">` if it has one, else `--base_url` + the file's path relative to DIR, else a `file://`
  url; the title is its `<title>` (else the file name). Bytes are decoded with the encoding resiliparse detects.
- synthetic: world w (seed `seed + w`, `data.synthetic`) becomes a website `https://world{seed+w}.example/wiki/NAME`
  with one page per person, city and company: its facts as sentences, each related entity that has a page linked.
  `--questions` writes the worlds' questions as plain question rows (`{id, question, answers}`, readable with
  `data.web_readers.read_plain_questions`).

Files are written whole (a temporary file, then a rename); an existing output is replaced only with `--overwrite`,
and an output may not be an input. Bad input is one line `error: ...` and exit status 1.
"""
from __future__ import annotations

import argparse
import html as html_lib
import pathlib
import sys
from typing import Iterator, Sequence

from atommem_jax import atomic_files, cli
from atommem_jax.data import synthetic


def world_url(seed: int) -> str:
  return f"https://world{seed}.example"


def page_url(seed: int, name: str) -> str:
  return f"{world_url(seed)}/wiki/{name}"


def _linked_sentence(fact: synthetic.Fact, seed: int, has_page: set[str]) -> str:
  sentence = html_lib.escape(fact.sentence)
  if fact.object not in has_page:
    return sentence
  # The object is named last in every template ("... born in Tesuna."), so its last occurrence is the one to link.
  at = sentence.rfind(fact.object)
  anchor = f'<a href="{page_url(seed, fact.object)}">{fact.object}</a>'
  return sentence[:at] + anchor + sentence[at + len(fact.object):]


def synthetic_world_rows(task: synthetic.SyntheticTask, seed: int) -> Iterator[dict]:
  """One `{url, title, html}` row per document of the world, in document order."""
  has_page = {doc.title for doc in task.documents}
  facts_of: dict[str, list[synthetic.Fact]] = {}
  for fact in task.facts:
    facts_of.setdefault(fact.title, []).append(fact)
  for doc in task.documents:
    name = html_lib.escape(doc.title)
    paragraphs = "".join(f"<p>{_linked_sentence(f, seed, has_page)}</p>" for f in facts_of[doc.title])
    html = f"<!DOCTYPE html><html><head><title>{name}</title></head><body><h1>{name}</h1>{paragraphs}</body></html>"
    yield {"url": page_url(seed, doc.title), "title": doc.title, "html": html}


def synthetic_question_rows(task: synthetic.SyntheticTask) -> Iterator[dict]:
  for q in task.questions:
    yield {"id": q.record.id, "question": q.record.question, "answers": list(q.record.answers)}


def html_dir_rows(directory: str, base_url: str = "") -> Iterator[dict]:
  from resiliparse.parse.encoding import bytes_to_str, detect_encoding
  from resiliparse.parse.html import HTMLTree

  root = pathlib.Path(directory)
  if not root.is_dir():
    raise FileNotFoundError(f"{directory}: not a directory")
  files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".html", ".htm"))
  if not files:
    raise FileNotFoundError(f"{directory}: no .html / .htm files")
  for path in files:
    data = path.read_bytes()
    html = bytes_to_str(data, detect_encoding(data))
    tree = HTMLTree.parse(html)
    canonical = next((el.getattr("href") for el in tree.document.query_selector_all('link[rel="canonical"]')
                      if el.getattr("href")), None)
    relative = path.relative_to(root).as_posix()
    url = canonical or (f"{base_url.rstrip('/')}/{relative}" if base_url else path.absolute().as_uri())
    title = (tree.title or "").strip() or path.stem
    yield {"url": url, "title": title, "html": html}


def write_jsonl(rows: Iterator[dict], output: str) -> int:
  """Writes rows via a temporary file and a rename; returns the row count."""
  return atomic_files.write_jsonl(output, rows)


def synthetic_corpus(output: str, *, worlds: int = 1, seed: int = 0, documents: int = 256,
                     questions_per_world: int = 64, questions_output: str = "") -> tuple[int, int]:
  """Writes the corpus (and optionally the questions) of `worlds` synthetic worlds; returns (pages, questions)."""
  tasks = [(seed + w, synthetic.generate(synthetic.SyntheticConfig(seed=seed + w, num_documents=documents,
                                                                   num_questions=questions_per_world)))
           for w in range(worlds)]
  pages = write_jsonl((row for s, task in tasks for row in synthetic_world_rows(task, s)), output)
  questions = 0
  if questions_output:
    questions = write_jsonl((row for _, task in tasks for row in synthetic_question_rows(task)), questions_output)
  return pages, questions


def main(argv: Sequence[str]) -> None:
  parser = argparse.ArgumentParser(prog="python -m atommem_jax.tools.build_corpus")
  sub = parser.add_subparsers(dest="source", required=True)
  from_html = sub.add_parser("html", help="a directory of saved HTML pages")
  from_html.add_argument("--input", required=True)
  from_html.add_argument("--output", required=True)
  from_html.add_argument("--base_url", default="")
  from_worlds = sub.add_parser("synthetic", help="synthetic worlds as websites")
  from_worlds.add_argument("--output", required=True)
  from_worlds.add_argument("--questions", default="", help="also write the worlds' questions here")
  from_worlds.add_argument("--worlds", type=int, default=1)
  from_worlds.add_argument("--seed", type=int, default=0)
  from_worlds.add_argument("--documents", type=int, default=256)
  from_worlds.add_argument("--questions_per_world", type=int, default=64)
  for command in (from_html, from_worlds):
    command.add_argument("--overwrite", action="store_true", help="replace existing output files")
  flags = parser.parse_args(argv)
  if flags.source == "html":
    atomic_files.check_output(flags.output, overwrite=flags.overwrite, inputs={"--input": flags.input})
    count = write_jsonl(html_dir_rows(flags.input, flags.base_url), flags.output)
    print(f"wrote {count} pages to {flags.output}")
  else:
    atomic_files.check_output(flags.output, overwrite=flags.overwrite)
    if flags.questions:
      atomic_files.check_output(flags.questions, overwrite=flags.overwrite, inputs={"--output": flags.output},
                                flag="--questions")
    pages, questions = synthetic_corpus(flags.output, worlds=flags.worlds, seed=flags.seed,
                                        documents=flags.documents, questions_per_world=flags.questions_per_world,
                                        questions_output=flags.questions)
    print(f"wrote {pages} pages to {flags.output}" + (f" and {questions} questions to {flags.questions}"
                                                      if flags.questions else ""))


if __name__ == "__main__":
  cli.report_input_errors(main)(sys.argv[1:])  # bad input: one line `error: ...`, exit status 1
