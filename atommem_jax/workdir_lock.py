"""One run per workdir: a lock file naming its holder, so a second process is refused instead of doubling the run.

`WORKDIR/workdir.lock` is created exclusively (a hard link of a complete file, atomic on NFS too; `O_EXCL` where
there are no links) and holds one JSON object: `host`, `pid`,
`pid_started` (the process's start time, seconds since the epoch, so a reused pid is not mistaken for the holder),
`boot_id` (Linux: a reboot ends every holder), `pid_namespace`, `started_at` (ISO time) and `command`. A process that finds it:
- on the same host, with the holder alive: refused, `WorkdirInUseError` naming the holder ("... is in use ...");
- on the same host, with the holder gone (killed, crashed, rebooted): breaks the stale lock, with a warning naming
  the old holder, and takes it;
- on another host or in another pid namespace (a shared filesystem, containers: liveness cannot be checked):
  refused, naming the holder; if that run
  is no longer running, delete the lock file (`rm WORKDIR/workdir.lock`) and start again. That is the documented
  way to break a stale lock.

The lock is released when the holder finishes (`release`, or at interpreter exit), with the workdir itself if the
lock created it and nothing else was written there; a SIGKILL leaves the lock, stale.
A multi-process job (`jax.distributed`) shares it: `acquire_for_job` takes it on process 0 only and tells every
process the verdict, so all of them stop together when the workdir is in use.

Paths with a scheme (`gs://...`) go through `etils.epath`, which has no exclusive create: the lock there is
checked-then-written, which refuses a run started while another holds it but not two started within the same
moment; a warning says so.
"""
from __future__ import annotations

import atexit
import datetime
import json
import os
import pathlib
import socket
import sys
import time
from typing import Any

from absl import logging

LOCK_FILE = "workdir.lock"


class WorkdirInUseError(OSError):
  """The workdir is held by another live process (the message names it and how to break a stale lock)."""


def _boot_id() -> str:
  try:
    return pathlib.Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
  except OSError:
    return ""


def _pid_namespace() -> str:
  """Which pid numbering this process sees (containers on one host may share a host name, not their pids)."""
  try:
    return os.readlink("/proc/self/ns/pid")
  except OSError:
    return ""


def _process_started(pid: int) -> float | None:
  """The start time of process `pid` (seconds since the epoch), or None if there is no such process."""
  import psutil  # pylint: disable=g-import-not-at-top
  try:
    return psutil.Process(pid).create_time()
  except (psutil.NoSuchProcess, psutil.ZombieProcess):
    return None
  except psutil.AccessDenied:
    return -1.0  # alive, start time unknown


def this_process() -> dict[str, Any]:
  return {"host": socket.gethostname(), "pid": os.getpid(), "pid_started": _process_started(os.getpid()),
          "boot_id": _boot_id(), "pid_namespace": _pid_namespace(), "started_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
          "command": " ".join(sys.orig_argv)[:500]}


def describe(holder: dict[str, Any]) -> str:
  return (f"pid {holder.get('pid')} on host {holder.get('host')} (started {holder.get('started_at')}: "
          f"{holder.get('command') or 'unknown command'})")


def holder_is_gone(holder: dict[str, Any]) -> bool:
  """True only when the holder provably no longer runs: same host, and a reboot since, or no process with its pid
  and start time. A holder on another host (or in another container's pid namespace) is never judged gone."""
  if holder.get("host") != socket.gethostname():
    return False
  if holder.get("boot_id") and _boot_id() and holder["boot_id"] != _boot_id():
    return True
  if holder.get("pid_namespace", "") != _pid_namespace():
    return False
  pid = holder.get("pid")
  if not isinstance(pid, int):
    return False
  started = _process_started(pid)
  if started is None:
    return True
  recorded = holder.get("pid_started")
  return isinstance(recorded, (int, float)) and started >= 0 and abs(started - recorded) > 1.0


def _is_local(path: str) -> bool:
  return "://" not in path


