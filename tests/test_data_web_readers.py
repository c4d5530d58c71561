"""Web benchmark readers on files written here in the released formats (WebWalkerQA, GAIA jsonl + parquet, plain)."""
import json

import pytest

from atommem_jax.data import web_readers
from atommem_jax.data.records import DataFormatError

WEBWALKER_ROWS = [
    {"Question": "When was the conference founded?", "Answer": "1999", "Root_Url": "https://conf.example.org",
     "Info": {"Hop": "multi_source", "Domain": "Conference", "Language": "en", "Difficulty_Level": "easy",
              "Source_Website": ["https://conf.example.org/about"], "Golden_Path": ["root->about"]}},
    {"question": "Who chairs the board?", "answer": "Ada Lovelace", "root_url": "https://org.example.org",
     "info": {"hop": "single_source"}},
]

GAIA_ROWS = [
    {"task_id": "c61d22de", "Question": "How many studio albums?", "Level": 1, "Final answer": "3", "file_name": "",
     "Annotator Metadata": {"Steps": "1. search", "Number of steps": "1"}},
    {"task_id": "17b5a6a3", "Question": "What does the attached sheet total?", "Level": "2", "Final answer": "89706",
     "file_name": "17b5a6a3.xlsx", "Annotator Metadata": {"Steps": "open"}},
    {"task_id": "hidden01", "Question": "A test question", "Level": 3, "Final answer": "?", "file_name": ""},
]


def write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


@pytest.mark.parametrize("as_lines", [False, True])
def test_webwalkerqa_both_key_spellings(tmp_path, as_lines):
  path = tmp_path / "webwalker.json"
  if as_lines:
    write_jsonl(path, WEBWALKER_ROWS)
  else:
    path.write_text(json.dumps(WEBWALKER_ROWS))
  data = web_readers.read_webwalkerqa(str(path))
  first, second = data.questions
  assert first.record.question == "When was the conference founded?" and first.record.answers == ("1999",)
  assert first.root_url == "https://conf.example.org" and first.record.source == "webwalkerqa"
  assert dict(first.metadata)["Hop"] == '"multi_source"'
  assert json.loads(dict(first.metadata)["Golden_Path"]) == ["root->about"]
  assert second.record.answers == ("Ada Lovelace",) and second.root_url == "https://org.example.org"
  assert first.record.id != second.record.id and first.record.gold == ()


def test_gaia_jsonl(tmp_path):
  path = write_jsonl(tmp_path / "metadata.jsonl", GAIA_ROWS)
  data = web_readers.read_gaia(path)
  easy, sheet, hidden = data.questions
  assert easy.record.id == "c61d22de" and easy.level == 1 and easy.record.answers == ("3",) and not easy.attachment
  assert sheet.level == 2 and sheet.attachment == str(tmp_path / "17b5a6a3.xlsx")
  assert hidden.record.answers == ()  # the test split's "?" is no gold answer
  assert "Number of steps" in dict(easy.metadata)
  text_only = web_readers.read_gaia(path, web_readers.WebReaderConfig(skip_attachments=True))
  assert [q.record.id for q in text_only.questions] == ["c61d22de", "hidden01"]


def test_gaia_parquet_matches_jsonl(tmp_path):
  pa = pytest.importorskip("pyarrow")
  import pyarrow.parquet as pq
  rows = [{**r, "Level": str(r["Level"]), "Annotator Metadata": r.get("Annotator Metadata", {}).get("Steps", "")}
          for r in GAIA_ROWS]
  table = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "Annotator Metadata"} for r in rows])
  pq.write_table(table, tmp_path / "metadata.parquet")
  from_parquet = web_readers.read_gaia(str(tmp_path / "metadata.parquet"))
  from_jsonl = web_readers.read_gaia(write_jsonl(tmp_path / "metadata.jsonl", GAIA_ROWS))
  strip = lambda q: (q.record, q.level, q.attachment)
  assert [strip(q) for q in from_parquet.questions] == [strip(q) for q in from_jsonl.questions]


def test_plain(tmp_path):
  path = write_jsonl(tmp_path / "q.jsonl", [{"question": "q1", "answers": ["a", "b"]},
                                            {"id": "x7", "question": "q2", "answers": []}])
  data = web_readers.read_plain_questions(path)
  assert [q.record.answers for q in data.questions] == [("a", "b"), ()]
  assert [q.record.id for q in data.questions] == ["plain-0", "x7"]


@pytest.mark.parametrize("dataset, bad_row, message", [
    ("webwalkerqa", {"question": "q", "root_url": "u"}, "line 1: missing field 'answer'"),
    ("webwalkerqa", {"Question": "q", "Answer": 5, "Root_Url": "u"}, "line 1: field 'Answer' should be str"),
    ("gaia", {"task_id": "t", "Question": "q", "Level": "hard", "Final answer": "a", "file_name": ""},
     "line 1: field 'Level' should be an integer"),
    ("gaia", {"task_id": "t", "Question": "q", "Level": 1, "file_name": ""}, "line 1: missing field 'Final answer'"),
    ("plain", {"question": "q", "answers": "a"}, "line 1: field 'answers' should be list"),
    ("plain", [1, 2], "line 1: expected a JSON object"),
])
def test_bad_rows_name_file_and_line_or_are_skipped(tmp_path, dataset, bad_row, message):
  good = {"webwalkerqa": WEBWALKER_ROWS[1], "gaia": GAIA_ROWS[0], "plain": {"question": "q", "answers": ["a"]}}
  path = write_jsonl(tmp_path / "data.jsonl", [good[dataset], bad_row, good[dataset]])
  with pytest.raises(DataFormatError) as err:
    web_readers.read_web_dataset(dataset, path)
  assert str(err.value).startswith(f"{path}: {message}")
  skipped = web_readers.read_web_dataset(dataset, path, web_readers.WebReaderConfig(on_bad_row="skip"))
  assert len(skipped.questions) == 2 and skipped.num_skipped == 1


def test_broken_json_line_and_empty_and_missing_files(tmp_path):
  path = tmp_path / "broken.jsonl"
  path.write_text(json.dumps(WEBWALKER_ROWS[1]) + "\n{not json\n")
  with pytest.raises(DataFormatError, match=r"broken.jsonl: line 1: not valid JSON"):
    web_readers.read_webwalkerqa(str(path))
  (tmp_path / "empty.json").write_text("")
  with pytest.raises(DataFormatError, match="empty"):
    web_readers.read_webwalkerqa(str(tmp_path / "empty.json"))
  with pytest.raises(DataFormatError, match="does not exist"):
    web_readers.read_gaia(str(tmp_path / "nope.jsonl"))
  (tmp_path / "bad.parquet").write_bytes(b"not parquet")
  with pytest.raises(DataFormatError, match="bad.parquet: not a readable parquet file"):
    web_readers.read_gaia(str(tmp_path / "bad.parquet"))
  with pytest.raises(ValueError, match="unknown web dataset"):
    web_readers.read_web_dataset("nq", str(path))
