"""The ahead-of-time fit check: slice names, its exit statuses and JSON, and the compiler's verdicts for real TPU
topologies (libtpu, from the `aot` and `test` extras, compiles for them on this CPU host)."""
from __future__ import annotations

import importlib.util
import json

import pytest

from atommem_jax.aot import topology
from atommem_jax.aot.__main__ import run

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed: the TPU compiler comes with `pip install -e \".[test]\"` (or \".[aot]\")")

RELEASED = "experiments/grpo_hotpot.py"


def test_slice_names_as_users_say_them():
  assert (topology.parse("v5p-8").chips, topology.parse("v5p-8").compiler_name) == (4, "v5:2x2x1")
  assert topology.parse("v5p-16").compiler_name == "v5:2x2x2"
  assert topology.parse("v5p-64").compiler_name == "v5:2x4x4"
  assert (topology.parse("v5e-4").compiler_name, topology.parse("v5e-16").compiler_name) == ("v5e:2x2", "v5e:4x4")
  assert topology.parse("v5litepod-16") == topology.parse("v5e-16")
  assert (topology.parse("v6e-64").chips, topology.parse("v6e-64").compiler_name) == (64, "v6e:8x8")
  assert topology.parse("V4-8").chip_config == "megacore" and topology.parse("v6e-16").chip_config == "default"
  assert topology.parse("v5e-4").hbm_bytes_per_chip == 16 * 2**30
  for bad, why in (("v7-8", "unknown TPU topology"), ("v5p-9", "two per chip"), ("v5e-12", "no v5e slice"),
                   ("tpu", "unknown TPU topology")):
    with pytest.raises(topology.TopologyError, match=why):
      topology.parse(bad)


def test_bad_topology_config_or_mesh_exit_2_with_one_line(capsys):
  assert run(["aot", "--config", RELEASED, "--topology", "v7-8"]) == 2
  assert "unknown TPU topology 'v7-8'" in capsys.readouterr().err
  assert run(["aot", "--config", RELEASED, "--topology", "v5p-8", "--config.mesh.fsdp=8"]) == 2
  err = capsys.readouterr().err
  assert "8 devices but the topology has 4 chips" in err and "Traceback" not in err
  assert run(["aot", "--config", f"{RELEASED}:nope", "--topology", "v5p-8"]) == 2
  err = capsys.readouterr().err
  assert "unknown config argument 'nope'" in err and len(err.strip().splitlines()) == 1
  assert run(["aot", "--config", RELEASED, "--topology", "v5p-8", "--config.model.atention=dense"]) == 2
  assert capsys.readouterr().err.startswith("error: --config.model.atention: unknown config key 'model.atention'; "
                                            "nearest known keys: model.attention, ")
  assert run(["aot", "--config", "experiments/nope.py", "--topology", "v5p-8"]) == 2
  assert capsys.readouterr().err == "error: --config: experiment file experiments/nope.py does not exist\n"
  assert run(["aot", "--config", RELEASED, "--topology", "v5p-8", "--config.model.preset=qwen3_70b"]) == 2
  assert "qwen3_70b" in capsys.readouterr().err
  # A mesh that fits the slice but not the batch: micro-batch rows must split over data x fsdp.
  assert run(["aot", "--config", RELEASED, "--topology", "v5p-16", "--config.grpo.microbatch_rows=4"]) == 2
  assert "microbatch_rows" in capsys.readouterr().err


@needs_libtpu
def test_released_train_step_does_not_fit_v5e_4(capsys):
  """Qwen3-8B's GRPO update on 4 chips of 16 GiB: the compiler's out-of-memory verdict, with per-chip figures."""
  assert run(["aot", "--config", RELEASED, "--topology", "v5e-4", "--program", "train_step", "--json"]) == 3
  out = capsys.readouterr().out
  report = json.loads(out.strip().splitlines()[-1])
  assert report["topology"] == "v5e-4" and report["hbm_bytes_per_chip"] == 16 * 2**30 and report["fits"] is False
  train = report["programs"]["train_step"]
  assert set(train) == {"argument_bytes", "temp_bytes", "peak_bytes", "fits"} and train["fits"] is False
  # fp32 master weights, Adam moments, the reference copy and the batch, fsdp over 4 chips: about 30 GiB a chip.
  assert train["argument_bytes"] > 25 * 2**30 and train["peak_bytes"] > 16 * 2**30
  assert "does not fit" in out


@needs_libtpu
@pytest.mark.slow
def test_tiny_config_fits_v5e_4_with_every_program(capsys):
  """All three programs of the embedded default compile for v5e-4 (splash attention, fsdp over 4 chips)."""
  assert run(["aot", "--config", "experiments/grpo_hotpot.py:tiny", "--topology", "v5e-4", "--json"]) == 0
  out = capsys.readouterr().out
  report = json.loads(out.strip().splitlines()[-1])
  assert report["fits"] is True and set(report["programs"]) == {"train_step", "prefill", "decode"}
  for figures in report["programs"].values():
    assert figures["fits"] and 0 < figures["argument_bytes"] <= figures["peak_bytes"] < report["hbm_bytes_per_chip"]
  assert "attention splash (auto)" in out and "mesh data=1 fsdp=4 tensor=1" in out


@needs_libtpu
@pytest.mark.slow
def test_released_config_fits_v5p_8(capsys):
  """The acceptance check: Qwen3-8B, prompt buckets up to 16K, 4K new tokens, on v5p-8 (minutes of compiling)."""
  assert run(["aot", "--config", RELEASED, "--topology", "v5p-8", "--json"]) == 0
  report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert report["fits"] and all(p["peak_bytes"] < report["hbm_bytes_per_chip"] for p in report["programs"].values())
