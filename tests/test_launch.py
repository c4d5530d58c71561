"""Launch scripts: the dry-run output holds the commands a pod / node / sweep needs, and failures stop a launch."""
import re
import shlex
import subprocess
import sys

import pytest

from launch import commands, gpu_node, sweep, tpu_vm

TPU = ["--name", "atom-pod", "--zone", "us-central2-b", "--project", "proj"]


def dry_run(main, argv, capsys) -> list[str]:
  main([*argv, "--dry_run"])
  return capsys.readouterr().out.strip().splitlines()


def test_tpu_create_names_slice_runtime_and_spot(capsys):
  (line,) = dry_run(tpu_vm.main, ["create", *TPU, "--accelerator_type", "v4-32", "--spot"], capsys)
  assert line.startswith("gcloud compute tpus tpu-vm create atom-pod ")
  for part in ("--zone=us-central2-b", "--project=proj", "--accelerator-type=v4-32",
               f"--version={tpu_vm.DEFAULT_RUNTIME}", "--spot"):
    assert part in shlex.split(line)


def test_tpu_setup_ships_code_and_installs_pinned_jax_tpu_on_every_worker(capsys):
  archive, scp, ssh = dry_run(tpu_vm.main, ["setup", *TPU], capsys)
  assert shlex.split(archive)[:2] == ["git", "-C"] and "archive" in archive and archive.endswith("HEAD")
  scp_argv = shlex.split(scp)
  assert scp_argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp_argv
  ssh_argv = shlex.split(ssh)
  assert ssh_argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "atom-pod"] and "--worker=all" in ssh_argv
  remote = next(a for a in ssh_argv if a.startswith("--command=")).removeprefix("--command=")
  assert "cd ~/atommem_jax && ~/venv/bin/pip install -q -U pip && ~/venv/bin/pip install -q -e '.[tpu]'" in remote
  assert re.search(r'"tpu": \["jax\[tpu\]==', (commands.REPO_ROOT / "setup.py").read_text())
  assert "python3.11 -m venv" in remote


def test_tpu_run_sends_same_multihost_command_to_all_workers(capsys):
  (line,) = dry_run(tpu_vm.main, ["run", *TPU, "--module", "train", "--config", "experiments/grpo_hotpot.py:tiny",
                                  "--workdir", "gs://bucket/run1", "--config.total_steps=7"], capsys)
  argv = shlex.split(line)
  assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "atom-pod"]
  assert "--worker=all" in argv
  remote = shlex.split(next(a for a in argv if a.startswith("--command=")).removeprefix("--command="))
  assert remote[:3] == ["cd", "~/atommem_jax", "&&"] and "JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache" in remote
  entry = remote[remote.index("-m"):]
  assert entry == ["-m", "atommem_jax.train", "--config", "experiments/grpo_hotpot.py:tiny",
                   "--workdir", "gs://bucket/run1", "--distributed", "--config.total_steps=7"]


def test_tpu_run_background_and_evaluate(capsys):
  (line,) = dry_run(tpu_vm.main, ["run", *TPU, "--module", "evaluate", "--config", "experiments/eval_hotpot.py",
                                  "--workdir", "gs://b/e", "--background"], capsys)
  assert "nohup" in line and "-m atommem_jax.evaluate" in line and "> ~/logs/evaluate.log 2>&1 &" in line


def test_tpu_delete(capsys):
  (line,) = dry_run(tpu_vm.main, ["delete", *TPU], capsys)
  assert line.startswith("gcloud compute tpus tpu-vm delete atom-pod ") and "--quiet" in line


def test_unknown_flag_is_refused_not_dropped():
  with pytest.raises(SystemExit, match=r"--confg\.total_steps=3"):
    tpu_vm.main(["run", *TPU, "--config", "c.py", "--workdir", "w", "--confg.total_steps=3", "--dry_run"])


def test_gpu_node_setup_local_and_remote(capsys):
  lines = dry_run(gpu_node.main, ["setup"], capsys)
  assert shlex.split(lines[2]) == [".venv-gpu/bin/pip", "install", "-q", "-e", f"{commands.REPO_ROOT}[gpu]"]
  assert re.search(r'"gpu": \["jax\[cuda12\]==', (commands.REPO_ROOT / "setup.py").read_text())
  rsync, ssh = dry_run(gpu_node.main, ["setup", "--host", "me@gpu7"], capsys)
  assert rsync.startswith("rsync ") and rsync.endswith("me@gpu7:atommem_jax/") and "--exclude=.git" in rsync
  ssh_argv = shlex.split(ssh)
  assert ssh_argv[:2] == ["ssh", "me@gpu7"] and "pip install -q -e '.[gpu]'" in ssh_argv[2]


