"""The one loader: HF, Orbax and trainer dirs give the same model and tokenizer; the Qwen3 embedder it builds is
transformers' last-token pooling over the retrieval instruction; bad directories are one clear error."""
import json
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx

from atommem_jax import configlib
from atommem_jax.checkpoint import CheckpointError, copy_tokenizer_files, load_hf, loader, save_params
from atommem_jax.data.tokenizer import load_tiny_tokenizer, tiny_tokenizer_dir
from atommem_jax.memory import embedders
from atommem_jax.train import params_io
from atommem_jax.train.config import ModelInitConfig
from hf_fixtures import make_tiny_hf_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  """One tiny random Qwen3 (transformers) as an HF dir, an Orbax parameter dir and a trainer workdir."""
  from atommem_jax.train.checkpointing import RunCheckpoints
  from atommem_jax.train.config import TrainConfig

  root = tmp_path_factory.mktemp("loader")
  hf_dir, orbax_dir, run_dir = root / "hf", root / "orbax", root / "run"
  torch_model = make_tiny_hf_checkpoint(hf_dir, vocab_size=2048, seed=2)
  copy_tokenizer_files(tiny_tokenizer_dir(), hf_dir)
  # Qwen3's own generation_config lists both of its end tokens; the tiny tokenizer's pad id stands in for one.
  (hf_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
  model_config, model = load_hf(hf_dir)
  save_params(orbax_dir, model, model_config, tokenizer_src=hf_dir)
  train = configlib.load_config_file(ROOT / "experiments" / "train_base.py").tiny()
  train.model.checkpoint = str(orbax_dir)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  run = RunCheckpoints(run_dir, configlib.from_dict(TrainConfig, train))
  run.save(3, {"params": params, "opt_state": jax.tree.map(jax.numpy.zeros_like, params),
               "step": jax.numpy.int32(3)}, {"position": 0}, jax.random.key(0))
  run.close()
  return torch_model, hf_dir, orbax_dir, run_dir


def test_hf_orbax_and_trainer_dirs_load_the_same_model_tokenizer_and_stop_ids(dirs):
  _, hf_dir, orbax_dir, run_dir = dirs
  found = {path: loader.resolve(path) for path in (hf_dir, orbax_dir, run_dir)}
  assert [c.kind for c in found.values()] == ["hf", "orbax_params", "train_step"]
  assert found[run_dir].path == run_dir / "checkpoints" / "3"
  assert len({c.model_config for c in found.values()}) == 1
  assert found[run_dir].tokenizer_dir == orbax_dir  # the run started from the Orbax dir: its tokenizer
  want = nnx.to_pure_dict(nnx.state(loader.load_model(found[hf_dir]), nnx.Param))
  for checkpoint in (found[orbax_dir], found[run_dir]):
    got = nnx.to_pure_dict(nnx.state(loader.load_model(checkpoint), nnx.Param))
    jax.tree.map(np.testing.assert_array_equal, got, want)
  for checkpoint in found.values():
    tokenizer = loader.load_tokenizer("", checkpoint)
    assert tokenizer.get_vocab() == load_tiny_tokenizer().get_vocab()
    # EOS first, then the other end token generation_config.json lists (copied with the tokenizer files).
    assert loader.stop_ids(tokenizer, checkpoint.tokenizer_dir) == (tokenizer.eos_token_id, 0)
  assert loader.stop_ids(load_tiny_tokenizer(), tiny_tokenizer_dir()) == (load_tiny_tokenizer().eos_token_id,)
  loader.check_architecture(found[hf_dir], "")
  with pytest.raises(CheckpointError, match=r"different architecture than expected_model='tiny_default'"):
    loader.check_architecture(found[hf_dir], "tiny_default")


def test_missing_or_empty_directories_are_one_clear_error_naming_the_key(tmp_path):
  missing = tmp_path / "no_such_run" / "params_sft"
  with pytest.raises(FileNotFoundError, match=r"model\.checkpoint .*no_such_run/params_sft does not exist"):
    params_io.start_checkpoint(ModelInitConfig(checkpoint=str(missing)))
  with pytest.raises(FileNotFoundError, match=r"model\.tokenizer .*no_such_run/params_sft is not a directory"):
    loader.load_tokenizer(str(missing), None, field="model.tokenizer")
  (tmp_path / "empty").mkdir()
  with pytest.raises(CheckpointError, match=r"holds no model parameters: it is neither an HF Qwen3 directory"):
    loader.resolve(tmp_path / "empty")
  make_tiny_hf_checkpoint(tmp_path / "bare")  # weights, no tokenizer files
  with pytest.raises(CheckpointError, match=r"the tokenizer dir of checkpoint .*bare.* holds no tokenizer files"):
    loader.load_tokenizer("", loader.resolve(tmp_path / "bare"))
  assert loader.tokenizer_dir("tiny", loader.resolve(tmp_path / "bare")) == loader.tokenizer_dir("", None)


def test_qwen3_embedder_is_transformers_last_token_pooling_over_the_retrieval_instruction(dirs):
  import torch

  torch_model, hf_dir, _, _ = dirs
  tokenizer = load_tiny_tokenizer()
  assert isinstance(loader.load_embedder("hashing", embed_dim=48, tokenizer=tokenizer), embedders.HashingEmbedder)
  embed_fn = loader.load_embedder(str(hf_dir), embed_dim=64, tokenizer=tokenizer)
  texts = ["Kalomi was born in Tesuna.", "Where was Kalomi born?"]
  ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
  tokens = np.zeros((2, 12), np.int32)
  for row, row_ids in enumerate(ids):
    tokens[row, :len(row_ids)] = row_ids
  lengths = np.array([len(i) for i in ids])
  instruction = tokenizer.encode(embedders.RETRIEVAL_INSTRUCTION, add_special_tokens=False)
  end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
  for is_query, prefix in ((False, []), (True, instruction)):
    got = np.asarray(embed_fn(tokens, lengths, is_query))
    for row, row_ids in enumerate(ids):
      with torch.no_grad():
        hidden = torch_model.model(input_ids=torch.tensor([prefix + row_ids + [end]])).last_hidden_state[0, -1]
      want = hidden.double().numpy()
      np.testing.assert_allclose(got[row], want / np.linalg.norm(want), atol=1e-4)


def test_an_embedder_of_another_width_or_a_smaller_vocabulary_is_refused(dirs, tmp_path):
  _, hf_dir, _, _ = dirs
  tokenizer = load_tiny_tokenizer()
  with pytest.raises(configlib.ConfigError, match=r"embedder .*hf has width 64, but memory.embed_dim is 32"):
    loader.load_embedder(str(hf_dir), embed_dim=32, tokenizer=tokenizer)
  make_tiny_hf_checkpoint(tmp_path / "small_vocab")  # 512 ids: the tiny tokenizer writes 2048
  with pytest.raises(CheckpointError, match=r"2048 tokens but embedder .*small_vocab has a vocabulary of 512"):
    loader.load_embedder(str(tmp_path / "small_vocab"), embed_dim=64, tokenizer=tokenizer)
  with pytest.raises(configlib.ConfigError, match=r"embedder is empty"):
    loader.load_embedder("", embed_dim=64, tokenizer=tokenizer)


def test_a_trainer_step_is_read_as_its_run_executed_the_model(tmp_path):
  # What a run records (its `model` config) decides the dtypes, attention and remat its parameters are restored in.
  step_dir = tmp_path / "run" / "checkpoints" / "7"
  (step_dir / "state").mkdir(parents=True)
  (step_dir / "meta").mkdir()
  model = dict(preset="tiny_default", checkpoint="", tokenizer="", attention="dense", remat="full", logits_chunk=64,
               dtype="bfloat16", param_dtype="float32")
  (step_dir / "meta" / "metadata").write_text(json.dumps({"config": {"model": model}}))
  config = loader.resolve(tmp_path / "run").model_config
  assert (config.attention, config.remat, config.logits_chunk, config.dtype, config.param_dtype) == (
      "dense", "full", 64, "bfloat16", "float32")
  loader.check_architecture(loader.resolve(step_dir), "tiny_default")  # runtime fields are not the architecture
  (step_dir / "meta" / "metadata").write_text(json.dumps({"config": {"model": dict(model, remat="sometimes")}}))
  with pytest.raises(CheckpointError, match=r"trainer checkpoint .*/7: the run's model config in .*metadata: .*remat"):
    loader.resolve(step_dir)
