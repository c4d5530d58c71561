"""Readers against the real HotpotQA sample and native-format 2Wiki / MuSiQue files written here."""
import json
import os

import pytest

from atommem_jax.data import readers
from atommem_jax.data.records import DataFormatError, Paragraph

HOTPOT_SAMPLE = os.path.join(os.path.dirname(__file__), "data", "hotpotqa_dev_sample.json")


@pytest.fixture(scope="module")
def hotpot():
  return readers.read_hotpotqa(HOTPOT_SAMPLE)


def test_hotpot_sample_counts(hotpot):
  assert len(hotpot.records) == 53
  # 522 paragraphs in the file's contexts; one ("Loan modification in the United States") appears under two
  # questions, so the deduplicated pool holds 521.
  assert hotpot.num_paragraphs == 522
  assert len(hotpot.pool) == 521
  assert len(set(hotpot.pool)) == len(hotpot.pool)
  assert all(len(r.gold) == 2 for r in hotpot.records)
  assert all(g in set(hotpot.pool) for r in hotpot.records for g in r.gold)


def test_hotpot_first_record_matches_raw_file(hotpot):
  with open(HOTPOT_SAMPLE) as f:
    raw = json.load(f)[0]
  record = hotpot.records[0]
  assert record.id == raw["_id"] and record.question == raw["question"] and record.answers == (raw["answer"],)
  assert [p.title for p in record.gold] == ["Scott Derrickson", "Ed Wood"]
  ed_wood = next(p for p in hotpot.pool if p.title == "Ed Wood (film)")
  # Sentences carry their own leading space: joined with "" there is exactly one space between them.
  assert ed_wood.text.startswith("Ed Wood is a 1994 American biographical period comedy-drama film")
  assert "Ed Wood. The film concerns" in ed_wood.text and "  " not in ed_wood.text
  assert record.supporting_facts[0].startswith("Scott Derrickson (born July 16, 1966) is an American director")


def _2wiki_row(qid, question, answer, context, supporting):
  return {"_id": qid, "type": "compositional", "question": question, "context": context,
          "supporting_facts": supporting, "evidences": [["a", "r", "b"]], "answer": answer}


def _write(tmp_path, name, content):
  path = tmp_path / name
  path.write_text(content if isinstance(content, str) else json.dumps(content))
  return str(path)


def test_2wiki_reader(tmp_path):
  rows = [
      _2wiki_row("q1", "Who directed the film Blue Lake?", "Ana Moro",
                 [["Blue Lake", ["Blue Lake is a 1950 film.", "It was directed by Ana Moro."]],
                  ["Ana Moro", ["Ana Moro was a director."]], ["Red Hill", ["Red Hill is a town."]]],
                 [["Blue Lake", 1], ["Ana Moro", 0]]),
      _2wiki_row("q2", "Where is Red Hill?", "Spain",
                 [["Red Hill", ["Red Hill is a town."]], ["Green Bay", ["Green Bay is a bay.", " In Spain."]]],
                 [["Red Hill", 0]]),
  ]
  corpus = readers.read_2wiki(_write(tmp_path, "dev.json", rows))
  assert [r.id for r in corpus.records] == ["q1", "q2"]
  first = corpus.records[0]
  assert first.gold == (Paragraph("Blue Lake", "Blue Lake is a 1950 film. It was directed by Ana Moro."),
                        Paragraph("Ana Moro", "Ana Moro was a director."))
  assert first.supporting_facts == ("It was directed by Ana Moro.", "Ana Moro was a director.")
  assert first.answers == ("Ana Moro",) and first.source == "2wiki"
  assert corpus.num_paragraphs == 5 and len(corpus.pool) == 4  # "Red Hill" is shared
  # A sentence that already has its leading space is not given a second one.
  assert Paragraph("Green Bay", "Green Bay is a bay. In Spain.") in corpus.pool


def _musique_row(qid, answerable=True):
  return {"id": qid, "question": f"Question {qid}?", "answer": "Paris", "answer_aliases": ["City of Light", "Paris"],
          "answerable": answerable,
          "question_decomposition": [{"id": 1, "question": "x", "answer": "y", "paragraph_support_idx": 0}],
          "paragraphs": [
              {"idx": 0, "title": "France", "paragraph_text": "France's capital is Paris.", "is_supporting": True},
              {"idx": 1, "title": "Rome", "paragraph_text": f"Rome is old ({qid}).", "is_supporting": False},
              {"idx": 2, "title": "Eiffel", "paragraph_text": "The tower is in Paris.", "is_supporting": True},
          ]}


