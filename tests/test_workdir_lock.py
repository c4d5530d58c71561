"""One run per workdir: a live holder refuses a second process by name; a dead one's lock is broken; another host's
lock is never broken silently; the processes of one jax.distributed job share it."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from atommem_jax import workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _hold_in_child(workdir):
  """A live process holding `workdir` until its stdin closes."""
  code = textwrap.dedent(f"""
      import sys
      from atommem_jax import workdir_lock
      lock = workdir_lock.acquire({str(workdir)!r})
      print("held", flush=True)
      sys.stdin.read()
      """)
  child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                           env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
  assert child.stdout.readline().strip() == "held"
  return child


def test_a_second_process_is_refused_by_name_while_the_holder_lives(tmp_path):
  child = _hold_in_child(tmp_path)
  try:
    with pytest.raises(workdir_lock.WorkdirInUseError, match=rf"is in use by pid {child.pid} on host "):
      workdir_lock.acquire(tmp_path)
  finally:
    child.stdin.close()
    child.wait(timeout=60)
  # The holder released it on exit: the workdir is free again.
  assert not (tmp_path / workdir_lock.LOCK_FILE).exists()
  workdir_lock.acquire(tmp_path).release()


def test_a_killed_holder_leaves_a_stale_lock_that_is_broken(tmp_path, caplog):
  child = _hold_in_child(tmp_path)
  child.kill()
  child.wait(timeout=60)
  holder = json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())
  assert holder["pid"] == child.pid and holder["host"] == socket.gethostname()
  lock = workdir_lock.acquire(tmp_path)
  assert f"broke a stale lock of pid {child.pid}" in caplog.text
  assert json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())["pid"] == os.getpid()
  lock.release()
  assert not (tmp_path / workdir_lock.LOCK_FILE).exists()


def test_a_reused_pid_is_not_the_holder(tmp_path):
  record = dict(workdir_lock.this_process(), pid_started=12.0)  # this pid, but a process started long ago
  assert workdir_lock.holder_is_gone(dict(record, pid=os.getppid()))
  assert not workdir_lock.holder_is_gone(workdir_lock.this_process())


def test_another_hosts_lock_is_refused_with_the_way_to_break_it(tmp_path):
  lock_file = tmp_path / workdir_lock.LOCK_FILE
  lock_file.write_text(json.dumps({"host": "node-7", "pid": 4242, "started_at": "2026-01-01T00:00:00+00:00",
                                   "command": "python -m atommem_jax.train"}))
  with pytest.raises(workdir_lock.WorkdirInUseError) as error:
    workdir_lock.acquire(tmp_path)
  message = str(error.value)
  assert "in use by pid 4242 on host node-7 (started 2026-01-01T00:00:00+00:00" in message
  assert f"delete {lock_file}" in message
  lock_file.unlink()  # the documented way to break it
  workdir_lock.acquire(tmp_path).release()


def test_object_store_paths_check_then_write(tmp_path, monkeypatch, caplog):
  # epath has no exclusive create; the same code path runs on a local directory with the check forced off.
  monkeypatch.setattr(workdir_lock, "_is_local", lambda path: False)
  lock = workdir_lock.acquire(tmp_path)
  assert "checked, then written" in caplog.text
  assert json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())["pid"] == os.getpid()
  (tmp_path / workdir_lock.LOCK_FILE).write_text(json.dumps({"host": "node-7", "pid": 1, "started_at": "x"}))
  with pytest.raises(workdir_lock.WorkdirInUseError, match="in use by pid 1 on host node-7"):
    workdir_lock.WorkdirLock(tmp_path).acquire()
  lock.release()  # not ours any more: left in place
  assert (tmp_path / workdir_lock.LOCK_FILE).exists()


_JOB_WORKER = """
import sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"localhost:{sys.argv[1]}", num_processes=2,
                           process_id=int(sys.argv[2]))
from atommem_jax import workdir_lock
try:
  lock = workdir_lock.acquire_for_job(sys.argv[3])
  print("locked", flush=True)
  sys.stdin.read()
  lock.release()
except workdir_lock.WorkdirInUseError as e:
  print("refused:", e, flush=True)
jax.distributed.shutdown()
"""


def _job(port, workdir):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return [subprocess.Popen([sys.executable, "-c", _JOB_WORKER, str(port), str(i), str(workdir)], env=env,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
          for i in range(2)]


def _answer(process):
  for line in process.stdout:  # gloo prints its own lines on stdout too
    if line.startswith(("locked", "refused:")):
      return line.strip()
  return None


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow  # four jax.distributed processes
def test_the_processes_of_one_job_share_it_and_a_second_job_is_refused(tmp_path):
  first = _job(_free_port(), tmp_path)
  try:
    assert [_answer(p) for p in first] == ["locked", "locked"]
    second = _job(_free_port(), tmp_path)
    answers = [_answer(p) for p in second]
    for p in second:
      p.wait(timeout=240)
    assert all(a and a.startswith("refused:") and "in use" in a for a in answers), answers
    assert f"pid {first[0].pid}" in answers[0]  # process 0 names the holder; the others point to it
  finally:
    for p in first:
      p.stdin.close()
    for p in first:
      p.wait(timeout=240)
  assert not (tmp_path / workdir_lock.LOCK_FILE).exists()
