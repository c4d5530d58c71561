"""metrics.jsonl / eval.jsonl survive damage and resumes: a bad line is set aside (file, line), never a reason to drop
the rows after it; rows the checkpoint vouches for are put back; rows past the resume step stay until re-derived."""
import json

import pytest

from atommem_jax import jsonl_log
from atommem_jax.train.metrics_log import EVAL_FILE, METRICS_FILE, MetricsLog


def _rows(n, **extra):
  return [{"step": s, "loss": 1.0 / s, **extra} for s in range(1, n + 1)]


def _write(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _file_rows(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def _sidecar(path):
  return [json.loads(line) for line in path.with_name(path.name + ".damaged").read_text().splitlines()]


def test_a_line_cut_in_the_middle_costs_no_later_row(tmp_path):
  path = tmp_path / METRICS_FILE
  rows = _rows(5)
  _write(path, rows)
  lines = path.read_text().splitlines(keepends=True)
  cut = lines[1][:len(lines[1]) // 2]
  path.write_text(lines[0] + cut + "\n" + "".join(lines[2:]))
  log = MetricsLog(tmp_path, resume_step=5)
  log.close()
  # Before: the resume kept only the rows before the damaged line (steps 3-5 were deleted without a word).
  assert [r["step"] for r in _file_rows(path)] == [1, 3, 4, 5]
  (aside,) = _sidecar(path)
  assert aside["line"] == 2 and "not valid JSON" in aside["reason"] and aside["text"] == cut
  assert any("metrics.jsonl: line 2: not valid JSON" in repair for repair in log.repairs)


def test_a_row_the_checkpoint_vouches_for_is_put_back(tmp_path, caplog):
  path = tmp_path / METRICS_FILE
  rows = _rows(5)
  _write(path, rows)
  lines = path.read_text().splitlines(keepends=True)
  path.write_text(lines[0] + "\x00\x00garbage\n" + "".join(lines[2:]))
  log = MetricsLog(tmp_path, resume_step=5, history={"metrics": rows, "eval": []})
  log.close()
  assert _file_rows(path) == rows
  assert "line 2" in caplog.text and "restored from the checkpoint" in caplog.text
  assert _sidecar(path)[0]["text"] == "\x00\x00garbage"


def test_rows_past_the_resume_step_stay_until_written_again(tmp_path):
  path = tmp_path / METRICS_FILE
  old = _rows(6, source="old")
  _write(path, old)
  log = MetricsLog(tmp_path, resume_step=4)
  assert _file_rows(path) == old  # nothing dropped before it is re-derived
  log.write(5, {"loss": 0.2, "source": "new"})
  assert [(r["step"], r["source"]) for r in _file_rows(path)] == [(1, "old"), (2, "old"), (3, "old"), (4, "old"),
                                                                  (5, "new"), (6, "old")]
  log.write(6, {"loss": 0.1, "source": "new"})
  log.write(7, {"loss": 0.05, "source": "new"})
  log.close()
  assert [(r["step"], r["source"]) for r in _file_rows(path)][4:] == [(5, "new"), (6, "new"), (7, "new")]
  assert not path.with_name(path.name + ".damaged").exists()


def test_undecodable_bytes_are_set_aside_exactly(tmp_path):
  path = tmp_path / METRICS_FILE
  _write(path, _rows(3))
  raw = b'{"step": 4, "phase": "caf\xe9"}'
  path.write_bytes(path.read_bytes() + raw + b"\n" + json.dumps({"step": 5}).encode() + b"\n")
  lines, damaged, _ = jsonl_log.read(path)
  assert [line.row["step"] for line in lines] == [1, 2, 3, 5]
  (bad,) = damaged
  assert bad.describe() == f"{path}: line 4: not valid UTF-8 (byte 0xe9 at column 26)"
  jsonl_log.set_aside(damaged)
  assert _sidecar(path)[0]["text"].encode("utf-8", "surrogateescape") == raw


def test_a_cut_last_line_is_set_aside_and_a_whole_one_is_completed(tmp_path):
  path = tmp_path / METRICS_FILE
  _write(path, _rows(2))
  path.write_text(path.read_text() + '{"step": 3, "loss": 0.')
  log = MetricsLog(tmp_path, resume_step=2)
  log.write(3, {"loss": 0.3})
  log.close()
  assert [r["step"] for r in _file_rows(path)] == [1, 2, 3]
  assert "cut short" in _sidecar(path)[0]["reason"]

  other = tmp_path / "b"
  other.mkdir()
  (other / METRICS_FILE).write_text(json.dumps({"step": 1}) + "\n" + json.dumps({"step": 2}))  # no final newline
  log = MetricsLog(other, resume_step=2)
  log.write(3, {"loss": 0.3})
  log.close()
  assert [r["step"] for r in _file_rows(other / METRICS_FILE)] == [1, 2, 3]


def test_evaluations_are_keyed_by_label_and_size(tmp_path):
  path = tmp_path / EVAL_FILE
  rows = [{"step": 0, "label": "start", "num_docs": 4, "em": 0.0}, {"step": 0, "label": "start", "num_docs": 8,
                                                                     "em": 0.0},
          {"step": 3, "label": "after_sft", "num_docs": 4, "em": 0.5}]
  _write(path, rows)
  log = MetricsLog(tmp_path, resume_step=2)
  assert log.has_eval("start") and not log.has_eval("after_sft")  # past the resume step: to be re-derived
  assert _file_rows(path) == rows
  log.write_eval(3, "after_sft", {4: {"em": 0.5}, 8: {"em": 0.25}})
  log.close()
  assert [(r["label"], r["num_docs"]) for r in _file_rows(path)] == [("start", 4), ("start", 8), ("after_sft", 4),
                                                                     ("after_sft", 8)]


def test_other_processes_read_but_never_change_the_files(tmp_path):
  path = tmp_path / METRICS_FILE
  _write(path, _rows(3))
  path.write_text(path.read_text() + "not json\n")
  before = path.read_bytes()
  log = MetricsLog(tmp_path, resume_step=3, enabled=False, history={"metrics": _rows(3), "eval": []})
  log.write(4, {"loss": 0.1})
  assert [r["step"] for r in log.history()["metrics"]] == [1, 2, 3, 4]
  assert path.read_bytes() == before and not (tmp_path / (METRICS_FILE + ".damaged")).exists()


@pytest.mark.parametrize("line, reason", [
    (b"[1, 2]", "expected a JSON object, got list"),
    (b'{"loss": 1.0}', "no integer 'step'"),
    (b'{"step": "3"}', "no integer 'step'"),
])
def test_rows_without_a_step_are_damaged_too(tmp_path, line, reason):
  path = tmp_path / METRICS_FILE
  path.write_bytes(line + b"\n")
  log = MetricsLog(tmp_path, resume_step=0)
  log.close()
  assert _sidecar(path)[0]["reason"] == reason and path.read_text() == ""