def test_musique_reader(tmp_path):
  lines = [_musique_row("2hop_1"), _musique_row("2hop_2"), _musique_row("2hop_3", answerable=False)]
  path = _write(tmp_path, "dev.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n")
  corpus = readers.read_musique(path)
  assert [r.id for r in corpus.records] == ["2hop_1", "2hop_2"]  # unanswerable left out by default
  record = corpus.records[0]
  assert record.answers == ("Paris", "City of Light")  # aliases follow, duplicates removed
  assert [p.title for p in record.gold] == ["France", "Eiffel"]
  assert record.supporting_facts == ("France's capital is Paris.", "The tower is in Paris.")
  assert len(corpus.pool) == 4 and corpus.num_paragraphs == 6
  with_unanswerable = readers.read_musique(path, readers.ReaderConfig(keep_unanswerable=True))
  assert len(with_unanswerable.records) == 3


def test_bad_row_is_named_or_skipped(tmp_path):
  good = _2wiki_row("q1", "Q?", "A", [["T", ["S."]], ["U", ["V."]]], [["T", 0]])
  missing = {k: v for k, v in _2wiki_row("q2", "Q?", "A", [["X", ["Only in bad row."]]], [["X", 0]]).items()
                                                                       if k != "answer"}
  wrong_type = _2wiki_row("q3", "Q?", 42, [["T", ["S."]]], [["T", 0]])
  path = _write(tmp_path, "bad.json", [good, missing, wrong_type])
  with pytest.raises(DataFormatError, match=r"bad\.json: row 1: missing field 'answer'"):
    readers.read_2wiki(path)
  skipped = readers.read_2wiki(path, readers.ReaderConfig(on_bad_row="skip"))
  assert [r.id for r in skipped.records] == ["q1"] and skipped.num_skipped == 2
  assert Paragraph("X", "Only in bad row.") not in skipped.pool  # nothing of a skipped row is kept

  path = _write(tmp_path, "bad2.json", [good, good, wrong_type])
  with pytest.raises(DataFormatError, match=r"bad2\.json: row 2: field 'answer' should be str, got int"):
    readers.read_2wiki(path)
  dangling = _2wiki_row("q4", "Q?", "A", [["T", ["S."]]], [["Nowhere", 0]])
  with pytest.raises(DataFormatError, match=r"row 0: supporting_facts\[0\] names title 'Nowhere'"):
    readers.read_hotpotqa(_write(tmp_path, "dangling.json", [dangling]))


def test_bad_musique_line_and_bad_files(tmp_path):
  broken = _musique_row("x")
  broken["paragraphs"][1]["is_supporting"] = "yes"
  path = _write(tmp_path, "m.jsonl", json.dumps(_musique_row("a")) + "\n{not json\n" + json.dumps(broken) + "\n")
  with pytest.raises(DataFormatError, match=r"m\.jsonl: line 1: not valid JSON"):
    readers.read_musique(path)
  skipped = readers.read_musique(path, readers.ReaderConfig(on_bad_row="skip"))
  assert len(skipped.records) == 1 and skipped.num_skipped == 2
  path = _write(tmp_path, "m2.jsonl", json.dumps(broken) + "\n")
  with pytest.raises(DataFormatError, match=r"line 0: paragraphs\[1\]: field 'is_supporting' should be bool"):
    readers.read_musique(path)

  with pytest.raises(DataFormatError, match=r"nothere\.json: file does not exist"):
    readers.read_hotpotqa(str(tmp_path / "nothere.json"))
  with pytest.raises(DataFormatError, match=r"empty\.json: file is empty"):
    readers.read_hotpotqa(_write(tmp_path, "empty.json", "  \n"))
  with pytest.raises(DataFormatError, match=r"list\.json: the list of questions is empty"):
    readers.read_hotpotqa(_write(tmp_path, "list.json", []))
  with pytest.raises(DataFormatError, match=r"obj\.json: expected a JSON list"):
    readers.read_hotpotqa(_write(tmp_path, "obj.json", {"data": []}))
