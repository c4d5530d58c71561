"""Shared test set-up: 8 simulated CPU devices, set before jax is imported anywhere; property tests draw the same
examples on every run (`HYPOTHESIS_PROFILE=explore` draws fresh ones)."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402

import pytest  # noqa: E402
from etils import epath  # noqa: E402
from fsspec.implementations.memory import MemoryFileSystem  # noqa: E402
from hypothesis import settings  # noqa: E402  (after the environment above)

settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


class GsMemory(MemoryFileSystem):
  """`gs://` served by fsspec's in-memory filesystem: a non-local filesystem that needs no network."""
  protocol = ("gs", "gcs")

  @classmethod
  def _strip_protocol(cls, path):
    path = str(path)
    for prefix in ("gs://", "gcs://"):
      path = path.removeprefix(prefix)
    return MemoryFileSystem._strip_protocol(path)


@pytest.fixture
def gs_bucket(monkeypatch):
  """`gs://test-bucket/run` (through etils.epath) on the in-memory filesystem, emptied after the test."""
  registry = sys.modules["fsspec.registry"]._registry  # pylint: disable=protected-access
  for name in GsMemory.protocol:
    monkeypatch.setitem(registry, name, GsMemory)  # restored after the test
  yield epath.Path("gs://test-bucket/run")
  fs = GsMemory()
  if fs.exists("/test-bucket"):
    fs.rm("/test-bucket", recursive=True)
