"""Evaluation from an Orbax checkpoint: deterministic, mesh-independent, and all-or-nothing on bad input."""
import dataclasses
import json
import pathlib
import subprocess
import sys

import jax
import pytest
from flax import nnx

from atommem_jax import configlib
from atommem_jax.checkpoint import CheckpointError, save_params
from atommem_jax.data.tokenizer import tiny_tokenizer_dir
from atommem_jax.eval import config as eval_config
from atommem_jax.eval import runner
from atommem_jax.model import Qwen3, get_preset

REPO = pathlib.Path(__file__).resolve().parent.parent


def experiment_module(name: str):
  return configlib.load_config_file(REPO / "experiments" / f"{name}.py")


def experiment(name: str, arg: str):
  return experiment_module(name).get_config(arg)


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> pathlib.Path:
  """A random tiny Qwen3 over the tiny tokenizer's 2048 ids, saved the way `convert` / the trainer save params.

  The weights are scaled up so greedy decoding writes varied text (stray tags included) rather than one repeated
  token, which would make "the same trajectories on every mesh" an empty statement.
  """
  directory = tmp_path_factory.mktemp("ckpt") / "params"
  model_config = get_preset("tiny").replace(vocab_size=2048)
  model = Qwen3(model_config, rngs=nnx.Rngs(3))
  nnx.update(model, jax.tree.map(lambda x: 3.0 * x, nnx.state(model, nnx.Param)))
  save_params(directory, model, model_config, tokenizer_src=tiny_tokenizer_dir())
  return directory


def tiny_eval_config(checkpoint: pathlib.Path, **changes) -> eval_config.EvalConfig:
  config = experiment("eval_hotpot", "tiny")
  config.checkpoint = str(checkpoint)
  config.expected_model = ""
  config.datasets.synthetic.update(num_docs=(4,), max_examples=3)
  config.batch_size = 4
  config.agent.update(max_steps=3, chunk_tokens=64, overlap_tokens=4)
  config.sampler.update(max_new_tokens=12, prompt_buckets=(1024,))
  for key, value in changes.items():
    if isinstance(value, dict):
      config[key].update(value)
    else:
      config[key] = value
  return eval_config.eval_config_from_dict(config)


def outputs(workdir: pathlib.Path) -> tuple[list, str]:
  summary = json.loads((workdir / "results.json").read_text())["summary"]
  return summary, (workdir / "trajectories.jsonl").read_text()


def trainer_workdir(params_dir: pathlib.Path, workdir: pathlib.Path, step: int) -> pathlib.Path:
  """A trainer workdir holding `params_dir`'s weights at `step`, written by the trainer's own checkpoint manager
  (train state = params + optimizer state + counters, data iterator state, meta with the run's config)."""
  from atommem_jax.checkpoint import restore_params
  from atommem_jax.train.checkpointing import RunCheckpoints
  from atommem_jax.train.config import TrainConfig

  train = experiment_module("train_base").tiny()
  train.model.checkpoint = str(params_dir)  # the run started from these weights: its architecture and tokenizer
  _, model = restore_params(params_dir)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  state = {"params": params, "opt_state": jax.tree.map(jax.numpy.zeros_like, params), "step": jax.numpy.int32(step)}
  run = RunCheckpoints(workdir, configlib.from_dict(TrainConfig, train))
  run.save(step, state, {"position": 0}, jax.random.key(0))
  run.close()
  return workdir


