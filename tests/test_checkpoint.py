"""HF safetensors load/export and Orbax parameter save/restore, against checkpoints transformers writes itself."""
from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from atommem_jax import configlib, sharding
from atommem_jax.checkpoint import CheckpointError, export_hf, load_hf, restore_params, save_params
from hf_fixtures import make_tiny_hf_checkpoint


def flat_params(model) -> dict[str, np.ndarray]:
  return {"/".join(map(str, path)): np.asarray(value)
          for path, value in jax.tree_util.tree_flatten_with_path(nnx.state(model).to_pure_dict())[0]
          for path in [[k.key for k in path]]}


def write_tokenizer(directory) -> Tokenizer:
  tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
  tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
  tokenizer.train_from_iterator(["memory entries are created, read, updated and deleted"] * 4,
                                trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>"]))
  tokenizer.save(str(directory / "tokenizer.json"))
  (directory / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
  return tokenizer


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("hf_fp32")
  reference = make_tiny_hf_checkpoint(path, tied=True, rope_theta=23_456.0)
  write_tokenizer(path)
  return path, reference


@pytest.fixture(scope="module")
def untied_bf16_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("hf_bf16")
  reference = make_tiny_hf_checkpoint(tmp_path_factory.mktemp("scratch"), tied=False, seed=5)
  reference.to(torch.bfloat16).save_pretrained(str(path))
  return path, reference


@pytest.fixture(scope="module")
def mesh():
  return sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))


def logits_of(reference, tokens) -> np.ndarray:
  with torch.no_grad():
    return reference(input_ids=torch.tensor(tokens)).logits.float().numpy()


@pytest.mark.parametrize("which", ["hf_dir", "untied_bf16_dir"])
def test_hf_round_trip_is_byte_equal_and_loads_in_transformers(which, request, tmp_path):
  from transformers import Qwen3ForCausalLM
  src, reference = request.getfixturevalue(which)
  config, model = load_hf(src)
  export_hf(model, config, tmp_path, tokenizer_src=src)
  original, exported = load_file(src / "model.safetensors"), load_file(tmp_path / "model.safetensors")
  assert sorted(original) == sorted(exported)
  for name in original:
    assert original[name].dtype == exported[name].dtype and original[name].shape == exported[name].shape, name
    assert original[name].tobytes() == exported[name].tobytes(), name
  reloaded = Qwen3ForCausalLM.from_pretrained(str(tmp_path)).eval()
  assert reloaded.config.rope_parameters["rope_theta"] == config.rope_theta
  tokens = np.random.default_rng(0).integers(0, config.vocab_size, (2, 12))
  np.testing.assert_array_equal(logits_of(reloaded.to(reference.dtype), tokens), logits_of(reference, tokens))


def test_bfloat16_checkpoint_loads_as_bfloat16_and_can_be_cast(untied_bf16_dir):
  src, _ = untied_bf16_dir
  config, model = load_hf(src)
  assert (config.dtype, config.param_dtype, model.lm_head[...].dtype) == ("bfloat16", "bfloat16", np.dtype("bfloat16"))
  config32, model32 = load_hf(src, dtype="float32")
  assert config32.param_dtype == "float32" and model32.layers.q_proj[...].dtype == np.float32
  np.testing.assert_array_equal(np.asarray(model32.layers.q_proj[...]),
                                np.asarray(model.layers.q_proj[...]).astype(np.float32))


def test_sharded_checkpoint_loads_onto_a_mesh(hf_dir, tmp_path, mesh):
  src, reference = hf_dir
  reference.save_pretrained(str(tmp_path), max_shard_size="100KB")
  assert (tmp_path / "model.safetensors.index.json").is_file()
  assert len(list(tmp_path.glob("model-*.safetensors"))) > 2
  _, single = load_hf(src)
  config, sharded = load_hf(tmp_path, mesh=mesh)
  assert sharded.embed[...].sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  assert sharded.layers.o_proj[...].sharding.spec == jax.sharding.PartitionSpec(None, "tensor", None, "fsdp")
  assert sharded.layers.k_proj[...].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  expected = flat_params(single)
  got = flat_params(sharded)
  assert sorted(expected) == sorted(got)
  for name in expected:
    np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_sharded_export_from_a_mesh_reloads(hf_dir, tmp_path, mesh):
  from transformers import Qwen3ForCausalLM
  src, reference = hf_dir
  config, sharded = load_hf(src, mesh=mesh)
  export_hf(sharded, config, tmp_path, max_shard_bytes=100_000)
  index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
  assert len(set(index["weight_map"].values())) > 2
  original = load_file(src / "model.safetensors")
  assert sorted(index["weight_map"]) == sorted(original)
  assert index["metadata"]["total_size"] == sum(t.nbytes for t in original.values())
  for name, file in index["weight_map"].items():
    assert load_file(tmp_path / file)[name].tobytes() == original[name].tobytes(), name
  reloaded = Qwen3ForCausalLM.from_pretrained(str(tmp_path)).eval()
  tokens = np.random.default_rng(1).integers(0, config.vocab_size, (2, 8))
  np.testing.assert_array_equal(logits_of(reloaded, tokens), logits_of(reference, tokens))