def test_gpu_node_run_evaluate(capsys):
  (line,) = dry_run(gpu_node.main, ["run", "--module", "evaluate", "--config", "experiments/eval_hotpot.py:tiny",
                                    "--workdir", "out", "--gpus", "0,1", "--config.checkpoint=/ckpt"], capsys)
  assert shlex.split(line) == ["env", "CUDA_VISIBLE_DEVICES=0,1", ".venv-gpu/bin/python", "-m", "atommem_jax.evaluate",
                               "--config", "experiments/eval_hotpot.py:tiny", "--workdir", "out",
                               "--config.checkpoint=/ckpt"]


def test_sweep_expands_grid_into_one_command_per_point(capsys):
  lines = dry_run(sweep.main, ["--config", "experiments/grpo_hotpot.py:tiny", "--workdir_root", "runs/sw",
                               "--grid", "train.learning_rate=1e-6,3e-6", "--grid=--config.agent.top_k=4,6,8",
                               "--config.total_steps=5", "--python", "python"], capsys)
  assert len(lines) == 6
  points = set()
  for line in lines:
    argv = shlex.split(line)
    assert argv[:3] == ["python", "-m", "atommem_jax.train"] and "--config.total_steps=5" in argv
    lr = next(a for a in argv if a.startswith("--config.train.learning_rate=")).split("=")[1]
    k = next(a for a in argv if a.startswith("--config.agent.top_k=")).split("=")[1]
    assert argv[argv.index("--workdir") + 1] == f"runs/sw/train.learning_rate={lr},agent.top_k={k}"
    points.add((lr, k))
  assert points == {(lr, k) for lr in ("1e-6", "3e-6") for k in ("4", "6", "8")}


def test_sweep_on_tpu_runs_each_point_on_all_workers(capsys):
  lines = dry_run(sweep.main, ["--launcher", "tpu_vm", *TPU, "--module", "evaluate", "--config",
                               "experiments/eval_ablations.py", "--workdir_root", "gs://b/abl",
                               "--grid", "agent.top_k=2,6"], capsys)
  assert len(lines) == 2
  for line, k in zip(lines, ("2", "6")):
    assert "--worker=all" in line
    assert f"--workdir gs://b/abl/agent.top_k={k} --distributed --config.agent.top_k={k}" in line


def test_sweep_bad_grid_and_unknown_launcher_flag():
  with pytest.raises(SystemExit, match="KEY=V1,V2"):
    sweep.main(["--config", "c", "--workdir_root", "r", "--grid", "novalues", "--dry_run"])
  with pytest.raises(SystemExit, match="twice"):
    sweep.main(["--config", "c", "--workdir_root", "r", "--grid", "a=1", "--grid", "a=2", "--dry_run"])
  with pytest.raises(SystemExit, match="--host"):
    sweep.main(["--config", "c", "--workdir_root", "r", "--host", "x", "--dry_run"])


def test_sweep_really_runs_points_and_stops_or_keeps_going(tmp_path):
  # `true`/`false` stand in for the interpreter: the launcher's own control flow is what is under test.
  sweep.main(["--config", "c", "--workdir_root", str(tmp_path), "--grid", "a=1,2", "--python", "true"])
  with pytest.raises(SystemExit, match="exit status 1"):
    sweep.main(["--config", "c", "--workdir_root", str(tmp_path), "--grid", "a=1,2", "--python", "false"])
  with pytest.raises(SystemExit, match="2 point"):
    sweep.main(["--config", "c", "--workdir_root", str(tmp_path), "--grid", "a=1,2", "--python", "false",
                "--keep_going"])


def test_module_entry_point_runs_as_a_script():
  result = subprocess.run([sys.executable, "-m", "launch.tpu_vm", "delete", *TPU, "--dry_run"],
                          capture_output=True, text=True, cwd=commands.REPO_ROOT, check=True)
  assert "tpu-vm delete atom-pod" in result.stdout