def test_same_results_twice_on_one_or_eight_devices_and_from_the_trainer_workdir(checkpoint_dir, tmp_path, gs_bucket):
  one_device = tiny_eval_config(checkpoint_dir)
  runner.evaluate(one_device, tmp_path / "a", devices=jax.devices()[:1], progress=False)
  # The second run writes to gs:// (fsspec's in-memory filesystem through epath): outputs go wherever epath reaches.
  paths = runner.evaluate(one_device, gs_bucket / "b", devices=jax.devices()[:1], progress=False)
  assert sorted(str(p) for p in paths.values()) == [f"gs://test-bucket/run/b/{name}" for name in
                                                    ("results.json", "results.md", "trajectories.jsonl")]
  sharded = tiny_eval_config(checkpoint_dir, mesh=dict(data=2, fsdp=2, tensor=2))
  assert len(jax.devices()) == 8
  runner.evaluate(sharded, tmp_path / "c", progress=False)
  workdir = trainer_workdir(checkpoint_dir, tmp_path / "run", step=7)
  runner.evaluate(tiny_eval_config(workdir), tmp_path / "d", devices=jax.devices()[:1], progress=False)

  summary_a, trajectories_a = outputs(tmp_path / "a")
  assert outputs(gs_bucket / "b") == (summary_a, trajectories_a)
  assert outputs(tmp_path / "c") == (summary_a, trajectories_a)
  assert outputs(tmp_path / "d") == (summary_a, trajectories_a)
  assert json.loads((tmp_path / "d" / "results.json").read_text())["checkpoint"] == str(workdir / "checkpoints" / "7")

  (row,) = summary_a
  assert (row["variant"], row["dataset"], row["num_docs"], row["episodes"]) == ("atommem", "synthetic", 4, 3)
  lines = [json.loads(line) for line in trajectories_a.splitlines()]
  assert len(lines) == 3 and all(line["turns"] for line in lines)
  assert all(len(line["turns"]) <= 3 for line in lines)  # the step cap
  responses = {turn["response"] for line in lines for turn in line["turns"]}
  assert len(responses) >= 4 and all(len(r.strip()) > 5 for r in responses)  # varied text, not one repeated token
  turns = [turn for line in lines for turn in line["turns"]]
  assert row["ops/invalid"] == pytest.approx(sum(turn["invalid_ops"] for turn in turns) / 3)
  assert row["steps_per_episode"] == pytest.approx(sum(len(line["turns"]) for line in lines) / 3)
  markdown = (tmp_path / "a" / "results.md").read_text()
  assert "| atommem |" in markdown and "synthetic @4" in markdown


def _assert_error_writes_nothing(config, workdir: pathlib.Path, match: str):
  # The errors `python -m atommem_jax.evaluate` reports as one line (the loader's included).
  with pytest.raises((runner.EvalError, configlib.ConfigError, CheckpointError, FileNotFoundError), match=match):
    runner.evaluate(config, workdir, devices=jax.devices()[:1], progress=False)
  assert not workdir.exists()


def test_missing_checkpoint_is_one_clear_error_and_writes_nothing(tmp_path):
  config = tiny_eval_config(tmp_path / "nowhere")
  _assert_error_writes_nothing(config, tmp_path / "out", match=r"checkpoint .*nowhere does not exist")
  (tmp_path / "empty").mkdir()
  config = tiny_eval_config(tmp_path / "empty")
  _assert_error_writes_nothing(config, tmp_path / "out", match=r"holds no model parameters")


def test_incompatible_model_config_is_one_clear_error_and_writes_nothing(checkpoint_dir, tmp_path):
  config = tiny_eval_config(checkpoint_dir, expected_model="tiny_default")
  _assert_error_writes_nothing(config, tmp_path / "out", match=r"different architecture.*hidden_size")
  small_vocab = tmp_path / "vocab512"
  model_config = get_preset("tiny")  # vocab 512: cannot hold the tiny tokenizer's 2048 ids
  save_params(small_vocab, Qwen3(model_config, rngs=nnx.Rngs(0)), model_config, tokenizer_src=tiny_tokenizer_dir())
  _assert_error_writes_nothing(tiny_eval_config(small_vocab), tmp_path / "out", match=r"2048 tokens .* 512")


def test_bad_dataset_is_found_before_anything_is_written(checkpoint_dir, tmp_path):
  bad = tmp_path / "hotpot.json"
  bad.write_text(json.dumps([{"_id": "x", "question": "q?"}]))
  config = experiment("eval_hotpot", "")
  config.checkpoint = str(checkpoint_dir)
  config.embedder = "hashing"
  config.memory.embed_dim = 64
  config.datasets.hotpotqa.path = str(bad)
  with pytest.raises(ValueError, match=r"hotpot\.json"):
    runner.evaluate(eval_config.eval_config_from_dict(config), tmp_path / "out", devices=jax.devices()[:1],
                    progress=False)
  assert not (tmp_path / "out").exists()