class WorkdirLock:
  """The held lock of one workdir; `release` (also run at interpreter exit) removes it if it is still ours."""

  def __init__(self, workdir: str | os.PathLike):
    self.workdir = os.fspath(workdir)
    self.path = f"{self.workdir.rstrip('/')}/{LOCK_FILE}"
    self.record = this_process()
    self.held = False
    self._created_workdir = False

  # ---- local filesystems: exclusive create

  def _create_local(self) -> bool:
    """Creates the lock file holding our record, or returns False if it exists. The record is written beside it and
    hard-linked into place, so the lock file is never seen half-written (O_EXCL where links are not supported)."""
    staging = f"{self.path}.{os.getpid()}.tmp"
    with open(staging, "w", encoding="utf-8") as f:
      f.write(json.dumps(self.record) + "\n")
      f.flush()
      os.fsync(f.fileno())
    try:
      os.link(staging, self.path)
      return True
    except FileExistsError:
      return False
    except OSError:  # no hard links here
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        return False
      with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(self.record) + "\n")
      return True
    finally:
      os.unlink(staging)

  def _read(self) -> dict[str, Any] | None:
    """The holder's record; {} for an unreadable one (a holder cut short while writing), None if there is none."""
    try:
      text = self._path().read_text(encoding="utf-8") if not _is_local(self.path) else pathlib.Path(
          self.path).read_text(encoding="utf-8")
    except FileNotFoundError:
      return None
    except (OSError, UnicodeDecodeError):
      return {}
    try:
      holder = json.loads(text)
    except json.JSONDecodeError:
      return {}
    return holder if isinstance(holder, dict) else {}

  def _break_local(self, holder: dict[str, Any]) -> None:
    # Renaming first means two processes breaking the same stale lock cannot both succeed.
    aside = f"{self.path}.stale-{os.getpid()}"
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return
    os.unlink(aside)
    logging.warning("%s: broke a stale lock of %s, which no longer runs", self.path, describe(holder))

  def _refuse(self, holder: dict[str, Any]) -> WorkdirInUseError:
    if not holder:
      return WorkdirInUseError(
          f"workdir {self.workdir} is in use: its lock {self.path} cannot be read (a holder may be writing it); if "
          f"no run uses this workdir, delete that file and start again")
    how = ("wait for it to finish or stop it" if holder.get("host") == socket.gethostname() else
           f"if it is no longer running (its host cannot be checked from here), delete {self.path} and start again")
    return WorkdirInUseError(f"workdir {self.workdir} is in use by {describe(holder)}; {how}")

  def acquire(self) -> "WorkdirLock":
    if not _is_local(self.path):
      return self._acquire_remote()
    self._created_workdir = not os.path.exists(self.workdir)
    os.makedirs(self.workdir, exist_ok=True)
    for _ in range(3):
      if self._create_local():
        self._held()
        return self
      holder = self._read()
      if holder is None:
        continue  # released meanwhile
      if holder.get("host") == self.record["host"] and holder.get("pid") == self.record["pid"]:
        self._held()  # this very process holds it already (an earlier run in the same interpreter)
        return self
      if not holder or not holder_is_gone(holder):
        if not holder and time.time() - os.path.getmtime(self.path) < 10:
          time.sleep(1)  # a holder that is still writing its record
          continue
        raise self._refuse(holder)
      self._break_local(holder)
    raise self._refuse(self._read() or {})

  # ---- object stores (gs:// etc.) through etils.epath: no exclusive create

  def _path(self):
    from etils import epath  # pylint: disable=g-import-not-at-top
    return epath.Path(self.path)

  def _acquire_remote(self) -> "WorkdirLock":
    logging.warning("%s: a lock on an object store is checked, then written: it refuses a run started while another "
                    "holds it, but not two started at the same moment", self.path)
    holder = self._read()
    if holder is not None and not (holder.get("host") == self.record["host"] and holder.get("pid") ==
                                   self.record["pid"]):
      raise self._refuse(holder)
    self._path().parent.mkdir(parents=True, exist_ok=True)
    self._path().write_text(json.dumps(self.record) + "\n")
    if self._read() != self.record:  # another run wrote in between: it keeps the lock
      raise self._refuse(self._read() or {})
    self._held()
    return self

  # ---- release

  def _held(self) -> None:
    self.held = True
    atexit.register(self.release)

  def release(self) -> None:
    if not self.held:
      return
    self.held = False
    atexit.unregister(self.release)
    holder = self._read()
    if holder and holder.get("host") == self.record["host"] and holder.get("pid") == self.record["pid"]:
      try:
        if _is_local(self.path):
          os.unlink(self.path)
        else:
          self._path().unlink()
      except FileNotFoundError:
        pass
    if self._created_workdir:  # a command that wrote nothing leaves no empty workdir behind
      try:
        os.rmdir(self.workdir)
      except OSError:
        pass

  def __enter__(self) -> "WorkdirLock":
    return self.acquire() if not self.held else self

  def __exit__(self, *exc_info) -> None:
    self.release()


def acquire(workdir: str | os.PathLike) -> WorkdirLock:
  """Locks `workdir` for this process, or raises `WorkdirInUseError` naming the holder."""
  return WorkdirLock(workdir).acquire()


class _Shared:
  """A process other than 0 of a multi-process job: process 0 holds the lock for all of them."""

  held = True

  def release(self) -> None:
    pass


def acquire_for_job(workdir: str | os.PathLike) -> WorkdirLock | _Shared:
  """`acquire` for a (possibly multi-process) JAX job: process 0 locks, and every process learns whether it could."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return acquire(workdir)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  lock, error = None, None
  if jax.process_index() == 0:
    try:
      lock = acquire(workdir)
    except WorkdirInUseError as e:
      error = e
  locked = bool(multihost_utils.broadcast_one_to_all(np.int32(lock is not None)))
  if error is not None:
    raise error
  if not locked:
    raise WorkdirInUseError(f"workdir {os.fspath(workdir)} is in use: process 0 of this job could not lock it "
                            f"(its log names the holder)")
  return lock if lock is not None else _Shared()
