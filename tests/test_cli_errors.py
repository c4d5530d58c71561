"""Every command line turns bad input into one line naming the cause and exit status 1, never a traceback; writers
never replace their input, and replace an existing output only with --overwrite."""
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from atommem_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOTPOT_SAMPLE = ROOT / "tests" / "data" / "hotpotqa_dev_sample.json"
TRAIN = ["-m", "atommem_jax.train", f"--config={ROOT / 'experiments' / 'grpo_hotpot.py'}:tiny"]


def _run(*args, cwd=ROOT):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop(cli.TRACEBACK_ENV, None)
  return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                        timeout=300)


def _one_line_error(result) -> str:
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 1, result.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
  return lines[0]


def test_unknown_config_keys_name_the_nearest_known_ones(tmp_path):
  line = _one_line_error(_run(*TRAIN, f"--workdir={tmp_path}", "--config.sft.stepz=3"))
  assert line == ("error: --config.sft.stepz: unknown config key 'sft.stepz'; nearest known keys: sft.steps, "
                  "sft.drill_steps, sft.optimizer")
  line = _one_line_error(_run(*TRAIN, f"--workdir={tmp_path}", "--config.nonexistent=1"))
  assert line.startswith("error: --config.nonexistent: unknown config key 'nonexistent'; known keys there: ")
  assert "total_steps" in line
  assert not list(tmp_path.iterdir())


def test_missing_or_failing_experiment_files(tmp_path):
  line = _one_line_error(_run("-m", "atommem_jax.train", "--config=experiments/nope.py", f"--workdir={tmp_path}"))
  assert line == "error: --config: experiment file experiments/nope.py does not exist"
  line = _one_line_error(_run(*TRAIN[:2], f"{TRAIN[2]}y", f"--workdir={tmp_path}"))
  assert line.startswith("error: --config ") and "ValueError: unknown config argument 'tinyy'" in line


def test_evaluate_names_an_unknown_preset(tmp_path):
  line = _one_line_error(_run("-m", "atommem_jax.evaluate", "--config", "experiments/eval_hotpot.py:tiny",
                              f"--config.checkpoint={tmp_path}", "--config.expected_model=qwen3_9b",
                              "--workdir", tmp_path / "out"))
  assert "expected_model 'qwen3_9b' is not a model preset; known presets: [" in line
  assert not (tmp_path / "out").exists()


def test_score_names_a_byte_that_is_not_utf8(tmp_path):
  path = tmp_path / "latin1.jsonl"
  path.write_bytes('{"prediction": "ok", "answers": ["ok"]}\n{"prediction": "caf\xe9", "answers": ["x"]}\n'
                   .encode("latin-1"))
  line = _one_line_error(_run("-m", "atommem_jax.score", f"--predictions={path}"))
  assert line == f"error: {path}: line 2: not valid UTF-8 (byte 0xe9 at column 20)"


def test_replay_names_a_lone_surrogate(tmp_path):
  path = tmp_path / "t.json"
  path.write_text('{"document": "Alice lives in Paris.", "questions": ["Where?"], "answers": [["Paris"]], '
                  '"responses": ["<update_memory>x\\ud800y</update_memory>"]}')
  line = _one_line_error(_run("-m", "atommem_jax.replay", f"--transcript={path}"))
  assert line == (f"error: {path}: responses[0] (character 17, \\ud800) is a lone surrogate, not a Unicode "
                  f"character")


def _sha(path):
  return hashlib.sha256(path.read_bytes()).hexdigest()