def test_config_boundary_refuses_unknown_keys_and_empty_required_fields(checkpoint_dir):
  full = experiment("eval_hotpot", "")
  full.checkpoint = str(checkpoint_dir)
  with pytest.raises(configlib.ConfigError, match="embedder is empty"):
    eval_config.eval_config_from_dict(full)
  full.embedder = "hashing"
  with pytest.raises(configlib.ConfigError, match=r"datasets.hotpotqa.path is empty"):
    eval_config.eval_config_from_dict(full)
  ablations = experiment("eval_ablations", "tiny")
  ablations.checkpoint = str(checkpoint_dir)
  variants = eval_config.eval_config_from_dict(ablations).variant_configs()
  assert list(variants) == ["atommem", "no_scratchpad", "no_storage", "no_update", "no_delete", "add_only", "k3",
                            "k12", "memagent", "rag", "full_context"]  # the table's row order, not sorted keys
  assert not variants["no_update"][0].allow_update and variants["rag"][0].method == "rag"
  add_only = variants["add_only"][0]
  assert add_only.use_storage and not add_only.allow_update and not add_only.allow_delete
  assert [variants[k][1].top_k for k in ("atommem", "k3", "k12")] == [4, 3, 12]
  full_ablations = experiment("eval_ablations", "")
  full_ablations.update(checkpoint="c", embedder="hashing")
  for name in ("musique", "hotpotqa", "twowiki"):
    full_ablations.datasets[name].path = "f"
  released = eval_config.eval_config_from_dict(full_ablations)
  datasets = released.datasets
  assert [eval_config.dataset_label(n, s) for n, s in datasets.items()] == ["hotpotqa", "2wiki", "musique"]
  # The released evaluation: bundles, whole contexts, released windows and prompt.
  assert all((s.single_question_fraction, s.gold) == (0.5, "all_context") for s in datasets.values())
  assert (released.agent.chunking, released.agent.truncation, released.agent.template_dir) == (
      "released", "middle", "released")
  assert released.variant_configs()["k12"][1].top_k == 12
  long_full = experiment("eval_long", "")
  long_full.update(checkpoint="c", embedder="hashing")
  long_full.datasets.hotpotqa.path = "f"
  long_tiny = experiment("eval_long", "tiny")
  long_tiny.checkpoint = "c"
  for long in (eval_config.eval_config_from_dict(long_full), eval_config.eval_config_from_dict(long_tiny)):
    (spec,) = long.datasets.values()
    assert spec.num_docs == (50, 100, 200, 400, 800, 1600, 3200, 6400) and long.memory.spill == "scann"
  ablations.variants.no_update.agent.allow_updte = False
  with pytest.raises(configlib.ConfigError, match=r"variants.no_update.agent: unknown config key\(s\) \['allow_updte'\]"):
    eval_config.eval_config_from_dict(ablations)


def test_cli_missing_checkpoint(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "atommem_jax.evaluate", "--config", "experiments/eval_hotpot.py:tiny",
       f"--config.checkpoint={tmp_path / 'missing'}", "--workdir", str(tmp_path / "out")],
      capture_output=True, text=True, cwd=REPO, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
  assert result.returncode == 1, result.stderr
  assert f"error: checkpoint {tmp_path / 'missing'} does not exist" in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "out").exists()


def test_summary_is_question_level_with_per_episode_memory_counts():
  from atommem_jax.eval import results
  bundled = results.EpisodeResult(
      variant="atommem", dataset="synthetic", num_docs=8, example_id="a|b", questions=("q1", "q2"),
      answers=(("Paris",), ("the Nile",)), predictions=("\\boxed{paris}", "\\boxed{Nile river}"),
      op_counts={"add_memory": 3, "modify_memory": 1, "final_answer": 2, "invalid": 1}, steps=9, storage_size=3,
      done=True)
  single = results.EpisodeResult(
      variant="atommem", dataset="synthetic", num_docs=8, example_id="c", questions=("q3",), answers=(("1901",),),
      predictions=("",), op_counts={"update_query": 4, "invalid": 3}, steps=14, storage_size=0, done=True)
  other = dataclasses.replace(single, variant="memagent", predictions=("\\boxed{1901}",))
  atommem, memagent = results.summarize([bundled, single, other])
  # EM over the 3 questions: "paris" == "Paris"; "Nile river" != "the Nile" (sub-EM: "nile" in "nile river").
  assert atommem["em"] == pytest.approx(1 / 3) and atommem["sub_em"] == pytest.approx(2 / 3)
  assert atommem["f1"] == pytest.approx((1.0 + 2 * 0.5 * 1.0 / 1.5) / 3)
  assert atommem["ops/add_memory"] == 1.5 and atommem["ops/invalid"] == 2.0 and atommem["ops/update_query"] == 2.0
  assert atommem["steps_per_episode"] == 11.5 and atommem["storage_size"] == 1.5
  assert atommem["answered_fraction"] == pytest.approx(2 / 3)
  assert memagent["em"] == 1.0 and memagent["questions"] == 1
  table = results.score_table([atommem, memagent], "em")
  assert table.splitlines() == ["| variant | synthetic @8 |", "|---|---:|", "| atommem | 33.3 |", "| memagent | 100.0 |"]
  timed = [dataclasses.replace(bundled, seconds=3.0), dataclasses.replace(single, seconds=1.0),
           dataclasses.replace(single, num_docs=64, seconds=5.0)]
  timing = results.timing_rows(timed)
  assert [(r["num_docs"], r["seconds_per_episode"], r["seconds_per_step"]) for r in timing] == [
      (8, 2.0, pytest.approx(4.0 / 23)), (64, 5.0, pytest.approx(5.0 / 14))]
  assert results.time_table(timing).splitlines()[2] == "| atommem | 2.0 (0.174) | 5.0 (0.357) |"
  assert "## Time per episode" in results.markdown_report([atommem], checkpoint="c", timing=timing)
  with pytest.raises(ValueError, match="unknown op kinds"):
    dataclasses.replace(single, op_counts={"create": 1})


