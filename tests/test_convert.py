"""`python -m atommem_jax.convert`: both directions, no partial output, no overwrite."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from atommem_jax.checkpoint import CheckpointError, is_orbax_params_dir, load_config
from atommem_jax.convert import convert
from hf_fixtures import make_tiny_hf_checkpoint


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("hf")
  make_tiny_hf_checkpoint(path, tied=False, rope_theta=31_415.0)
  (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))
  return path


def siblings(directory):
  return sorted(p.name for p in directory.iterdir())


def test_cli_converts_hf_to_orbax(hf_dir, tmp_path):
  dst = tmp_path / "orbax"
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  result = subprocess.run([sys.executable, "-m", "atommem_jax.convert", f"--src={hf_dir}", f"--dst={dst}"],
                          capture_output=True, text=True, env=env, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "hf->orbax" in result.stdout
  assert is_orbax_params_dir(dst) and (dst / "tokenizer_config.json").is_file()
  config = load_config(dst)
  assert (config.rope_theta, config.tie_word_embeddings) == (31_415.0, False)
  assert siblings(tmp_path) == ["orbax"]


def test_orbax_to_hf_and_back_preserves_every_tensor(hf_dir, tmp_path):
  assert convert(hf_dir, tmp_path / "orbax") == "hf->orbax"
  (tmp_path / "hf").mkdir()  # an existing empty destination is fine
  assert convert(tmp_path / "orbax", tmp_path / "hf") == "orbax->hf"
  original, converted = load_file(hf_dir / "model.safetensors"), load_file(tmp_path / "hf" / "model.safetensors")
  assert sorted(original) == sorted(converted)
  for name in original:
    assert original[name].tobytes() == converted[name].tobytes(), name
  assert json.loads((tmp_path / "hf" / "config.json").read_text())["rope_parameters"]["rope_theta"] == 31_415.0
  assert (tmp_path / "hf" / "tokenizer_config.json").is_file()
  assert siblings(tmp_path) == ["hf", "orbax"]


def test_cast_to_bfloat16_on_conversion(hf_dir, tmp_path):
  convert(hf_dir, tmp_path / "bf16", dtype="bfloat16")
  assert load_config(tmp_path / "bf16").param_dtype == "bfloat16"
  convert(tmp_path / "bf16", tmp_path / "hf")
  tensors = load_file(tmp_path / "hf" / "model.safetensors")
  original = load_file(hf_dir / "model.safetensors")
  assert tensors["lm_head.weight"].dtype.name == "bfloat16"
  np.testing.assert_allclose(tensors["lm_head.weight"].astype(np.float32), original["lm_head.weight"], rtol=1e-2)


def test_failure_leaves_no_partial_output(hf_dir, tmp_path):
  broken = tmp_path / "broken"
  broken.mkdir()
  for file in hf_dir.iterdir():
    (broken / file.name).write_bytes(file.read_bytes())
  config = json.loads((broken / "config.json").read_text())
  (broken / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
  with pytest.raises(CheckpointError, match=r"missing tensor 'model\.layers\.2\."):
    convert(broken, tmp_path / "out")
  assert siblings(tmp_path) == ["broken"]


def test_refuses_non_empty_destination_and_unknown_sources(hf_dir, tmp_path):
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "keep.txt").write_text("precious")
  with pytest.raises(FileExistsError, match="taken"):
    convert(hf_dir, tmp_path / "taken")
  assert (tmp_path / "taken" / "keep.txt").read_text() == "precious"
  (tmp_path / "junk").mkdir()
  with pytest.raises(FileNotFoundError, match="neither an Orbax"):
    convert(tmp_path / "junk", tmp_path / "out")
  assert siblings(tmp_path) == ["junk", "taken"]