def test_data_build_never_replaces_its_input_and_overwrites_only_when_asked(tmp_path):
  native = tmp_path / "hotpot.json"
  shutil.copy(HOTPOT_SAMPLE, native)
  before = _sha(native)
  build = ["-m", "atommem_jax.data.build", "--dataset=hotpotqa", f"--input={native}", "--num_docs=4"]
  # Before: the native file was replaced by the built JSONL.
  line = _one_line_error(_run(*build, f"--output={native}", "--overwrite"))
  assert line == f"error: --output {native} is the same file as --input; a writer never replaces its own input"
  os.symlink(native, tmp_path / "link.json")
  _one_line_error(_run(*build, f"--output={tmp_path / 'link.json'}", "--overwrite"))
  assert _sha(native) == before

  line = _one_line_error(_run(*build, f"--output={tmp_path}"))
  assert line == f"error: --output {tmp_path} is a directory; give the path of the file to write"

  output = tmp_path / "out.jsonl"
  output.write_text("precious\n")
  line = _one_line_error(_run(*build, f"--output={output}"))
  assert line == f"error: --output {output} exists; pass --overwrite to replace it"
  assert output.read_text() == "precious\n"
  result = _run(*build, f"--output={output}", "--overwrite")
  assert result.returncode == 0, result.stderr[-2000:]
  assert output.read_text().startswith('{"id": ')
  assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_plot_replaces_figures_only_when_asked(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n')
  assert _run("-m", "atommem_jax.plot", f"--workdir={tmp_path}").returncode == 0
  line = _one_line_error(_run("-m", "atommem_jax.plot", f"--workdir={tmp_path}"))
  assert line == f"error: {tmp_path / 'plots'} already holds loss.png; pass --overwrite to replace them"
  assert _run("-m", "atommem_jax.plot", f"--workdir={tmp_path}", "--overwrite").returncode == 0


def test_the_traceback_is_there_for_whoever_asks(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), **{cli.TRACEBACK_ENV: "1"})
  result = subprocess.run([sys.executable, "-m", "atommem_jax.score", f"--predictions={tmp_path / 'none.jsonl'}"],
                          capture_output=True, text=True, env=env, timeout=300)
  assert result.returncode == 1 and "Traceback" in result.stderr and "PredictionsError" in result.stderr


@pytest.mark.parametrize("error, line", [
    (ValueError("a\n  b"), "a b"),
    (KeyError("unknown preset 'x'"), "unknown preset 'x'"),
    (ValueError("lone \ud800"), "lone \\ud800"),
])
def test_one_line(error, line):
  assert cli.one_line(error) == line


def test_build_corpus_never_replaces_an_input_and_overwrites_only_when_asked(tmp_path):
  build = ["-m", "atommem_jax.tools.build_corpus"]
  synthetic = [*build, "synthetic", "--documents=40", "--questions_per_world=4"]
  # Before: a traceback (FileNotFoundError) for a missing --input, IsADirectoryError for an --output directory.
  line = _one_line_error(_run(*build, "html", f"--input={tmp_path / 'none'}", f"--output={tmp_path / 'c.jsonl'}"))
  assert line == f"error: {tmp_path / 'none'}: not a directory"
  line = _one_line_error(_run(*synthetic, f"--output={tmp_path}"))
  assert line == f"error: --output {tmp_path} is a directory; give the path of the file to write"
  corpus = tmp_path / "corpus.jsonl"
  corpus.write_text("precious\n")
  line = _one_line_error(_run(*synthetic, f"--output={corpus}"))
  assert line == f"error: --output {corpus} exists; pass --overwrite to replace it"
  line = _one_line_error(_run(*synthetic, f"--output={corpus}", f"--questions={corpus}", "--overwrite"))
  assert line == (f"error: --questions {corpus} is the same file as --output; a writer never replaces its own "
                  f"input")
  assert corpus.read_text() == "precious\n"
  result = _run(*synthetic, f"--output={corpus}", "--overwrite")
  assert result.returncode == 0 and corpus.read_text().startswith('{"url": "https://world0.example/wiki/')
  assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_corpus_server_reports_a_bad_corpus_and_an_index_it_may_not_replace(tmp_path):
  server = ["-m", "atommem_jax.tools.corpus_server", "--stdio"]
  line = _one_line_error(_run(*server, f"--corpus={tmp_path / 'none.jsonl'}"))
  assert line.startswith("error: ") and str(tmp_path / "none.jsonl") in line
  corpus = tmp_path / "c.jsonl"
  corpus.write_text('{"url": "u", "title": "T", "text": "a page"}\n{broken\n')
  line = _one_line_error(_run(*server, f"--corpus={corpus}"))
  assert line == f"error: {corpus}:2: not valid JSON (Expecting property name enclosed in double quotes)"
  notes = tmp_path / "notes"
  notes.mkdir()
  (notes / "todo.txt").write_text("keep me")
  corpus.write_text('{"url": "u", "title": "T", "text": "a page"}\n')
  line = _one_line_error(_run(*server, f"--corpus={corpus}", f"--index_dir={notes}", "--rebuild"))
  assert line == (f"error: index directory {notes} holds files but no corpus index (no meta.json); it is never "
                  f"replaced: give a new or empty --index_dir")
  assert (notes / "todo.txt").read_text() == "keep me"