def test_embedder_width_must_be_the_memory_width(checkpoint_dir, tmp_path):
  from atommem_jax.checkpoint import export_hf, restore_params
  embedder_dir = tmp_path / "qwen3_embedding"
  model_config, model = restore_params(checkpoint_dir)
  export_hf(model, model_config, embedder_dir)  # an HF dir (config.json + safetensors), hidden size 64
  config = tiny_eval_config(checkpoint_dir, embedder=str(embedder_dir), memory=dict(embed_dim=32))
  _assert_error_writes_nothing(config, tmp_path / "out",
                               match=r"qwen3_embedding has width 64, but memory.embed_dim is 32")


def test_many_synthetic_worlds_give_exactly_the_trainers_held_out_episodes(tmp_path):
  """`synthetic_worlds` builds each world on its own, as the trainer builds its held-out worlds; with the trainer's
  seeds and sizes the evaluation reads the very episodes the trainer reports EM on."""
  from atommem_jax.agent.envs.long_context import Episode
  from atommem_jax.train import task_split
  from atommem_jax.train.config import TrainConfig

  train = configlib.from_dict(TrainConfig, experiment_module("train_base").tiny())
  task_config = dataclasses.replace(train.task, synthetic_worlds=5, num_eval_episodes=12)
  held_out = task_split.split_task(task_config).eval_episodes
  synthetic = dict(num_docs=(task_config.long_context.num_docs,), max_examples=12, seed=task_config.synthetic.seed,
                   synthetic_num_documents=task_config.synthetic.num_documents,
                   synthetic_num_questions=task_config.synthetic.num_questions,
                   synthetic_question_kinds=task_config.synthetic.question_kinds, synthetic_worlds=3)
  config = tiny_eval_config(tmp_path, datasets={"synthetic": synthetic})
  (task,) = runner.prepare_tasks(config)
  assert len(task.examples) == len(held_out) == 12  # three worlds of four questions
  assert tuple(Episode.from_example(e) for e in task.examples) == held_out
  assert len({e.id.split("-")[1] for e in task.examples}) == 3  # ids name their world's seed


def test_synthetic_worlds_is_checked():
  with pytest.raises(configlib.ConfigError, match="synthetic_worlds must be >= 1"):
    tiny_eval_config(pathlib.Path("ckpt"), datasets={"synthetic": dict(synthetic_worlds=0)})


# ---------------------------------------------------------------------------------------------------- web datasets


def test_web_summary_counts_tool_calls_by_name_and_the_judges_pass_rate():
  from atommem_jax.eval import results, web_tasks
  turn = lambda name: type("Turn", (), {"action": None if name is None else {"name": name, "arguments": {}}})
  trajectory = type("T", (), {"turns": [turn("search"), turn("fetch_url"), turn("fetch_url"), turn(None)]})
  assert web_tasks.tool_calls(trajectory) == {"search": 1, "fetch_url": 2}
  first = results.EpisodeResult(
      variant="atommem", dataset="webwalkerqa", num_docs=0, example_id="a", questions=("q1",), answers=(("x",),),
      predictions=("\\boxed{x}",), op_counts={"add_memory": 1}, steps=4, storage_size=1, done=True,
      tool_calls={"search": 1, "fetch_url": 2}, judge_scores=(1.0,))
  second = dataclasses.replace(first, example_id="b", predictions=("",), tool_calls={"search": 3}, steps=6,
                               judge_scores=(0.0,))
  (row,) = results.summarize([first, second])
  assert row["tools/search"] == 2.0 and row["tools/fetch_url"] == 1.0 and row["tools/all"] == 3.0
  assert row["judge"] == 0.5 and row["em"] == 0.5 and row["num_docs"] == 0
  assert results.tool_table([row]).splitlines() == [
      "| variant | dataset | fetch_url | search | all calls | steps |", "|---|---|---:|---:|---:|---:|",
      "| atommem | webwalkerqa | 1.00 | 2.00 | 3.00 | 5.00 |"]
  report = results.markdown_report([row], checkpoint="c")
  assert "| variant | webwalkerqa |" in report and "## Tool calls per episode" in report
  assert "## LLM judge (pass rate)\n\n| variant | webwalkerqa |\n|---|---:|\n| atommem | 50.0 |" in report
  # A long-context row has neither column.
  (plain,) = results.summarize([dataclasses.replace(first, tool_calls=None, judge_scores=None, num_docs=8)])
  assert "tools/all" not in plain and "judge" not in plain