def test_orbax_restore_gives_equal_arrays_with_requested_shardings(hf_dir, tmp_path, mesh):
  src, _ = hf_dir
  config, model = load_hf(src)
  save_params(tmp_path / "ckpt", model, config, tokenizer_src=src)
  assert (tmp_path / "ckpt" / "chat_template.jinja").is_file()
  restored_config, restored = restore_params(tmp_path / "ckpt", mesh=mesh)
  assert restored_config == config
  assert restored.layers.gate_proj[...].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  expected, got = flat_params(model), flat_params(restored)
  for name in expected:
    np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
  with pytest.raises(configlib.ConfigError, match="intermediate_size"):
    restore_params(tmp_path / "ckpt", config=config.replace(intermediate_size=256))
  with pytest.raises(FileExistsError):
    save_params(tmp_path / "ckpt", model, config)


def test_tokenizer_files_travel_hf_to_orbax_to_hf(hf_dir, tmp_path):
  src, _ = hf_dir
  config, model = load_hf(src)
  save_params(tmp_path / "orbax", model, config, tokenizer_src=src)
  _, restored = restore_params(tmp_path / "orbax")
  export_hf(restored, config, tmp_path / "hf", tokenizer_src=tmp_path / "orbax")
  text = "memory entries are updated"
  expected = Tokenizer.from_file(str(src / "tokenizer.json")).encode(text).ids
  assert Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json")).encode(text).ids == expected
  assert (tmp_path / "hf" / "chat_template.jinja").read_text() == (src / "chat_template.jinja").read_text()


def edit_tensors(src, dst, edit):
  shutil.copytree(src, dst)
  tensors = load_file(dst / "model.safetensors")
  edit(tensors)
  save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
  return dst


def test_missing_unknown_and_misshapen_tensors_are_named(hf_dir, tmp_path):
  src, _ = hf_dir
  missing = edit_tensors(src, tmp_path / "missing", lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
  with pytest.raises(CheckpointError, match=r"missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight'"):
    load_hf(missing)
  unknown = edit_tensors(src, tmp_path / "unknown",
                         lambda t: t.update({"model.layers.0.self_attn.q_proj.bias": np.zeros(64, np.float32)}))
  with pytest.raises(CheckpointError, match=r"unknown tensor 'model\.layers\.0\.self_attn\.q_proj\.bias'"):
    load_hf(unknown)
  tied_head = edit_tensors(src, tmp_path / "tied_head",
                           lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"].copy()}))
  with pytest.raises(CheckpointError, match="lm_head.weight.*ties"):
    load_hf(tied_head)
  extra_layer = edit_tensors(src, tmp_path / "extra_layer", lambda t: t.update(
      {"model.layers.2.input_layernorm.weight": np.ones(64, np.float32)}))
  with pytest.raises(CheckpointError, match=r"model\.layers\.2\.input_layernorm"):
    load_hf(extra_layer)
  misshapen = tmp_path / "misshapen"
  shutil.copytree(src, misshapen)
  hf_config = json.loads((misshapen / "config.json").read_text())
  (misshapen / "config.json").write_text(json.dumps({**hf_config, "intermediate_size": 96}))
  with pytest.raises(CheckpointError, match=r"'model\.layers\.0\.mlp\.\w+_proj\.weight'.*shape \((128, 64|64, 128)\)"):
    load_hf(misshapen)


def test_missing_paths_and_shards_are_clear_errors(hf_dir, tmp_path):
  src, reference = hf_dir
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_hf(tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="neither model.safetensors nor"):
    load_hf(tmp_path / "empty")
  reference.save_pretrained(str(tmp_path / "sharded"), max_shard_size="100KB")
  shard = sorted((tmp_path / "sharded").glob("model-*.safetensors"))[0]
  shard.unlink()
  with pytest.raises(FileNotFoundError, match=shard.name):
    load_hf(tmp_path / "sharded")
  with pytest.raises(FileNotFoundError, match="qwen3_config.json"):
    restore_params(src)