def tiny_web_eval_config(checkpoint: pathlib.Path, judge_url: str = "", **datasets) -> eval_config.EvalConfig:
  config = experiment("eval_web", "tiny")
  config.judge.update(url=judge_url, model="judge" if judge_url else "")
  config.checkpoint = str(checkpoint)
  config.expected_model = ""
  config.tokenizer = "tiny"
  config.datasets = datasets or {"synthetic_web": dict(seed=7, synthetic_worlds=2, synthetic_num_documents=16,
                                                       synthetic_num_questions=1, max_examples=0,
                                                       synthetic_question_kinds=("birth_country",))}
  config.dataset_order = tuple(config.datasets)
  config.agent.web.update(max_steps=2, tool_response_tokens=32)
  config.sampler.update(max_new_tokens=8, prompt_buckets=(512,))
  return eval_config.eval_config_from_dict(config)


def test_synthetic_websites_are_served_and_evaluated_with_web_tables(checkpoint_dir, gs_bucket):
  # Written to gs:// (fsspec's in-memory filesystem): the corpus server reads local files, so the worlds' corpus is
  # served from a local temporary directory and only the results reach the bucket.
  # The judge is asked about answered questions only: the untrained model answers none, so the dead endpoint is
  # never called and the judge column is 0.
  config = tiny_web_eval_config(checkpoint_dir, judge_url="http://127.0.0.1:9/v1")
  runner.evaluate(config, gs_bucket, devices=jax.devices()[:1], progress=False)
  (row,), trajectories = outputs(gs_bucket)
  assert (row["dataset"], row["num_docs"], row["episodes"], row["judge"]) == ("synthetic_web", 0, 2, 0.0)
  assert "tools/all" in row and row["steps_per_episode"] <= 2
  rows = [json.loads(line) for line in trajectories.splitlines()]
  assert [r["episode_id"] for r in rows] == ["synthetic-7-0", "synthetic-8-0"]
  # The readable rows hold each step's observation: the website to start from, and the last step's notice.
  first, last = rows[0]["turns"][0]["observation"], rows[0]["turns"][-1]["observation"]
  assert "Website: https://world7.example" in first and "Step 1 of 2." in first
  assert "this is your last step. The tools are withdrawn" in last
  assert "## Tool calls per episode" in (gs_bucket / "results.md").read_text()
  assert sorted(p.name for p in gs_bucket.iterdir()) == ["results.json", "results.md", "trajectories.jsonl"]


def test_a_native_web_dataset_without_tools_is_one_clear_error_and_writes_nothing(checkpoint_dir, tmp_path):
  questions = tmp_path / "questions.jsonl"
  questions.write_text(json.dumps({"question": "q?", "answers": ["a"]}) + "\n")
  config = tiny_web_eval_config(checkpoint_dir, plain=dict(format="web_plain", path=str(questions), max_examples=0))
  _assert_error_writes_nothing(config, tmp_path / "out", "dataset plain \\(web_plain\\) needs its tools")
  raw = experiment("eval_web", "tiny")
  raw.checkpoint = "ckpt"
  raw.judge.url = "http://127.0.0.1:9/v1"
  with pytest.raises(configlib.ConfigError, match="judge.model is empty"):
    eval_config.eval_config_from_dict(raw)


def test_the_device_engine_is_refused_for_a_web_dataset_before_anything_is_written(checkpoint_dir, tmp_path):
  from atommem_jax.rollout_engine import RolloutEngineConfig
  config = dataclasses.replace(tiny_web_eval_config(checkpoint_dir), rollout=RolloutEngineConfig(engine="device"))
  _assert_error_writes_nothing(config, tmp_path / "out", match=r"rollout.engine='device'.*agent.env='web'")
